"""Voice activity detection: where in the audio someone speaks (Silero VAD, bundled with faster-whisper).

The speech ranges serve two purposes: long files are cut into windows at
silences between them (so no word is split across windows), and in batched
mode they are the clips Whisper decodes. The VAD settings follow the decoding
mode faster-whisper itself would use, so scribefleet's batched/sequential
transcripts match what BatchedInferencePipeline / WhisperModel give:

* batched: short ranges (<= 30 s, split at silences of 160 ms), one per clip;
* sequential: faster-whisper's default VadOptions (ranges merge across pauses
  shorter than 2 s).

Several cores, one answer. Silero is a recurrent network run one 32 ms frame
after another (faster-whisper's SileroVADModel: 512 samples plus the last 64
of the frame before as context, LSTM state carried from frame to frame), on
one thread: about 1.3 s per 11 minutes of audio, 14 s for two hours, before
anything can be decoded. Here the speech probabilities are computed in pieces
of about `PIECE_S` (10 minutes), each on a thread of its own over one shared
onnxruntime session (`run` releases the GIL; `threads` of them, the job's
`vad_threads`). A piece does not take over the state of the piece before it:
it starts `WARMUP_S` (160 s) early from zero state and throws that warm-up's
probabilities away, by when the state has forgotten where it started (on real
and synthetic speech, noisy or not, the probabilities then differ from one
pass by 0.001 to 0.005; after 64 s still by up to 0.03, enough to move a range
edge by 0.14 s). The first piece needs no warm-up and is that much longer, so
every piece is the same work; a recording under 1.5 pieces and a warm-up
(17.7 minutes) is one piece. The layout depends on the length only, never on
the thread count, so a resumed job, a job given more threads, or another
machine finds the same ranges. The context samples are those of the whole
recording, built as the library builds them, so a recording of one piece gets
the library's probabilities bit for bit. Each piece after the first costs a
warm-up more: on one thread a 2-hour recording takes about a quarter longer
than the library's single pass, on 12 free cores (by that count; not
measured here) about a tenth of its time.

The probabilities then go through faster-whisper's own post-processing
(`get_speech_timestamps`: thresholds, padding, splitting long ranges), which
asks the module-level `get_vad_model()` for its model. Instead of replacing
that function in the library's module (every thread would see it), each call
runs a copy of `get_speech_timestamps` whose globals name that call's own model
(`_timestamps_with`): nothing shared is changed, so concurrent calls and other
users of faster-whisper's VAD are not affected. (A faster-whisper whose
get_speech_timestamps stops asking `get_vad_model()` would run its own single
pass, with a warning in the log.)

Memory. The library's pass holds, beside the recording, a zero-padded copy of
it (`np.pad`) and the model's input for 10000 frames at a time, whose working
set inside onnxruntime is about 180 MB: a two-hour recording's VAD peaked at
1.6 GB. Here the copy's `np.pad` only notes the padding (`Padded`: the
recording and its padded length; each block's input is built from the
recording, zeros past its end), and a session run takes `_BLOCK_FRAMES`
(1000) frames: about 33 MB, at the same speed, with the same probabilities
(the LSTM state goes from block to block; measured bit-identical for 500 to
10000 frames a run).
"""

from __future__ import annotations

import logging
import threading
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

from scribefleet.pipeline.media import SAMPLE_RATE, Samples
from scribefleet.pipeline.models import cpu_core_count

log = logging.getLogger("scribefleet.vad")

#: whisper decodes 30 s at a time; batched clips never exceed it
CLIP_MAX_S = 30.0
_BATCHED_MIN_SILENCE_MS = 160

#: Silero's frame and the context it sees of the frame before (faster-whisper's SileroVADModel)
FRAME_SAMPLES = 512
CONTEXT_SAMPLES = 64
#: frames per session run (the library's 10000 take about 180 MB inside onnxruntime; the probabilities are the same)
_BLOCK_FRAMES = 1000
#: the length of a piece whose probabilities one thread computes
PIECE_S = 600.0
#: how early before its piece a thread starts from zero state (these probabilities are discarded)
WARMUP_S = 160.0


