"""Who speaks when: speaker turns for a whole file, from a pluggable backend chosen by a setting.

`diarize()` takes the decoded audio (16 kHz float32) and the VAD speech ranges
and returns the turns [(start_s, end_s, speaker)] of the whole file, with the
speakers clustered globally (a voice keeps its label from the first minute to
the last). The speaker count is given (`speakers`), bounded
(`min_speakers`/`max_speakers`) or estimated. Labels are SPEAKER_00,
SPEAKER_01, ... in order of first appearance, or a known person's name when
an enrollment folder (`speaker_names`, pipeline.speakers) matches the voice.

Backends (`SCRIBEFLEET_DIARIZATION_BACKEND`):

* `resemblyzer` (default, offline, CPU): the voice encoder whose weights the
  PyPI package `resemblyzer` ships embeds 1.6 s windows every 0.2 s over the
  stretches of sound in the speech ranges; the embeddings of the whole file
  are clustered (average-linkage agglomerative on cosine distance, the tree
  cut until the wanted count of clusters hold enough windows to be voices
  rather than outliers; unless given, the count is the fewest whose
  silhouette is about as good as the best, with clusters of under 10 % of the
  windows, or 30 s of speech, dissolved, and no two centroids as alike as the
  halves of one voice; refined by nearest-centroid passes).
  Each 50 ms of sound takes the speaker its covering windows are closest to;
  then, with two speakers or more, again with 0.6 s windows every 0.1 s
  against each speaker's centroid of those windows (a 1.6 s window blurs a
  change, so a short turn with no pause took its neighbour's label). A pause
  of under 1 s between two turns of one speaker is part of the turn.
* `pyannote`: pyannote.audio's pipeline, when the user provides it: a local
  pipeline folder (`SCRIBEFLEET_DIARIZATION_MODEL`) or a Hugging Face token
  (`SCRIBEFLEET_HF_TOKEN`) for the gated hub model. Voices are named with the
  resemblyzer encoder over each speaker's turns.

A missing package, folder or token is DIARIZATION_MODEL_MISSING naming what to
provide; anything else the backend raises, or running past the stage's own
limit (`SCRIBEFLEET_DIARIZE_TIMEOUT_S`), is DIARIZATION_FAILED.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, SecretStr

from scribefleet.config import Settings
from scribefleet.errors import DiarizationFailed, DiarizationModelMissing, ScribefleetError
from scribefleet.options import TranscribeOptions
from scribefleet.pipeline.media import SAMPLE_RATE
from scribefleet.pipeline.pyannote_backend import pyannote_turns
from scribefleet.pipeline.speakers import enrolled_names, enrollment_fingerprint, first_appearance_labels

log = logging.getLogger("scribefleet.pipeline")

Turn = tuple[float, float, str]
OnProgress = Callable[[float], None]

_WINDOW_S = 1.6  # the voice encoder's window (resemblyzer's partials_n_frames)
_STEP_S = 0.2  # windows overlap by 1.4 s
_GRID_S = 0.05
_MIN_TURN_S = 0.4  # a shorter run of one speaker inside a speech range joins its neighbour
_MIN_EMBED_S = 0.5  # a shorter stretch of sound is not embedded; it takes the nearest window's speaker
#: the second pass's windows (see `_sharpen`): short enough to place a turn change within a word or two
_SHORT_WINDOW_S = 0.6
_SHORT_STEP_S = 0.1
_MEL_HOP = 160  # samples per frame of the encoder's mel spectrogram (10 ms)
#: an estimated speaker holds at least this share of the windows, or _MIN_CLUSTER_S of speech in a long file
_MIN_CLUSTER_FRAC = 0.1
_MIN_CLUSTER_S = 30.0
#: stretches of sound this close are embedded as one (a pause too short to split a stretch, or only the
#: border of two VAD ranges, between them), so the windows of a turn are not cut short
_JOIN_S = 0.25
_BRIDGE_S = 1.0  # a pause shorter than this between two turns of one speaker is inside one turn
_FRAME_S = 0.03
#: a frame this far (dB) below the range's loud frames, or below the floor, is a pause
_QUIET_DB = 35.0
_FLOOR_DB = -60.0
_GAP_FRAMES = 8  # pauses up to 0.24 s (a comma) do not split a stretch of sound
#: an estimated count is at most this; a split whose silhouette stays under _MIN_SILHOUETTE is one voice
_MAX_ESTIMATE = 10
_MIN_SILHOUETTE = 0.1
_SILHOUETTE_SLACK = 0.05  # a count whose silhouette is this close to the best one's is as good
#: an estimated split with two centroids this similar (cosine) is one voice cut in two: the windows of one
#: speaker drift with what is said, so a monologue splits with a good silhouette. Measured on the 2-splits of
#: 21 one-voice and 24 two-voice recordings and cuts of real speech (docs/speakers.md): one voice of 20 s or
#: more 0.87-0.91, 10 s of a reading 0.85-0.87; two people 0.48-0.83 (whole recordings), 0.64-0.87 (10-20 s
#: cuts). 0.84-0.85 gets the most right (17-18 of 21, 17 of 24); lower, the meeting excerpts (0.826, 0.819)
#: become one voice
_SAME_VOICE = 0.85
_MAX_LINKAGE = 2000  # more windows than this: cluster a sample, then assign all to its centroids


class DiarizerConfig(BaseModel, extra="forbid", frozen=True):
    """The process-wide diarization settings a job carries to its slot."""

    backend: Literal["resemblyzer", "pyannote"] = "resemblyzer"
    model: str | None = None  # pyannote: a local pipeline folder or a hub id
    hf_token: SecretStr | None = None
    timeout_s: float = Field(default=1800.0, gt=0)
    #: cosine similarity a voice needs to an enrollment clip to take its name
    match_threshold: float = Field(default=0.75, ge=-1.0, le=1.0)

    @classmethod
    def from_settings(cls, settings: Settings) -> DiarizerConfig:
        return cls(
            backend=settings.diarization_backend,
            model=settings.diarization_model,
            hf_token=settings.hf_token,
            timeout_s=settings.diarize_timeout_s,
            match_threshold=settings.speaker_match_threshold,
        )

    @property
    def identity(self) -> dict[str, Any]:
        """What makes two diarizations comparable (a checkpoint of another backend is redone)."""
        return {"backend": self.backend, "model": self.model if self.backend == "pyannote" else None}


def checkpoint_identity(config: DiarizerConfig, options: TranscribeOptions) -> dict[str, Any]:
    """What a diarize.json must match to be reused: the backend, and the speaker options it was asked for.

    The speaker options are not in the transcript's options key (a file transcribed without `diarize`
    is only diarized when asked later), so a checkpoint made for other counts or names, or other clips in the
    names folder, is made again.
    """
    names = str(options.speaker_names) if options.speaker_names is not None else None
    asked: list[Any] = [options.speakers, options.min_speakers, options.max_speakers, names,
                        config.match_threshold if names else None]  # fmt: skip
    if names:  # the clips themselves: one added to a person (or replaced, removed) names the voices again
        asked.append(enrollment_fingerprint(Path(names)))
    return {**config.identity, "asked": asked}


class _Deadline:
    """The stage's own time limit, checked between steps of the backend."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.ends = time.monotonic() + timeout_s

    def check(self) -> None:
        if time.monotonic() > self.ends:
            raise DiarizationFailed(
                f"diarization ran past its limit of {self.timeout_s:g} s - raise SCRIBEFLEET_DIARIZE_TIMEOUT_S",
                timeout_s=self.timeout_s,
            )


