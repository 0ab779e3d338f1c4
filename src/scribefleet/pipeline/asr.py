"""Speech recognition of one long recording, window by window, resumable.

The audio is cut into windows of about `window_s` seconds at silences between
speech ranges, so no word straddles two windows. Each finished window is
appended to a `WindowLog`; after a crash only the windows not in the log run
again. Windows are independent (no text is carried across), so a resumed run
gives the same transcript as an uninterrupted one.

Two decoding modes, chosen by `options.batch_size`:

* batched (> 1, with VAD): faster-whisper's BatchedInferencePipeline, fed the
  way its own VAD path feeds it (speech packed into clips of up to 30 s, text
  decoded without timestamp tokens), then cut into cues at word timestamps.
  Measured on real read speech this matches the library's accuracy, where
  decoding clips in timestamp mode dropped whole lines.
* sequential (1, or VAD off): WhisperModel.transcribe on the window's speech
  (VAD on) or audio (VAD off), timestamps mapped back to the recording.

Every window's segments then pass the guards of guards.py: words without
speech evidence are dropped and a stretch whose text loops is decoded again,
sequentially with the fallbacks; the transcript counts what each guard did
under "guards" (docs/transcripts.md).

The language is `options.language`, or detected from samples across the whole
recording before the first window and then fixed, or with `auto-per-window`
detected for each window of ~20 s (pipeline/language.py). Every segment carries
the language it was decoded in.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from scribefleet.errors import TranscriptionFailed
from scribefleet.options import TranscribeOptions
from scribefleet.pipeline import cobatch
from scribefleet.pipeline.checkpoint import WindowLog
from scribefleet.pipeline.guards import (
    FALLBACK_TEMPERATURES,
    add_counts,
    collapse_repeats,
    drop_non_speech,
    keep_first_decoding,
    loop_spans,
    merge,
    zero_counts,
)
from scribefleet.pipeline.language import PER_WINDOW_S, WindowLanguages, is_multilingual
from scribefleet.pipeline.media import SAMPLE_RATE
from scribefleet.pipeline.models import device_error
from scribefleet.pipeline.segments import split_by_words, tidy
from scribefleet.pipeline.vad import CLIP_MAX_S

log = logging.getLogger("scribefleet.asr")

Ranges = list[tuple[float, float]]
Progress = Callable[[float, dict[str, Any]], None]

_FRAMES_PER_S = 100  # whisper's mel frames per second: the unit of a segment's "seek"
_SNAP_S = 1.0  # a loop's re-decoding starts and ends at the edge of the speech range this near


@dataclass(frozen=True)
class Window:
    """One independently transcribed stretch of the audio."""

    index: int
    start_s: float
    end_s: float


def plan_windows(duration_s: float, ranges: Ranges, window_s: float, batch: int = 0) -> list[Window]:
    """Cut [0, duration_s] into windows of about window_s, at silences where there is one.

    With `batch` (batched decoding on a GPU), a window ends where a whole number of
    batches of clips does, when such a point lies near enough: a GPU decodes a batch
    of 2 clips in the time of 8, so a window that ended on a partial batch would waste
    most of one batch per window (about a sixth of a 2-hour recording's decoding,
    against the library's one partial batch per file). The clips are those the
    batched decoding packs (`clip_edges`), so each window packs the clips a single
    pass over the whole recording would.
    """
    edges = clip_edges(ranges)[batch::batch] if batch > 1 else []
    cuts = [0.0]
    while duration_s - cuts[-1] > window_s:
        cuts.append(_batch_cut(cuts[-1], edges, window_s) or _cut_point(cuts[-1], duration_s, ranges, window_s))
    cuts.append(math.floor(duration_s * 1000) / 1000)  # rounding up would reach past the last sample
    return [Window(i, round(float(a), 3), round(float(b), 3)) for i, (a, b) in enumerate(zip(cuts, cuts[1:]))]


def _cut_point(start_s: float, duration_s: float, ranges: Ranges, window_s: float) -> float:
    """The silent point nearest start + window_s, between half and one and a half windows on."""
    target = start_s + window_s
    low, high = start_s + window_s / 2, min(start_s + window_s * 1.5, duration_s - 1.0)
    edges = [0.0] + [x for r in ranges for x in r] + [duration_s]
    best: float | None = None
    for gap_start, gap_end in zip(edges[0::2], edges[1::2]):
        if gap_end <= gap_start:
            continue
        # inside the gap: cut at the target; otherwise at the gap's middle, farthest from speech
        point = target if gap_start <= target <= gap_end else (gap_start + gap_end) / 2
        if low <= point <= high and (best is None or abs(point - target) < abs(best - target)):
            best = point
    # no silence near enough (one long stretch of speech): a hard cut is the only way to bound the window
    return round(best if best is not None else target, 3)


def clip_edges(ranges: Ranges) -> list[float]:
    """Where batched decoding's clips begin: 0 for the first, then the middle of the silence before each.

    The clips are packed exactly as faster-whisper's `collect_chunks` packs them (speech ranges in samples,
    a new clip when the next range would pass CLIP_MAX_S); `_transcribe_batched` packs each window's ranges so.
    """
    edges: list[float] = []
    packed, limit, previous_end = 0, round(CLIP_MAX_S * SAMPLE_RATE), 0.0
    for start_s, end_s in ranges:
        n = round(end_s * SAMPLE_RATE) - round(start_s * SAMPLE_RATE)
        if not edges or packed + n > limit:
            edges.append(round((previous_end + start_s) / 2, 3) if edges else 0.0)
            packed = 0
        packed += n
        previous_end = end_s
    return edges


def _batch_cut(start_s: float, edges: list[float], window_s: float) -> float | None:
    """The batch edge nearest start + window_s, between half and one and a half windows on; None if there is none."""
    low, high, target = start_s + window_s / 2, start_s + window_s * 1.5, start_s + window_s
    near = [edge for edge in edges if low <= edge <= high]
    return min(near, key=lambda edge: abs(edge - target)) if near else None


def _segment_dict(seg: Any, offset_s: float, words: bool) -> dict[str, Any]:
    out = {
        "id": 0,  # numbered over the whole transcript at the end
        "seek": int(seg.seek) + round(offset_s * _FRAMES_PER_S),
        "start": round(float(seg.start) + offset_s, 3),
        "end": round(float(seg.end) + offset_s, 3),
        "text": seg.text,
        "tokens": [int(t) for t in seg.tokens],
        "temperature": float(seg.temperature) if seg.temperature is not None else 0.0,
        "avg_logprob": float(seg.avg_logprob),
        "compression_ratio": float(seg.compression_ratio),
        "no_speech_prob": float(seg.no_speech_prob),
    }
    if words:
        out["words"] = [
            {
                "word": w.word,
                "start": round(float(w.start) + offset_s, 3),
                "end": round(float(w.end) + offset_s, 3),
                "probability": float(w.probability),
            }
            for w in (seg.words or [])
        ]
    return out


def _model_call(fn: Callable[[], Any]) -> Any:
    """Run a faster-whisper call with CTranslate2's errors translated."""
    try:
        return fn()
    except (RuntimeError, ValueError, MemoryError) as exc:
        raise device_error(exc, fallback=TranscriptionFailed, context="transcription failed") from exc


