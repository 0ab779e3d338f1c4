"""Batches across files: several jobs of one slot decode their speech clips in shared batches.

A slot handed a group of transcribe tasks (same model and options, see
dispatch/groups.py) runs each job in its own thread, every job with its own
stages and checkpoints exactly as alone. Where a job would call faster-whisper's
BatchedInferencePipeline on one window's packed speech (asr.py), it hands the
call to `SharedBatches` through its `Seat` instead and waits. Once every seated
job is waiting (or has left: failed, finished, or never needed decoding), the
thread that `serve()`s (the slot's main thread, which loaded the model) makes
one pipeline call per (model, batch size, decoding options) for all of them:
their clips packed best-fit into shared Whisper inputs of up to 30 s (`_pack`),
so two short files share one encoder pass and one batch holds clips of as
many files as it needs. Each segment's words go back to the file whose clip
they lie in, with times in that file's own speech. Each job then goes on
alone (guards, its window log, render, publish).

Requests without a language (Whisper would detect one for the whole
concatenation) are decoded alone. The seat of the current thread is a context
variable (`seated`): asr.py asks `current()` and falls back to its own call
when there is none, so single jobs take exactly the path they took before.
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from scribefleet.pipeline.media import SAMPLE_RATE
from scribefleet.pipeline.vad import CLIP_MAX_S

log = logging.getLogger("scribefleet.cobatch")

_FRAMES_PER_S = 100  # whisper's mel frames per second: the unit of a segment's "seek"
GAP_S = 0.5  # silence between two files' clips sharing one Whisper input
_seat: contextvars.ContextVar[Seat | None] = contextvars.ContextVar("scribefleet_cobatch_seat", default=None)


def current() -> Seat | None:
    """The seat of the job this thread runs, when it runs in a group."""
    return _seat.get()


@contextlib.contextmanager
def seated(seat: Seat) -> Iterator[Seat]:
    """Run the body as the job of `seat`; it leaves the shared batches at the end, whatever happens."""
    token = _seat.set(seat)
    try:
        yield seat
    finally:
        _seat.reset(token)
        seat.leave()


def leave() -> None:
    """The current thread's job decodes no more (no effect outside a group)."""
    seat = current()
    if seat is not None:
        seat.leave()


@dataclasses.dataclass(frozen=True)
class Info:
    """What the jobs read of faster-whisper's TranscriptionInfo."""

    language: str | None


@dataclasses.dataclass
class _Request:
    seat: Seat
    model: Any
    speech: np.ndarray
    clips: list[dict[str, float]]
    batch_size: int
    kwargs: dict[str, Any]
    done: bool = False
    segments: list[Any] = dataclasses.field(default_factory=list)
    info: Info | None = None
    error: BaseException | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """Requests with equal keys share pipeline calls; a request without a language gets its own."""
        alone = id(self) if self.kwargs.get("language") is None else None
        return id(self.model), self.batch_size, repr(sorted(self.kwargs.items())), alone


class Seat:
    """One job's place in a group's shared batches."""

    def __init__(self, shared: SharedBatches, order: int) -> None:
        self.shared, self.order = shared, order

    def transcribe(
        self, model: Any, speech: np.ndarray, clips: list[dict[str, float]], *, batch_size: int, **kwargs: Any
    ) -> tuple[list[Any], Info]:
        """BatchedInferencePipeline(model).transcribe(speech, clip_timestamps=clips, ...) in shared batches.

        Returns the segments (times in `speech`, as the pipeline's own) and the language decoded in.
        """
        return self.shared.transcribe(_Request(self, model, speech, clips, batch_size, kwargs))

    def leave(self) -> None:
        self.shared.leave(self)