def speech_ranges(audio: np.ndarray | Samples, *, batched: bool, threads: int = 1,
                  on_progress: Callable[[float], None] | None = None) -> list[tuple[float, float]]:
    """(start_s, end_s) of each stretch of speech in 16 kHz mono `audio` (floats, or `Samples`: read a block at a
    time, never copied whole), in order; the same for any `threads`.
    `on_progress(fraction)` as the probabilities are computed (from the threads of the pieces, one at a time)."""
    from faster_whisper.vad import VadOptions

    if audio.size == 0:
        return []
    if batched:
        options = VadOptions(max_speech_duration_s=CLIP_MAX_S, min_silence_duration_ms=_BATCHED_MIN_SILENCE_MS)
    else:
        options = VadOptions()
    model = PiecewiseSilero(threads=threads, on_progress=on_progress)
    stamps = _timestamps_with(model)(audio, options, sampling_rate=SAMPLE_RATE)
    return [(round(s["start"] / SAMPLE_RATE, 3), round(s["end"] / SAMPLE_RATE, 3)) for s in stamps]


def vad_threads(cpu_threads: int, slots: int = 1) -> int:
    """Threads for the VAD of a job on `slots` slots of `cpu_threads` each (0: every core), at most the cores
    this process may use."""
    cores = cpu_core_count()
    return max(1, min(cores, (cpu_threads or cores) * max(1, slots)))


class Padded(NamedTuple):
    """`audio` followed by zeros up to `length` samples: what get_speech_timestamps pads for its model, uncopied."""

    audio: np.ndarray | Samples
    length: int