def _drain(segments: Iterable[Any], on_segment: Callable[[Any], None]) -> None:
    """Pull every segment (decoding happens lazily here); the callback runs outside the error translation."""
    iterator = iter(segments)
    while True:
        seg = _model_call(lambda: next(iterator, None))
        if seg is None:
            return
        on_segment(seg)


class WindowedTranscriber:
    """Transcribes one recording's windows with one loaded model, logging each finished window."""

    def __init__(self, model: Any, audio: np.ndarray, ranges: Ranges, options: TranscribeOptions) -> None:
        self.model = model
        self.audio = audio
        self.ranges = ranges
        self.options = options
        self.duration_s = audio.shape[0] / SAMPLE_RATE

    def _decode_kwargs(self, language: str | None) -> dict[str, Any]:
        opts = self.options
        kwargs: dict[str, Any] = {
            "language": language,
            "task": opts.task,
            "beam_size": opts.beam_size,
            "word_timestamps": opts.word_timestamps,
            "initial_prompt": opts.initial_prompt,
        }
        if opts.temperature is not None:
            kwargs["temperature"] = opts.temperature  # otherwise faster-whisper's fallback ladder
        return kwargs

    def transcribe_window(
        self, window: Window, language: str | None, on_segment: Callable[[dict[str, Any]], None]
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Segments of one window (absolute timestamps) and the language they were decoded in."""
        if self.batched:
            return self._transcribe_batched(window, language, on_segment)
        return self._transcribe_sequential(window, language, on_segment)

    @property
    def batched(self) -> bool:
        """Batched decoding packs VAD speech into clips (`TranscribeOptions.decodes_clips`)."""
        return self.options.decodes_clips

    def _speech_chunks(self, window: Window) -> list[dict[str, int]]:
        """The VAD speech inside the window, in samples."""
        lo, hi = round(window.start_s * SAMPLE_RATE), round(window.end_s * SAMPLE_RATE)
        chunks = [
            {"start": max(lo, round(s * SAMPLE_RATE)), "end": min(hi, round(e * SAMPLE_RATE))}
            for s, e in self.ranges
            if s < window.end_s and e > window.start_s
        ]
        return [c for c in chunks if c["end"] > c["start"]]

    def _transcribe_sequential(
        self,
        window: Window,
        language: str | None,
        on_segment: Callable[[dict[str, Any]], None],
        *,
        fallback: bool = False,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """WhisperModel.transcribe on the window: with VAD, on its speech only, as faster-whisper's
        vad_filter does, but from the VAD stage's ranges instead of running Silero a second time.
        `fallback`: a loop's second decoding (guards.py), with the temperature ladder and no previous text."""
        from faster_whisper.transcribe import restore_speech_timestamps
        from faster_whisper.vad import collect_chunks

        opts = self.options
        segments: list[dict[str, Any]] = []
        if opts.vad:
            chunks = self._speech_chunks(window)
            if not chunks:
                return segments, language
            piece = np.concatenate(collect_chunks(self.audio, chunks)[0])
        else:
            piece = self.audio[round(window.start_s * SAMPLE_RATE) : round(window.end_s * SAMPLE_RATE)]
        kwargs = self._decode_kwargs(language)
        if fallback:
            kwargs |= {"temperature": FALLBACK_TEMPERATURES, "condition_on_previous_text": False}
        result, info = _model_call(lambda: self.model.transcribe(piece, vad_filter=False, **kwargs))
        if opts.vad:  # times in the concatenated speech -> times in the recording
            result = restore_speech_timestamps(result, chunks, SAMPLE_RATE)
        offset_s = 0.0 if opts.vad else window.start_s

        def keep(seg: Any) -> None:
            segments.append(_segment_dict(seg, offset_s, opts.word_timestamps))
            on_segment(segments[-1])

        _drain(result, keep)
        return segments, language or info.language

    def _transcribe_batched(
        self, window: Window, language: str | None, on_segment: Callable[[dict[str, Any]], None]
    ) -> tuple[list[dict[str, Any]], str | None]:
        """faster-whisper's BatchedInferencePipeline on the window's speech, packed as the library packs it.

        The library's own VAD path (`vad_filter=True`) concatenates the speech chunks (silences
        removed) into clips of up to 30 s, decodes each clip's text without timestamp tokens, and
        maps times back to the recording. The same is done here from the VAD stage's ranges (no
        second Silero pass), one window at a time so each window is checkpointed. Segments are
        then cut into cues at their word timestamps (`segments.split_by_words`).
        """
        from faster_whisper import BatchedInferencePipeline
        from faster_whisper.transcribe import restore_speech_timestamps
        from faster_whisper.vad import collect_chunks

        opts = self.options
        segments: list[dict[str, Any]] = []
        chunks = self._speech_chunks(window)
        if not chunks:
            return segments, language
        pieces, _ = collect_chunks(self.audio, chunks, max_duration=CLIP_MAX_S)
        pieces = [p for p in pieces if p.shape[0]]  # a first chunk of over 30 s leaves an empty one before it
        clips, offset = [], 0
        for piece in pieces:  # each packed clip's place in the concatenated speech
            clips.append({"start": offset / SAMPLE_RATE, "end": (offset + piece.shape[0]) / SAMPLE_RATE})
            offset += piece.shape[0]
        speech = np.concatenate(pieces)
        kwargs = self._decode_kwargs(language) | {"word_timestamps": True}  # words place the cues
        seat = cobatch.current()  # a job of a group: its clips share batches with the other files' (cobatch.py)
        if seat is not None:
            result, info = _model_call(
                lambda: seat.transcribe(self.model, speech, clips, batch_size=opts.batch_size, **kwargs)
            )
        else:
            result, info = _model_call(
                lambda: BatchedInferencePipeline(self.model).transcribe(
                    speech, clip_timestamps=clips, batch_size=opts.batch_size, vad_filter=False, **kwargs
                )
            )
        result = restore_speech_timestamps(result, chunks, SAMPLE_RATE)
        encode = self._encode

        def keep(seg: Any) -> None:
            for cue in split_by_words(_segment_dict(seg, 0.0, words=True), encode):
                if not opts.word_timestamps:
                    del cue["words"]
                segments.append(cue)
                on_segment(cue)

        _drain(result, keep)
        return segments, language or info.language

    def guard(
        self, window: Window, segments: list[dict[str, Any]], language: str | None
    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """The window's segments through the guards (guards.py): words without speech dropped, each
        looping stretch decoded again with the fallbacks; and how often each guard fired."""
        segments, counts = drop_non_speech(segments, self.ranges)
        for start, end in loop_spans(segments):
            span = self._loop_window(window, start, end)
            within = [span.start_s <= (s["start"] + s["end"]) / 2 <= span.end_s for s in segments]
            inside = [s for s, w in zip(segments, within) if w]
            segments = [s for s, w in zip(segments, within) if not w]
            redone, _ = self._transcribe_sequential(span, language, lambda seg: None, fallback=True)
            redone, dropped = drop_non_speech(redone, self.ranges)
            counts["loops"] += 1
            keep_first = keep_first_decoding(inside, redone)
            log.info("window %d: text looped in %.1f-%.1f s; decoded again with fallbacks, kept the %s decoding",
                     window.index, span.start_s, span.end_s, "first" if keep_first else "second")
            if keep_first:
                segments.append({**merge(inside), "flags": ["loop_kept"]})
            else:
                counts.update(dropped)
                segments += [{**seg, "flags": ["redecoded"]} for seg in redone]
        segments.sort(key=lambda seg: (seg["start"], seg["end"]))
        return segments, add_counts(zero_counts(), counts)

    def _loop_window(self, window: Window, start_s: float, end_s: float) -> Window:
        """The stretch a loop's second decoding covers: the loop's segments, each edge moved out to the
        edge of the speech range it falls in when that is near (segment times are approximate)."""
        for a, b in self.ranges:
            if a <= start_s <= b and start_s - a <= _SNAP_S:
                start_s = a
            if a <= end_s <= b and b - end_s <= _SNAP_S:
                end_s = b
        return Window(window.index, max(window.start_s, start_s), min(window.end_s, end_s))

    def _encode(self, text: str) -> list[int]:
        """Token ids of a cue's text (a clip's tokens are split with its words)."""
        return list(self.model.hf_tokenizer.encode(text, add_special_tokens=False).ids)

    def window_record(
        self, window: Window, languages: WindowLanguages, on_segment: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """Decode one window in its language and through the guards: its WindowLog record."""
        guess = _model_call(lambda: languages.for_window(window.index, window.start_s, window.end_s))
        segments, language = self.transcribe_window(window, guess.language if guess else None, on_segment)
        segments, guards = self.guard(window, segments, language)
        for seg in segments:
            seg["language"] = language
        record = {"index": window.index, "start_s": window.start_s, "end_s": window.end_s}
        record |= WindowLanguages.record_fields(guess) | {"language": language, "segments": segments}
        record["guards"] = guards
        return record

    def run(self, log: WindowLog, windows: list[Window], on_progress: Progress | None = None) -> dict[str, Any]:
        """Transcribe the windows not yet in `log`; returns the whole transcript (whisper's shape)."""
        done = _finished_windows(log, windows)
        languages = WindowLanguages(self.model, self.audio, self.ranges, self.options)
        for index, record in done.items():
            languages.restore(index, record)
        for window in windows:
            if window.index in done:
                continue
            where = {"window": window.index, "windows": len(windows)}

            def report(seg: dict[str, Any], w: Window = window, extra: dict = where) -> None:
                if on_progress is not None:
                    on_progress(min(max(seg["end"], w.start_s), w.end_s) / max(self.duration_s, 1e-9), extra)

            record = self.window_record(window, languages, report)
            log.append(record)
            done[window.index] = record
            if on_progress is not None:
                on_progress(window.end_s / max(self.duration_s, 1e-9), where)
        return self._assemble(done, windows, languages.summary())

    def _assemble(self, done: dict[int, dict[str, Any]], windows: list[Window], language: dict[str, Any]) -> dict:
        # windows are in order and guard() sorts each, so a run of repeats is found across windows too
        segments, repeats = collapse_repeats([seg for w in windows for seg in done[w.index]["segments"]])
        segments = tidy(segments, self.duration_s)
        guards = zero_counts() | {"repeats": repeats}
        for w in windows:
            guards = add_counts(guards, done[w.index].get("guards", {}))
        for i, seg in enumerate(segments):
            seg["id"] = i
        if language["language"] is None:  # no speech to detect from: the language Whisper decoded in, if any
            language["language"] = next((done[w.index]["language"] for w in windows if done[w.index]["language"]), None)
        return {
            "text": "".join(seg["text"] for seg in segments).strip(),
            **language,
            "duration": round(self.duration_s, 3),
            "segments": segments,
            "guards": guards,
        }


def _finished_windows(log: WindowLog, windows: list[Window]) -> dict[int, dict[str, Any]]:
    """Records of the log that belong to this window plan; a log from another plan is discarded."""
    by_index = {w.index: w for w in windows}
    records = log.read()
    for record in records:
        w = by_index.get(record.get("index", -1))
        if w is None or (record.get("start_s"), record.get("end_s")) != (w.start_s, w.end_s):
            log.clear()  # other audio, window size or VAD: none of it can be trusted
            return {}
    return {r["index"]: r for r in records}


def transcribe_windows(
    model: Any,
    audio: np.ndarray,
    ranges: Ranges,
    options: TranscribeOptions,
    *,
    window_s: float,
    log: WindowLog,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Transcribe `audio` (float32, 16 kHz) in resumable windows; returns whisper's result shape."""
    if options.language_per_window and is_multilingual(model):
        window_s = min(window_s, PER_WINDOW_S)  # short enough to follow a change of language
    windows = plan_windows(audio.shape[0] / SAMPLE_RATE, ranges, window_s, window_batch(model, options))
    try:
        return WindowedTranscriber(model, audio, ranges, options).run(log, windows, on_progress)
    finally:
        cobatch.leave()  # in a group, the other files' batches need not wait for this one any more


def window_batch(model: Any, options: TranscribeOptions) -> int:
    """The batch size windows end on (`plan_windows`): batched decoding on a GPU, where a partial batch costs
    as much as a full one; 0 elsewhere (on a CPU a clip costs the same in any batch, see models.CpuClips)."""
    on_gpu = getattr(getattr(model, "model", None), "device", "cpu") == "cuda"
    return options.batch_size if on_gpu and options.decodes_clips else 0