class SharedBatches:
    """The pipeline calls of one group of jobs, made together when every job waits for one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._seats: set[Seat] = set()
        self._pending: list[_Request] = []
        self.calls = 0  # pipeline calls made, for logs and tests
        self.requests = 0

    def seat(self) -> Seat:
        with self._cond:
            seat = Seat(self, len(self._seats))
            self._seats.add(seat)
            return seat

    def leave(self, seat: Seat) -> None:
        with self._cond:
            self._seats.discard(seat)
            self._cond.notify_all()

    def transcribe(self, request: _Request) -> tuple[list[Any], Info]:
        with self._cond:
            self._seats.add(request.seat)  # a job that left comes back (a retry with a smaller batch)
            self._pending.append(request)
            self._cond.notify_all()
            self._cond.wait_for(lambda: request.done)
        if request.error is not None:
            raise request.error
        assert request.info is not None
        return request.segments, request.info

    def serve(self) -> None:
        """Make the pipeline calls of the seated jobs, each once every one of them waits; return when all left.

        Measured: a CTranslate2 model called from a thread other than the one that loaded it, once that thread
        is gone, ran several times slower with the CPU spinning; so one long-lived thread loads and serves.
        """
        while True:
            with self._cond:
                self._cond.wait_for(lambda: not self._seats or self._ready)
                if not self._ready:
                    return
                round_, self._pending = self._pending, []
            self._run(round_)

    @property
    def _ready(self) -> bool:
        """Whether each seated job waits for a pipeline call (call under the lock)."""
        return bool(self._pending) and {r.seat for r in self._pending} == self._seats

    def _run(self, round_: list[_Request]) -> None:
        groups: dict[tuple[Any, ...], list[_Request]] = {}
        for request in sorted(round_, key=lambda r: r.seat.order):
            groups.setdefault(request.key, []).append(request)
        for requests in groups.values():
            started = time.monotonic()
            try:
                inputs = _decode_together(requests)
                log.info("decoded %d clips of %d files as %d Whisper inputs in %.2f s",
                         sum(len(r.clips) for r in requests), len(requests), inputs, time.monotonic() - started)
            except BaseException as exc:  # noqa: BLE001 - each waiting job raises it as its own
                for request in requests:
                    request.error = exc
            with self._cond:
                self.calls += 1
                self.requests += len(requests)
                for request in requests:
                    request.done = True
                self._cond.notify_all()


@dataclasses.dataclass(frozen=True)
class _Piece:
    """One request's clip placed in the concatenation: where it lies there, and where in its own speech."""

    request: int
    at_s: float  # start in the concatenation
    own_s: float  # start in the request's speech
    length_s: float


def _pack(requests: list[_Request]) -> tuple[np.ndarray, list[dict[str, float]], list[_Piece]]:
    """The requests' clips packed into shared clips of up to CLIP_MAX_S: the audio, the shared clips, the pieces.

    A short file's speech fills a fraction of Whisper's 30 s input, and the encoder costs the same for the
    rest; so clips of several files share one input, `GAP_S` of silence between two, where alone each
    would take its own. Best fit, longest clips first (a long file's clips of nearly 30 s stay alone);
    the shared clips then follow the order of their first piece, and pieces within one the order of files.
    """
    gap_n, max_n = round(GAP_S * SAMPLE_RATE), round(CLIP_MAX_S * SAMPLE_RATE)
    cuts = []  # (request, clip index, samples)
    for i, request in enumerate(requests):
        for k, clip in enumerate(request.clips):
            piece = request.speech[round(clip["start"] * SAMPLE_RATE) : round(clip["end"] * SAMPLE_RATE)]
            if piece.shape[0]:
                cuts.append((i, k, piece))
    bins: list[list[tuple[int, int, np.ndarray]]] = []
    sizes: list[int] = []
    for cut in sorted(cuts, key=lambda c: -c[2].shape[0]):
        room = [b for b in range(len(bins)) if sizes[b] + gap_n + cut[2].shape[0] <= max_n]
        if room:
            best = max(room, key=lambda b: sizes[b])
            bins[best].append(cut)
            sizes[best] += gap_n + cut[2].shape[0]
        else:
            bins.append([cut])
            sizes.append(cut[2].shape[0])
    parts: list[np.ndarray] = []
    shared: list[dict[str, float]] = []
    pieces: list[_Piece] = []
    gap = np.zeros(gap_n, dtype=requests[0].speech.dtype)
    at = 0
    for members in sorted((sorted(b, key=lambda c: c[:2]) for b in bins), key=lambda b: b[0][:2]):
        start = at
        for n, (i, k, piece) in enumerate(members):
            if n:
                parts.append(gap)
                at += gap_n
            pieces.append(_Piece(i, at / SAMPLE_RATE, float(requests[i].clips[k]["start"]), piece.shape[0] / SAMPLE_RATE))
            parts.append(piece)
            at += piece.shape[0]
        shared.append({"start": start / SAMPLE_RATE, "end": at / SAMPLE_RATE})
    return np.concatenate(parts), shared, pieces