def speaker_bounds(options: TranscribeOptions) -> tuple[int, int] | None:
    """(least, most) speakers the options allow; None when the count is to be estimated freely."""
    if options.speakers is not None:
        return options.speakers, options.speakers
    if options.min_speakers is None and options.max_speakers is None:
        return None
    return options.min_speakers or 1, options.max_speakers or 64


def diarize(
    audio: np.ndarray,
    ranges: list[tuple[float, float]],
    options: TranscribeOptions,
    config: DiarizerConfig,
    *,
    device: str = "cpu",
    threads: int = 0,
    on_progress: OnProgress | None = None,
) -> dict[str, Any]:
    """The diarize.json checkpoint: {"turns": [[start, end, speaker]], "speakers", "names", **checkpoint_identity}."""

    deadline = _Deadline(config.timeout_s)
    progress = on_progress or (lambda fraction: None)
    bounds = speaker_bounds(options)
    try:
        if config.backend == "pyannote":
            turns = pyannote_turns(audio, config, bounds, device, deadline.check, progress)
            centroids = None
        else:
            turns, centroids = _resemblyzer_turns(audio, ranges, bounds, device, threads, deadline, progress)
        turns, centroids = first_appearance_labels(turns, centroids)
        names: dict[str, str] = {}
        if options.speaker_names is not None and turns:
            names = enrolled_names(
                audio, turns, centroids, Path(options.speaker_names), config.match_threshold,
                encoder=voice_encoder(device, threads), embed_windows=embed_windows,
            )
            turns = [(s, e, names.get(spk, spk)) for s, e, spk in turns]
    except ScribefleetError:
        raise
    except Exception as exc:  # the backend's own failure: name it, keep the stage's code
        raise DiarizationFailed(f"diarization failed: {type(exc).__name__}: {exc}", backend=config.backend) from exc
    speakers = list(dict.fromkeys(spk for _, _, spk in turns))
    return {
        "turns": [[round(s, 3), round(e, 3), spk] for s, e, spk in turns],
        "speakers": speakers,
        "names": names,
        **checkpoint_identity(config, options),
    }


