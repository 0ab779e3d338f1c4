"""Batches across files: several jobs of one slot decode their speech clips in shared batches.

A slot handed a group of transcribe tasks (same model and options, see
dispatch/groups.py) runs each job in its own thread, every job with its own
stages and checkpoints exactly as alone. Where a job would call faster-whisper's
BatchedInferencePipeline on one window's packed speech (asr.py), it hands the
call to `SharedBatches` through its `Seat` instead and waits. Once every seated
job is waiting (or has left: failed, finished, or never needed decoding), the
thread that `serve()`s (the slot's main thread, which loaded the model) makes
one pipeline call per (model, batch size, decoding options) on the requests'
speech concatenated in seat order, with each request's clips moved to their place in the concatenation, so one batch holds
clips of as many files as it needs. The segments come back in the same order;
each goes to the request whose speech it lies in, with its times moved back.
Each job then goes on alone (guards, its window log, render, publish).

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

log = logging.getLogger("scribefleet.cobatch")

_FRAMES_PER_S = 100  # whisper's mel frames per second: the unit of a segment's "seek"
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
                _decode_together(requests)
                log.info("decoded %d clips of %d files together in %.2f s",
                         sum(len(r.clips) for r in requests), len(requests), time.monotonic() - started)
            except BaseException as exc:  # noqa: BLE001 - each waiting job raises it as its own
                for request in requests:
                    request.error = exc
            with self._cond:
                self.calls += 1
                self.requests += len(requests)
                for request in requests:
                    request.done = True
                self._cond.notify_all()


def _decode_together(requests: list[_Request]) -> None:
    """One pipeline call on the requests' speech, end to end; each request gets its own segments back."""
    from faster_whisper import BatchedInferencePipeline

    first = requests[0]
    starts_s, clips, offset = [], [], 0
    for request in requests:
        offset_s = offset / SAMPLE_RATE
        starts_s.append(offset_s)
        clips += [{"start": c["start"] + offset_s, "end": c["end"] + offset_s} for c in request.clips]
        offset += request.speech.shape[0]
    speech = np.concatenate([r.speech for r in requests]) if len(requests) > 1 else first.speech
    segments, info = BatchedInferencePipeline(first.model).transcribe(
        speech, clip_timestamps=clips, batch_size=first.batch_size, vad_filter=False, **first.kwargs
    )
    for seg in segments:
        i = max(0, bisect.bisect_right(starts_s, (seg.start + seg.end) / 2) - 1)
        requests[i].segments.append(_shifted(seg, starts_s[i]))
    for request in requests:
        request.info = Info(info.language)


def _shifted(seg: Any, offset_s: float) -> Any:
    """A segment of the concatenation, with its times in its own request's speech."""
    if offset_s == 0.0:
        return seg
    words = None
    if seg.words is not None:
        words = [dataclasses.replace(w, start=round(w.start - offset_s, 3), end=round(w.end - offset_s, 3)) for w in seg.words]
    return dataclasses.replace(
        seg,
        start=round(seg.start - offset_s, 3),
        end=round(seg.end - offset_s, 3),
        seek=max(0, int(seg.seek) - round(offset_s * _FRAMES_PER_S)),
        words=words,
    )