def _decode_together(requests: list[_Request]) -> int:
    """One pipeline call on the requests' clips, packed together; each request gets its own segments back.

    Whisper sometimes stops before the end of a shared input (seen: the second file's last 4.7 s of speech
    left out after the first's last sentence). A piece whose first or last `MISSED_S` of speech (pieces are
    speech only) got no word is decoded again on its own, as it would have been alone.
    Returns how many Whisper inputs it took.
    """
    first = requests[0]
    if not any(r.clips for r in requests):
        for request in requests:
            request.info = Info(first.kwargs.get("language"))
        return 0
    speech, clips, pieces = _pack(requests)
    found, language = _decode_pieces(first, speech, clips, pieces)
    missed = [i for i, p in enumerate(pieces) if _skipped(found[i], p) and not _alone(p, clips)]
    inputs = len(clips)
    if missed:
        parts, again, at = [], [], 0.0
        for i in missed:
            p = pieces[i]
            lo = round(p.at_s * SAMPLE_RATE)
            parts.append(speech[lo : lo + round(p.length_s * SAMPLE_RATE)])
            again.append(_Piece(p.request, at, p.own_s, p.length_s))
            at += parts[-1].shape[0] / SAMPLE_RATE
        redo, _ = _decode_pieces(first, np.concatenate(parts), [{"start": q.at_s, "end": q.at_s + q.length_s} for q in again], again)
        for j, i in enumerate(missed):
            found[i] = redo[j]
        inputs += len(missed)
        log.info("%d of %d clips decoded again alone: words missing at their start or end", len(missed), len(pieces))
    for i in sorted(range(len(pieces)), key=lambda i: (pieces[i].request, pieces[i].own_s)):
        requests[pieces[i].request].segments.extend(found[i])
    for request in requests:
        request.info = Info(language)
    return inputs


MISSED_S = 2.0


def _alone(piece: _Piece, clips: list[dict[str, float]]) -> bool:
    """Whether the piece had a Whisper input to itself (nothing to gain by decoding it again)."""
    return any(abs(c["start"] - piece.at_s) < 1e-6 and abs(c["end"] - piece.at_s - piece.length_s) < 1e-3 for c in clips)


def _skipped(segments: list[Any], piece: _Piece) -> bool:
    """Whether the decoder left out speech at the start or the end of a piece (times in the request's speech)."""
    words = [w for seg in segments for w in (seg.words or [])]
    if not words:
        return True
    return words[0].start - piece.own_s > MISSED_S or piece.own_s + piece.length_s - words[-1].end > MISSED_S


def _decode_pieces(first: _Request, speech: np.ndarray, clips: list[dict[str, float]],
                   pieces: list[_Piece]) -> tuple[dict[int, list[Any]], str | None]:
    """One pipeline call; the segments of each piece (by index), in its request's time, and the language."""
    from faster_whisper import BatchedInferencePipeline

    segments, info = BatchedInferencePipeline(first.model).transcribe(
        speech, clip_timestamps=clips, batch_size=first.batch_size, vad_filter=False, **first.kwargs
    )
    starts = [p.at_s for p in pieces]
    index = {id(p): i for i, p in enumerate(pieces)}
    found: dict[int, list[Any]] = {i: [] for i in range(len(pieces))}

    def piece_at(t: float) -> _Piece:
        """The piece a time of the concatenation belongs to (in a gap: the nearer one)."""
        i = max(0, bisect.bisect_right(starts, t) - 1)
        here = pieces[i]
        if t > here.at_s + here.length_s and i + 1 < len(pieces) and pieces[i + 1].at_s - t < t - (here.at_s + here.length_s):
            return pieces[i + 1]
        return here

    encode = first.model.hf_tokenizer.encode
    for seg in segments:
        if not seg.words:
            piece = piece_at((seg.start + seg.end) / 2)
            found[index[id(piece)]].append(_moved(seg, piece, None, None))
            continue
        runs: list[tuple[_Piece, list[Any]]] = []
        for word in seg.words:
            piece = piece_at((word.start + word.end) / 2)
            if runs and runs[-1][0] is piece:
                runs[-1][1].append(word)
            else:
                runs.append((piece, [word]))
        for piece, words in runs:
            text = "".join(w.word for w in words) if len(runs) > 1 else None
            tokens = list(encode(text, add_special_tokens=False).ids) if text is not None else None
            found[index[id(piece)]].append(_moved(seg, piece, words, text, tokens))
    return found, info.language


def _moved(seg: Any, piece: _Piece, words: list[Any] | None, text: str | None, tokens: list[int] | None = None) -> Any:
    """A segment (or the words of it in one piece) with its times in its own request's speech."""

    def own(t: float) -> float:
        return round(min(max(piece.own_s + t - piece.at_s, piece.own_s), piece.own_s + piece.length_s), 3)

    moved = [dataclasses.replace(w, start=own(w.start), end=own(w.end)) for w in words] if words else None
    return dataclasses.replace(
        seg,
        start=moved[0].start if moved else own(seg.start),
        end=moved[-1].end if moved else own(seg.end),
        seek=round(piece.own_s * _FRAMES_PER_S),
        words=moved if moved is not None else seg.words,
        text=text if text is not None else seg.text,
        tokens=tokens if tokens is not None else seg.tokens,
    )