# -- the offline backend ------------------------------------------------------------------------------------------


@functools.cache
def voice_encoder(device: str = "cpu", threads: int = 0) -> Any:
    """resemblyzer's VoiceEncoder with the weights its package ships (loaded once per process and device)."""
    try:
        with warnings.catch_warnings():  # webrtcvad imports pkg_resources, which warns
            warnings.simplefilter("ignore")
            import torch
            from resemblyzer import VoiceEncoder
    except ImportError as exc:
        raise DiarizationModelMissing(
            f"the offline diarization backend needs resemblyzer and torch ({exc.name} is missing) - "
            "pip install 'scribefleet[diarization]', or choose SCRIBEFLEET_DIARIZATION_BACKEND=pyannote",
            setting="SCRIBEFLEET_DIARIZATION_BACKEND",
            missing=exc.name,
        ) from exc
    if threads:  # the slot's share of the CPU (more threads than cores is far slower than fewer)
        torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():
        device = "cpu"  # a CPU build of torch on a GPU slot: the encoder is small enough for the CPU
    return VoiceEncoder(device, verbose=False)


def embed_windows(encoder: Any, audio: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """L2-normed embeddings of 1.6 s windows every 0.4 s over `audio`, and each window's (start, end) sample."""
    from resemblyzer.audio import normalize_volume

    wav = normalize_volume(audio.astype(np.float32), -30, increase_only=True)
    _, partials, slices = encoder.embed_utterance(wav, return_partials=True, rate=1 / _STEP_S, min_coverage=0.5)
    spans = [(s.start, min(s.stop, wav.shape[0])) for s in slices]
    return np.asarray(partials, dtype=np.float32), spans


def embed_short_windows(encoder: Any, audio: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """L2-normed embeddings of 0.6 s windows every 0.1 s over `audio`, and each window's (start, end) sample.

    The encoder's LSTM reads fewer frames than the 1.6 s it was trained on: each window is a noisier voice print,
    but it tells when a voice changes to within 0.1 s (two real far-field voices: 99 % and 100 % of 0.6 s windows
    of one speaker nearer that speaker's centroid than the other's).
    """
    import torch
    from resemblyzer.audio import normalize_volume, wav_to_mel_spectrogram

    wav = normalize_volume(audio.astype(np.float32), -30, increase_only=True)
    mel = wav_to_mel_spectrogram(wav)
    frames, step = round(_SHORT_WINDOW_S * SAMPLE_RATE / _MEL_HOP), round(_SHORT_STEP_S * SAMPLE_RATE / _MEL_HOP)
    starts = list(range(0, max(1, mel.shape[0] - frames + 1), step))
    vectors: list[np.ndarray] = []
    with torch.no_grad():
        for at in range(0, len(starts), 256):  # bounded batches: a long stretch of sound has thousands
            batch = np.stack([mel[i : i + frames] for i in starts[at : at + 256]])
            vectors.append(encoder(torch.from_numpy(batch).to(encoder.device)).cpu().numpy())
    spans = [(i * _MEL_HOP, min((i + frames) * _MEL_HOP, wav.shape[0])) for i in starts]
    return np.concatenate(vectors).astype(np.float32), spans


def _resemblyzer_turns(
    audio: np.ndarray,
    ranges: list[tuple[float, float]],
    bounds: tuple[int, int] | None,
    device: str,
    threads: int,
    deadline: _Deadline,
    progress: OnProgress,
) -> tuple[list[Turn], dict[str, np.ndarray]]:
    encoder = voice_encoder(device, threads)
    spans = [span for start, end in ranges for span in voiced_spans(audio, start, end)]
    regions = _joined(spans, _JOIN_S)
    embeddings: list[np.ndarray] = []
    windows: list[tuple[float, float]] = []  # (start_s, end_s) of each embedding
    total_s = sum(e - s for s, e in regions) or 1.0
    done_s = 0.0
    for start, end in regions:
        done_s += end - start
        if end - start < _MIN_EMBED_S:
            continue  # too short to tell a voice by: it takes the speaker of the nearest windows
        vectors, bounds_in = embed_windows(encoder, audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)])
        embeddings.append(vectors)
        windows += [(start + a / SAMPLE_RATE, start + b / SAMPLE_RATE) for a, b in bounds_in]
        progress(0.6 * done_s / total_s)
        deadline.check()
    if not windows:
        return [], {}
    vectors = np.concatenate(embeddings)
    _, centroids = cluster(vectors, bounds)
    turns = _bridge(_label_grid(spans, windows, vectors @ centroids.T))
    if centroids.shape[0] > 1:
        turns = _sharpen(encoder, audio, regions, spans, turns, deadline, lambda f: progress(0.6 + 0.39 * f))
    progress(1.0)
    return turns, {f"S{k}": centroids[k] for k in range(centroids.shape[0])}