class _PaddingLazily:
    """numpy as our copy of get_speech_timestamps sees it: zeros put at the end by `pad` make a Padded, no copy."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    @staticmethod
    def pad(array: Any, pad_width: Any, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs and isinstance(array, (np.ndarray, Samples)) and array.ndim == 1:
            before, after = pad_width
            if before == 0 and after >= 0:
                return Padded(array, array.shape[0] + int(after))
        return np.pad(array, pad_width, *args, **kwargs)


def _timestamps_with(model: Callable[[Any], np.ndarray]) -> Callable[..., list[dict[str, int]]]:
    """faster-whisper's get_speech_timestamps with `model` as what its `get_vad_model()` gives, and `np.pad` making
    a Padded (a copy of it: the library is untouched)."""
    from faster_whisper import vad

    original = vad.get_speech_timestamps
    if "get_vad_model" not in original.__code__.co_names:  # a faster-whisper that finds its model otherwise
        log.warning("faster_whisper.vad.get_speech_timestamps no longer asks get_vad_model() for its model: "
                    "the VAD runs on one thread (scribefleet.pipeline.vad needs updating)")  # fmt: skip
        return original
    scope = dict(original.__globals__, get_vad_model=lambda: model, np=_PaddingLazily())
    copy = types.FunctionType(original.__code__, scope, original.__name__, original.__defaults__, original.__closure__)
    copy.__kwdefaults__ = original.__kwdefaults__
    return copy


def piece_bounds(frames: int, piece_frames: int, warmup_frames: int) -> list[tuple[int, int]]:
    """[lo, hi) frames of each piece: about `piece_frames` each, the first `warmup_frames` longer than the
    others, which start that much early, so every piece is the same work (one piece under 1.5 pieces and
    a warm-up)."""
    rest = frames - warmup_frames
    count = max(1, (2 * rest + piece_frames) // (2 * piece_frames))  # rest / piece_frames, rounded
    if count == 1:
        return [(0, frames)]
    edges = [0, *(warmup_frames + rest * i // count for i in range(1, count)), frames]
    return list(zip(edges, edges[1:]))


class PiecewiseSilero:
    """Silero's speech probabilities, computed piecewise on `threads` threads: a stand-in for SileroVADModel."""

    def __init__(self, threads: int = 1, piece_s: float = PIECE_S, warmup_s: float = WARMUP_S,
                 on_progress: Callable[[float], None] | None = None) -> None:
        self.threads = max(1, threads)
        self.on_progress = on_progress
        self.piece_frames = max(1, round(piece_s * SAMPLE_RATE / FRAME_SAMPLES))
        self.warmup_frames = max(0, round(warmup_s * SAMPLE_RATE / FRAME_SAMPLES))

    def __call__(self, audio: np.ndarray | Padded) -> np.ndarray:
        """The probability of speech in each frame of `audio` (mono, whole frames of 512 samples once padded), as
        the library's."""
        from faster_whisper.vad import get_vad_model

        padded = audio if isinstance(audio, Padded) else Padded(audio, audio.shape[0])
        assert padded.audio.ndim == 1 and padded.length % FRAME_SAMPLES == 0, "whole frames of mono audio"
        assert padded.audio.shape[0] <= padded.length
        session = get_vad_model().session  # one per process; run() may be called from several threads at once
        pieces = piece_bounds(padded.length // FRAME_SAMPLES, self.piece_frames, self.warmup_frames)
        work, done, lock = sum(hi - max(0, lo - self.warmup_frames) for lo, hi in pieces), [0], threading.Lock()

        def ran(frames: int) -> None:  # the post-processing is left: 1.0 is the stage's end, not this
            with lock:
                done[0] += frames
                if self.on_progress is not None:
                    self.on_progress(0.99 * done[0] / work)

        def run(piece: tuple[int, int]) -> np.ndarray:
            return self._piece(session, padded, *piece, ran)

        if self.threads == 1 or len(pieces) == 1:
            return np.concatenate([run(piece) for piece in pieces])
        with ThreadPoolExecutor(min(self.threads, len(pieces)), thread_name_prefix="vad") as pool:
            return np.concatenate(list(pool.map(run, pieces)))

    def _piece(self, session: Any, padded: Padded, lo: int, hi: int, ran: Callable[[int], None]) -> np.ndarray:
        """Probabilities of frames [lo, hi): from zero state `warmup_frames` early, in blocks of `_BLOCK_FRAMES`."""
        start = max(0, lo - self.warmup_frames)
        h = np.zeros((1, 1, 128), dtype=np.float32)
        c = np.zeros((1, 1, 128), dtype=np.float32)
        outputs = []
        for block in range(start, hi, _BLOCK_FRAMES):
            rows = model_input(padded, block, min(hi, block + _BLOCK_FRAMES))
            output, h, c = session.run(None, {"input": rows, "h": h, "c": c})
            outputs.append(output)
            ran(rows.shape[0])
        return np.concatenate(outputs)[lo - start :]


def model_input(padded: Padded, lo: int, hi: int) -> np.ndarray:
    """Rows [lo, hi) of the matrix SileroVADModel feeds the session for the whole padded recording: each frame after
    the last 64 samples of the frame before (zeros before the first), the last frame's own last 64 samples zeroed
    (the library's context view writes through to its audio)."""
    rows = np.empty((hi - lo, CONTEXT_SAMPLES + FRAME_SAMPLES), dtype=np.float32)
    rows[:, CONTEXT_SAMPLES:] = _samples(padded.audio, lo * FRAME_SAMPLES, hi * FRAME_SAMPLES).reshape(hi - lo, -1)
    rows[1:, :CONTEXT_SAMPLES] = rows[:-1, -CONTEXT_SAMPLES:]
    rows[0, :CONTEXT_SAMPLES] = 0.0 if lo == 0 else _samples(padded.audio, lo * FRAME_SAMPLES - CONTEXT_SAMPLES,
                                                                    lo * FRAME_SAMPLES)  # fmt: skip
    if hi * FRAME_SAMPLES == padded.length:
        rows[-1, -CONTEXT_SAMPLES:] = 0.0
    return rows


def _samples(audio: np.ndarray, start: int, stop: int) -> np.ndarray:
    """audio[start:stop], zeros past its end."""
    part = audio[start:stop]
    if part.shape[0] == stop - start:
        return part
    return np.concatenate([part, np.zeros(stop - start - part.shape[0], dtype=np.float32)])
