"""One long recording decoded on several slots at once: a fixed window plan, claims by flock, one stitched transcript.

The task's own slot (the *owner*) decodes, finds the speech and detects the
language as for any job, then, when the dispatcher said other slots may help
(`spread_slots` > 1) and the recording is long enough, cuts it into windows of
about duration / (3 x slots) (at least `MIN_WINDOW_S`, at most the job's
`window_s`; the sizes: pipeline/spread_plan.py), writes that plan and announces
it (a progress message with a "spread" field: docs/architecture.md). Lent slots
(*helpers*, task kind "window") then take windows too. Files in the job's work dir:

    spread.json       the plan: windows and the language they are decoded in; written once, so a
                      resumed job keeps its windows and the ones already finished
    windows.jsonl     the usual WindowLog, one record per finished window, appended under
                      windows.lock by whoever decoded it (its "slot" field says who, "decode_s" how long)
    claims/<i>.lock   held (flock) while window i is decoded; a holder that dies lets go of it

Every participant takes the first window whose lock it gets without waiting
and that is not in the log yet. A helper decodes one window per run and
returns, so queued work gets the slot back at the next window; it returns
{"window": None} once no window is left to take. The owner keeps taking
windows, then waits for those held by others; a window whose holder died is
free again and the owner decodes it itself, so a helper's crash costs one
window, never the job. Once every window is in the log the owner stitches them
in order (WindowedTranscriber.run, which finds nothing left to decode) and goes
on alone: one global diarization, render, publish (helpers never do those).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from scribefleet.options import TranscribeOptions
from scribefleet.pipeline.asr import (
    Progress,
    Ranges,
    Window,
    WindowedTranscriber,
    _model_call,
    plan_windows,
    transcribe_windows,
    window_batch,
)
from scribefleet.pipeline.checkpoint import WindowLog, atomic_write_json, read_json
from scribefleet.pipeline.language import PER_WINDOW_S, LanguageGuess, WindowLanguages, is_multilingual
from scribefleet.pipeline.media import SAMPLE_RATE, pcm16_to_float
from scribefleet.pipeline.spread_plan import MIN_WINDOW_S, WINDOWS_PER_SLOT

log = logging.getLogger("scribefleet.spread")

#: how often the owner looks whether windows held by others are finished
WAIT_POLL_S = 1.0

Announce = Callable[[dict[str, Any]], None]


def spread_window_s(duration_s: float, slots: int, window_s: float) -> float:
    """The window length of a plan spread over `slots` slots."""
    return min(window_s, max(MIN_WINDOW_S, duration_s / (WINDOWS_PER_SLOT * slots)))


def spread_windows(duration_s: float, ranges: Ranges, slots: int, window_s: float, batch: int = 0) -> list[Window]:
    """The windows of a plan spread over `slots` slots: equal shares of the recording, cut at silences
    (with `batch`, on a GPU: after whole batches of clips where one is near, as `plan_windows` does)."""
    count = math.ceil(duration_s / spread_window_s(duration_s, slots, window_s))
    windows = plan_windows(duration_s, ranges, duration_s / max(1, count), batch)
    if len(windows) > 1 and windows[-1].end_s - windows[-1].start_s < MIN_WINDOW_S / 2:
        # cutting at silences can leave a sliver at the end: a slot's start would cost more than it
        last = windows.pop()
        windows[-1] = Window(windows[-1].index, windows[-1].start_s, last.end_s)
    return windows


class SpreadDir:
    """The spread files of one job's work dir (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.plan_path = root / "spread.json"
        self.claims = root / "claims"
        self.log = WindowLog(root / "windows.jsonl")
        self._log_lock = root / "windows.lock"

    def read_plan(self) -> tuple[list[Window], LanguageGuess | None] | None:
        plan = read_json(self.plan_path)
        if not isinstance(plan, dict):
            return None
        windows = [Window(i, float(a), float(b)) for i, (a, b) in enumerate(plan["windows"])]
        return windows, LanguageGuess.from_dict(plan["language"]) if plan.get("language") else None

    def write_plan(self, windows: list[Window], language: LanguageGuess | None) -> None:
        self.claims.mkdir(parents=True, exist_ok=True)
        plan = {"windows": [[w.start_s, w.end_s] for w in windows], "language": language.to_dict() if language else None}
        atomic_write_json(self.plan_path, plan)

    def finished(self) -> set[int]:
        return {int(r["index"]) for r in self.log.read()}

    @contextlib.contextmanager
    def claim(self, index: int) -> Iterator[bool]:
        """Hold window `index`'s lock if nobody else does (True), without waiting; False when it is held
        or the claims are gone (the transcript is finished)."""
        try:
            fd = os.open(self.claims / f"{index}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        except FileNotFoundError:
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing lets go of the lock

    def append(self, record: dict[str, Any]) -> None:
        """Add a finished window to the log; one writer at a time, so no line is torn by another."""
        with self._log_lock.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.log.append(record)

    def tidy(self) -> None:
        """The transcript exists: the claims are not needed (a late helper finds nothing to take)."""
        shutil.rmtree(self.claims, ignore_errors=True)
        self._log_lock.unlink(missing_ok=True)


class _Participant:
    """One slot's share of a spread job: takes free windows and decodes them.

    `transcriber_for(window)` gives the transcriber of a held window: the owner's one for the
    whole audio, or a helper's with only that window's samples read.
    """

    def __init__(self, files: SpreadDir, windows: list[Window], language: LanguageGuess | None, slot_name: str,
                 duration_s: float, transcriber_for: Callable[[Window], WindowedTranscriber]) -> None:
        self.files, self.windows, self.language, self.slot_name = files, windows, language, slot_name
        self.duration_s, self.transcriber_for = max(duration_s, 1e-9), transcriber_for

    def take_one(self, on_progress: Progress | None = None) -> int | None:
        """Decode the first window nobody holds or finished; its index, or None when there is none."""
        done = self.files.finished()
        for window in self.windows:
            if window.index in done:
                continue
            with self.files.claim(window.index) as held:
                done = self.files.finished()
                if not held or window.index in done:  # finished while we looked
                    continue
                self._decode(window, self._audio_s(done), on_progress)
                return window.index
        return None

    def _audio_s(self, done: set[int]) -> float:
        """Seconds of the recording in finished windows."""
        return sum(w.end_s - w.start_s for w in self.windows if w.index in done)

    def _decode(self, window: Window, done_s: float, on_progress: Progress | None) -> None:
        """Decode a held window and log it; progress is the recording's share in finished windows and this one."""
        duration_s = self.duration_s
        where = {"window": window.index, "windows": len(self.windows)}

        def report(seg: dict[str, Any]) -> None:
            if on_progress is not None:
                within_s = min(max(seg["end"], window.start_s), window.end_s) - window.start_s
                on_progress((done_s + within_s) / duration_s, where)

        started = time.monotonic()
        transcriber = self.transcriber_for(window)
        languages = WindowLanguages(transcriber.model, transcriber.audio, transcriber.ranges, transcriber.options)
        if languages.named is None and not languages.per_window:
            languages.fix(self.language)  # the owner's detection: every window in one language
        record = transcriber.window_record(window, languages, report)
        decode_s = round(time.monotonic() - started, 3)
        self.files.append(record | {"slot": self.slot_name, "decode_s": decode_s})
        log.info("window %d/%d (%.0f-%.0f s) decoded on %s in %.1f s", window.index + 1, len(self.windows),
                 window.start_s, window.end_s, self.slot_name, decode_s)

    def wait_for_all(self, on_progress: Progress | None) -> None:
        """Take windows until none is free, then wait for those others hold (taking any whose holder died)."""
        while True:
            if self.take_one(on_progress) is not None:
                continue
            done = self.files.finished()
            if all(w.index in done for w in self.windows):
                return
            if on_progress is not None:
                on_progress(self._audio_s(done) / self.duration_s, {"windows": len(self.windows)})
            time.sleep(WAIT_POLL_S)


def transcribe_spread(
    model: Any,
    audio: np.ndarray,
    ranges: Ranges,
    options: TranscribeOptions,
    *,
    work_dir: Path,
    window_s: float,
    slots: int,
    slot_name: str,
    announce: Announce,
    on_progress: Progress | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The owner's transcription: spread over up to `slots` slots when worth it, else `transcribe_windows`.

    Returns the transcript and, when spread, {"windows": n, "by_slot": {slot: windows decoded}}.
    A plan already written (a resumed job) is always used, whatever `slots` is
    now; a log left by an unspread run is kept and that run resumed unspread.
    """
    files = SpreadDir(work_dir)
    duration_s = audio.shape[0] / SAMPLE_RATE
    if options.language_per_window and is_multilingual(model):
        window_s = min(window_s, PER_WINDOW_S)  # as transcribe_windows: short enough to follow a change
    transcriber = WindowedTranscriber(model, audio, ranges, options)
    plan = files.read_plan()
    if plan is None:
        windows = spread_windows(duration_s, ranges, max(1, slots), window_s, window_batch(model, options))
        if slots <= 1 or len(windows) < 2 or files.log.read():
            transcript = transcribe_windows(model, audio, ranges, options, window_s=window_s, log=files.log,
                                            on_progress=on_progress)  # fmt: skip
            return transcript, None
        languages = WindowLanguages(model, audio, ranges, options)
        guess = None
        if languages.named is None and not languages.per_window:
            guess = _model_call(lambda: languages.for_window(0, 0.0, duration_s))
        files.log.clear()
        files.write_plan(windows, guess)
        log.info("%d windows of about %.0f s planned for up to %d slots", len(windows), windows[0].end_s, slots)
    else:
        windows, guess = plan
        files.claims.mkdir(parents=True, exist_ok=True)
    announce({"work_dir": str(work_dir), "windows": len(windows)})
    _Participant(files, windows, guess, slot_name, duration_s, lambda _: transcriber).wait_for_all(on_progress)
    transcript = transcriber.run(files.log, windows, on_progress)  # every window is in the log: stitches only
    files.tidy()
    by_slot: dict[str, int] = {}
    for record in files.log.read():
        by_slot[record.get("slot", "")] = by_slot.get(record.get("slot", ""), 0) + 1
    return transcript, {"windows": len(windows), "by_slot": by_slot}


def help_spread(
    model_for: Callable[[], Any], options: TranscribeOptions, *, work_dir: Path, slot_name: str,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """A helper's run: decode one window of the plan in `work_dir`; {"window": its index or None, "windows"}.

    None when there is nothing to take (every window finished or held, the plan
    or the audio gone because the transcript is done): the dispatcher then
    stops lending slots to this job. `model_for` loads the model only when a
    window is left.
    """
    files = SpreadDir(work_dir)
    plan = files.read_plan()
    if plan is None:
        return {"window": None, "windows": 0}
    windows, guess = plan
    done = files.finished()
    if all(w.index in done for w in windows):
        return {"window": None, "windows": len(windows)}
    vad = read_json(work_dir / "vad.json")
    try:
        samples = np.load(work_dir / "audio.npy", mmap_mode="r")
    except FileNotFoundError:
        samples = None
    if samples is None or not isinstance(vad, dict):  # the owner is done (or redoing its stages)
        return {"window": None, "windows": len(windows)}
    ranges = [(float(s), float(e)) for s, e in vad["ranges"]]

    def transcriber_for(window: Window) -> WindowedTranscriber:
        return WindowedTranscriber(model_for(), window_audio(samples, window), ranges, options)

    participant = _Participant(files, windows, guess, slot_name, samples.shape[0] / SAMPLE_RATE, transcriber_for)
    return {"window": participant.take_one(on_progress), "windows": len(windows)}


def window_audio(samples: np.ndarray, window: Window) -> np.ndarray:
    """The recording as float32 with only `window`'s samples read from the int16 checkpoint (memory-mapped).

    The rest stays zeros the kernel never backs with memory, so a helper of a
    two-hour recording reads and holds minutes, not the whole file; a window is
    decoded from its own samples only (its language, when detected, too).
    """
    audio = np.zeros(samples.shape[0], dtype=np.float32)
    lo, hi = round(window.start_s * SAMPLE_RATE), round(window.end_s * SAMPLE_RATE)
    audio[lo:hi] = pcm16_to_float(np.asarray(samples[lo:hi]))
    return audio