def _sharpen(
    encoder: Any,
    audio: np.ndarray,
    regions: list[tuple[float, float]],
    spans: list[tuple[float, float]],
    turns: list[Turn],
    deadline: _Deadline,
    progress: OnProgress,
) -> list[Turn]:
    """The turns labelled again with short windows (`embed_short_windows`), against each speaker's centroid of
    the short windows wholly inside its first-pass turns.

    A 1.6 s window blurs a turn change over its length, so a short turn with no pause before or after it
    ("I will.", 0.58 s) took its neighbour's label. Measured (bench/bench_diarize.py, count given): the espeak
    dialogue 3.3 % -> 0.5 % DER, the real meeting excerpts 25.4 % -> 19.2 % and 30.4 % -> 23.2 %.
    """
    vectors: list[np.ndarray] = []
    windows: list[tuple[float, float]] = []
    total_s = sum(e - s for s, e in regions) or 1.0
    done_s = 0.0
    for start, end in regions:
        done_s += end - start
        if end - start < _SHORT_WINDOW_S:
            continue
        found, bounds_in = embed_short_windows(encoder, audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)])
        vectors.append(found)
        windows += [(start + a / SAMPLE_RATE, start + b / SAMPLE_RATE) for a, b in bounds_in]
        progress(done_s / total_s)
        deadline.check()
    if not windows:
        return turns
    short = np.concatenate(vectors)
    inside = _turn_of(windows, turns)
    speakers = sorted({int(spk[1:]) for _, _, spk in turns})
    if len(speakers) < 2 or any(not np.any(inside == k) for k in speakers):
        return turns  # a speaker with no short window inside its turns: the first pass stands
    centroids = _normed(np.stack([short[inside == k].mean(axis=0) for k in speakers]))
    relabelled = _bridge(_label_grid(spans, windows, short @ centroids.T))
    return [(s, e, f"S{speakers[int(spk[1:])]}") for s, e, spk in relabelled]  # columns S0, S1, ... back to speakers


def _turn_of(windows: list[tuple[float, float]], turns: list[Turn]) -> np.ndarray:
    """The cluster index (S<k>) of the turn holding each window wholly, or -1."""
    starts = np.array([t[0] for t in turns])
    ends = np.array([t[1] for t in turns])
    index = np.full(len(windows), -1)
    for i, (start, end) in enumerate(windows):
        at = int(np.searchsorted(starts, start + 1e-3, side="right")) - 1
        if at >= 0 and end - 1e-3 <= ends[at]:
            index[i] = int(turns[at][2][1:])
    return index


def voiced_spans(audio: np.ndarray, start: float, end: float) -> list[tuple[float, float]]:
    """The stretches of a speech range that carry sound, split at its pauses (VAD ranges can hold several turns)."""
    lo, hi = int(start * SAMPLE_RATE), int(end * SAMPLE_RATE)
    frame = int(_FRAME_S * SAMPLE_RATE)
    n = (hi - lo) // frame
    if n < 2:
        return [(start, end)] if end > start else []
    frames = audio[lo : lo + n * frame].reshape(n, frame).astype(np.float64)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = level > max(np.percentile(level, 95) - _QUIET_DB, _FLOOR_DB)
    spans: list[tuple[float, float]] = []
    i = 0
    while i < n:
        if not loud[i]:
            i += 1
            continue
        j = i
        while j < n and (loud[j] or (j + _GAP_FRAMES < n and loud[j : j + _GAP_FRAMES + 1].any())):
            j += 1
        spans.append((round(start + i * _FRAME_S, 3), round(min(end, start + j * _FRAME_S), 3)))
        i = j
    return spans


def _normed(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=-1, keepdims=True), 1e-9)


def cluster(vectors: np.ndarray, bounds: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Global clustering of unit vectors: (label per vector, unit centroid per cluster).

    A given count cuts the average-linkage tree into that many voices (past outliers). Otherwise every count the bounds
    allow (up to _MAX_ESTIMATE) is tried and the fewest clusters that are about as well separated as the best
    (silhouette on cosine distance, within _SILHOUETTE_SLACK) win; one speaker when no split separates the
    voices well enough, or (when one is allowed) when every split leaves two centroids as alike as one voice's
    (_SAME_VOICE). A cut skips past outliers (see `_cut`).
    """
    from scipy.cluster.hierarchy import linkage

    n = vectors.shape[0]
    least, most = bounds or (1, 64)
    if n < 3 or most == 1:
        return np.zeros(n, dtype=int), _normed(vectors.mean(axis=0, keepdims=True))
    sample = vectors
    if n > _MAX_LINKAGE:  # linkage is quadratic in memory: cluster an even sample, assign the rest
        sample = vectors[np.linspace(0, n - 1, _MAX_LINKAGE).astype(int)]
    tree = linkage(sample.astype(np.float64), method="average", metric="cosine")
    least_windows = _least_windows(n) * sample.shape[0] / n  # in the sample
    if least == most:
        return _refine(vectors, sample, _cut(tree, least, least_windows), least, drop_small=False)
    distances = np.clip(1.0 - sample @ sample.T, 0.0, 2.0)
    tried: list[tuple[float, np.ndarray, np.ndarray]] = []
    for k in range(max(2, least), min(most, _MAX_ESTIMATE, sample.shape[0] - 1) + 1):
        labels, centroids = _refine(vectors, sample, _cut(tree, k, least_windows), least, drop_small=True)
        if centroids.shape[0] < max(2, least) or (least == 1 and _closest_pair(centroids) > _SAME_VOICE):
            continue
        score = _silhouette(distances, np.argmax(sample @ centroids.T, axis=1))
        log.debug("diarize: %d clusters (%d kept), silhouette %.3f", k, centroids.shape[0], score)
        tried.append((score, labels, centroids))
    if not tried or (least == 1 and max(t[0] for t in tried) < _MIN_SILHOUETTE):
        return np.zeros(n, dtype=int), _normed(vectors.mean(axis=0, keepdims=True))
    # the fewest speakers whose split is about as good as the best one (more clusters always fit a little better)
    top = max(t[0] for t in tried)
    _, labels, centroids = min((t for t in tried if t[0] >= top - _SILHOUETTE_SLACK), key=lambda t: t[2].shape[0])
    return labels, centroids


def _closest_pair(centroids: np.ndarray) -> float:
    """The highest cosine similarity between two of the unit centroids."""
    similarity = centroids @ centroids.T
    np.fill_diagonal(similarity, -1.0)
    return float(similarity.max())


def _cut(tree: np.ndarray, count: int, least_windows: float) -> np.ndarray:
    """The tree's clusters (1, 2, ...), cut deeper until `count` of them hold `least_windows` (voices rather
    than outliers: a cough, a blur at a change); the windows of the others are 0, left to the nearest."""
    from scipy.cluster.hierarchy import fcluster

    for m in range(count, min(tree.shape[0] + 1, 10 * count) + 1):
        groups = fcluster(tree, t=m, criterion="maxclust")
        sizes = np.bincount(groups)
        large = [g for g in np.unique(groups) if sizes[g] >= max(2.0, least_windows)]
        if len(large) >= count:
            return np.where(np.isin(groups, large), groups, 0)
    return fcluster(tree, t=count, criterion="maxclust")


def _refine(
    vectors: np.ndarray, sample: np.ndarray, groups: np.ndarray, least: int, *, drop_small: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-centroid passes from the tree's clusters (windows put on the wrong branch move over);
    with `drop_small`, a cluster of under 10 % of the windows (or of 30 s of speech, in a long file: a blur at
    a change, a cough, one voice heard from two distances) is dissolved into its nearest."""
    n = vectors.shape[0]
    centroids = _normed(np.stack([sample[groups == g].mean(axis=0) for g in np.unique(groups) if g > 0]))
    for _ in range(3):
        labels = np.argmax(vectors @ centroids.T, axis=1)
        keep = [k for k in range(centroids.shape[0]) if np.any(labels == k)]
        if drop_small:
            keep = [k for k in keep if np.sum(labels == k) >= _least_windows(n)] or keep[:1]
        centroids = centroids[keep if len(keep) >= least else range(centroids.shape[0])]
        labels = np.argmax(vectors @ centroids.T, axis=1)
        centroids = _normed(np.stack([vectors[labels == k].mean(axis=0) for k in range(centroids.shape[0])]))
    return np.argmax(vectors @ centroids.T, axis=1), centroids


def _least_windows(n: int) -> float:
    """How many of `n` windows a cluster needs to be a voice rather than an outlier."""
    return max(2.0, min(_MIN_CLUSTER_FRAC * n, _MIN_CLUSTER_S / _STEP_S))


def _silhouette(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette: how much nearer each window is to its own cluster than to the next one (-1..1)."""
    clusters = np.unique(labels)
    if clusters.size < 2:
        return -1.0
    mean_to = np.stack([distances[:, labels == c].mean(axis=1) for c in clusters], axis=1)
    own = np.searchsorted(clusters, labels)
    sizes = np.array([np.sum(labels == c) for c in clusters])
    # a window's distance to its own cluster leaves itself out
    a = mean_to[np.arange(labels.size), own] * sizes[own] / np.maximum(sizes[own] - 1, 1)
    mean_to[np.arange(labels.size), own] = np.inf
    b = mean_to.min(axis=1)
    return float(np.mean((b - a) / np.maximum(np.maximum(a, b), 1e-9)))


def _label_grid(
    speech: list[tuple[float, float]], windows: list[tuple[float, float]], scores: np.ndarray
) -> list[Turn]:
    """Turns: each 50 ms of speech takes the cluster its covering windows score highest (the nearest window
    where none covers it: a pause inside a turn, a sound too short to embed)."""
    starts = np.array([w[0] for w in windows])
    ends = np.array([w[1] for w in windows])
    centers = (starts + ends) / 2
    turns: list[Turn] = []
    for start, end in speech:
        near = np.flatnonzero((starts < end + _WINDOW_S) & (ends > start - _WINDOW_S))
        if near.size == 0:
            near = np.array([int(np.argmin(np.abs(centers - (start + end) / 2)))])
        grid = np.arange(start, end, _GRID_S) + _GRID_S / 2
        if grid.size == 0:
            continue
        covering = (starts[near][None, :] <= grid[:, None]) & (grid[:, None] < ends[near][None, :])
        nearest = np.argmin(np.abs(grid[:, None] - centers[near][None, :]), axis=1)
        covering[np.arange(grid.size), nearest] = True  # every point has at least one window
        points = np.argmax(covering.astype(np.float32) @ scores[near], axis=1)
        turns += [(s, e, f"S{k}") for s, e, k in _absorb_short(_runs(points, start, end))]
    return sorted(turns)


def _joined(ranges: list[tuple[float, float]], gap_s: float) -> list[tuple[float, float]]:
    """Ranges with pauses of at most `gap_s` between them joined into one."""
    joined: list[tuple[float, float]] = []
    for start, end in sorted(ranges):
        if joined and start - joined[-1][1] <= gap_s:
            joined[-1] = (joined[-1][0], max(joined[-1][1], end))
        else:
            joined.append((start, end))
    return joined


def _bridge(turns: list[Turn]) -> list[Turn]:
    """Turns of one speaker with a pause of under _BRIDGE_S between them are one turn (a pause inside a turn)."""
    bridged: list[Turn] = []
    for turn in sorted(turns):
        if bridged and bridged[-1][2] == turn[2] and turn[0] - bridged[-1][1] < _BRIDGE_S:
            bridged[-1] = (bridged[-1][0], max(bridged[-1][1], turn[1]), turn[2])
        else:
            bridged.append(turn)
    return bridged


def _runs(points: np.ndarray, start: float, end: float) -> list[tuple[float, float, int]]:
    runs: list[tuple[float, float, int]] = []
    for i, k in enumerate(points.tolist()):
        t0 = start + i * _GRID_S
        if runs and runs[-1][2] == k:
            runs[-1] = (runs[-1][0], min(end, t0 + _GRID_S), k)
        else:
            runs.append((t0, min(end, t0 + _GRID_S), k))
    return runs


def _absorb_short(runs: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """A run shorter than _MIN_TURN_S between others is a blur at a speaker change: it joins the longer side."""
    while len(runs) > 1:
        short = min(range(len(runs)), key=lambda i: runs[i][1] - runs[i][0])
        if runs[short][1] - runs[short][0] >= _MIN_TURN_S:
            break
        before = runs[short - 1] if short > 0 else None
        after = runs[short + 1] if short + 1 < len(runs) else None
        into = before if after is None or (before is not None and before[1] - before[0] >= after[1] - after[0]) else after
        merged = (min(into[0], runs[short][0]), max(into[1], runs[short][1]), into[2])
        runs = [r for r in runs if r is not into and r is not runs[short]]
        runs = sorted([*runs, merged])
        joined: list[tuple[float, float, int]] = []
        for run in runs:  # neighbours of one speaker become one run
            if joined and joined[-1][2] == run[2]:
                joined[-1] = (joined[-1][0], run[1], run[2])
            else:
                joined.append(run)
        runs = joined
    return runs
