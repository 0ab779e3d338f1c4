"""Progress while a batch runs: rich bars on a terminal, plain log lines otherwise.

On a terminal: one overall bar (files, audio done, throughput in audio
seconds per wall second, elapsed time and ETA) and one bar per running file
with its stage, elapsed time and ETA. When stderr is not a terminal (CI, cron,
`| tee`), the same facts arrive as INFO log lines: one per state change, and
every `log_every_s` (SCRIBEFLEET_PROGRESS_LOG_S, 10 s) one per running file
and one for the batch, so a long file never looks stuck. Elapsed times and
ETAs are jobs/eta.py's, the computation `status` and the API use.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from scribefleet.dispatch.monitor import DispatchEvent
from scribefleet.jobs import eta
from scribefleet.logs import FORMAT, IsoFormatter
from scribefleet.store.models import Task

log = logging.getLogger("scribefleet.progress")


class _ConsoleHandler(logging.Handler):
    """Log records printed through the rich console, so live bars stay intact."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(self.format(record), markup=False, highlight=False, soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _name(task: Task) -> str:
    return str(task.spec.get("display") or task.key)


@dataclass
class _Running:
    """A file running in this batch, as its progress events tell it."""

    task_id: str
    name: str
    kind: str
    started: float  # time.monotonic() of its dispatch
    stage: str = ""
    stage_fraction: float = 0.0

    def fraction(self) -> float | None:
        return eta.audio_fraction(self.kind, self.stage or None, self.stage_fraction)


class BatchProgress:
    """Listens to dispatcher events and shows them."""

    def __init__(self, console: Console, *, json_mode: bool = False, log_every_s: float = 10.0) -> None:
        self.console = console
        self.fancy = console.is_terminal
        self.started = time.monotonic()
        self.total = 0
        self.fraction: dict[str, float] = {}
        self.audio_s: dict[str, float] = {}
        self.done = 0
        self.failed = 0
        self.log_every_s = log_every_s
        self.running: dict[str, _Running] = {}
        self.gone: set[str] = set()  # failed, canceled or skipped: out of the batch's ETA
        self._lock = threading.Lock()  # events come in the dispatcher's thread, plain lines from a timer's
        self._bars: dict[str, TaskID] = {}
        self._progress: Progress | None = None
        self._overall: TaskID | None = None

    def log_handler(self, verbose: bool) -> logging.Handler:
        handler = _ConsoleHandler(self.console)
        handler.setFormatter(IsoFormatter(FORMAT))
        # on a terminal the bars tell the story; elsewhere INFO lines do
        handler.setLevel(logging.DEBUG if verbose else (logging.WARNING if self.fancy else logging.INFO))
        return handler

    @contextlib.contextmanager
    def live(self, tasks: list[Task]) -> Iterator[None]:
        self.total = len(tasks)
        for t in tasks:
            if t.is_terminal:
                self.fraction[t.id] = 1.0
                self.done += t.state.value == "complete"
                self.failed += t.state.value != "complete"
                if t.state.value != "complete":
                    self.gone.add(t.id)
            audio = (t.result or {}).get("duration_s") or t.audio_s  # decoded, else from the header
            if audio:
                self.audio_s[t.id] = float(audio)
        if not self.fancy:
            with self._ticking(self.log_every_s, self._log_lines):
                yield
            return
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("{task.fields[info]}", markup=False),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._overall = self._progress.add_task("all files", total=self.total, info=self._overall_info())
        self._progress.update(self._overall, completed=sum(self.fraction.values()))
        with self._progress, self._ticking(1.0, self._refresh_times):
            yield
        self._progress = None

    @contextlib.contextmanager
    def _ticking(self, every_s: float, tick: Callable[[], None]) -> Iterator[None]:
        """Call `tick` every `every_s` in a thread while the batch runs (times move between events too)."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every_s):
                tick()

        ticker = threading.Thread(target=loop, name="progress-ticker", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()

    def _log_lines(self) -> None:
        """Plain lines: each running file's, then the batch's."""
        with self._lock:
            lines = [self._file_line(r) for r in self.running.values()]
            if lines:
                lines.append(f"batch: {self._overall_info(elapsed=True)}")
        for line in lines:
            log.info("%s", line)

    def _refresh_times(self) -> None:
        with self._lock:
            for task_id, r in self.running.items():
                bar = self._bars.get(task_id)
                if bar is not None and self._progress is not None and r.stage:
                    self._progress.update(bar, info=f"{r.stage} | {self._times(r, elapsed=False)}")
            self._refresh_overall()

    def _times(self, r: _Running, *, elapsed: bool = True) -> str:
        """"elapsed 1m02s, ETA 40s" of a running file (a bar has its own elapsed column)."""
        spent = time.monotonic() - r.started
        left = eta.clock(eta.eta_s(spent, r.fraction(), self.audio_s.get(r.task_id)))
        return f"elapsed {eta.clock(spent)}, ETA {left}" if elapsed else f"ETA {left}"

    def _file_line(self, r: _Running) -> str:
        return f"{r.name}: {r.stage or 'starting'} {100 * r.stage_fraction:.0f}%, {self._times(r)}"

    def _batch_times(self) -> eta.BatchTimes:
        files = []
        for task_id, fraction in self.fraction.items():
            r = self.running.get(task_id)
            if r is not None:
                files.append(eta.FileProgress("running", r.fraction(), self.audio_s.get(task_id)))
            else:
                status = "failed" if task_id in self.gone else "complete" if fraction >= 1.0 else "queued"
                files.append(eta.FileProgress(status, fraction, self.audio_s.get(task_id)))
        files += [eta.FileProgress("queued", 0.0, None)] * max(0, self.total - len(files))
        return eta.batch_progress(files, time.monotonic() - self.started)

    def _overall_info(self, *, elapsed: bool = False) -> str:
        spent = max(1e-6, time.monotonic() - self.started)
        times = self._batch_times()
        audio_done = times.audio_done_s or 0.0
        clock = f" | elapsed {eta.clock(spent)}" if elapsed else ""
        return (f"{self.done}/{self.total} done, {self.failed} failed | audio {audio_done:,.0f}s "
                f"| {audio_done / spent:.2f} audio-s/s{clock} | ETA {eta.clock(times.eta_s)}")

    def on_event(self, event: DispatchEvent) -> None:
        """Dispatcher listener: called in the dispatcher's thread for every event."""
        with self._lock:
            self._on_event(event)

    def _on_event(self, event: DispatchEvent) -> None:
        task = getattr(event, "task", None)
        data = getattr(event, "data", None) or {}
        kind = event.type
        if task is None:
            return
        if kind == "task_progress":
            self.fraction[task.id] = float(data.get("percent", 0.0)) / 100.0
            if data.get("audio_s"):
                self.audio_s[task.id] = float(data["audio_s"])
            r = self.running.get(task.id)
            if r is not None:
                r.stage, r.stage_fraction = str(data.get("stage") or ""), self.fraction[task.id]
                self._bar(task, f"{r.stage} | {self._times(r, elapsed=False)}", self.fraction[task.id])
            else:
                self._bar(task, data.get("stage", ""), self.fraction[task.id])
        elif kind == "task_dispatched":
            self.fraction[task.id] = 0.0
            self.running[task.id] = _Running(task.id, _name(task), task.kind, time.monotonic())
            self._bar(task, f"on {data.get('slot', '?')}", 0.0)
            if not self.fancy:
                log.info("started %s on %s (attempt %s)", _name(task), data.get("slot", "?"), task.attempts)
        elif kind in ("task_completed", "task_failed", "task_canceled", "task_skipped"):
            self.running.pop(task.id, None)
            self.fraction[task.id] = 1.0
            ok = kind == "task_completed"
            if not ok:
                self.gone.add(task.id)
            self.done += ok
            self.failed += not ok
            if ok and task.result and task.result.get("duration_s"):
                self.audio_s[task.id] = float(task.result["duration_s"])
            self._finish_bar(task)
            if not self.fancy:
                what = "done" if ok else f"FAILED [{task.error_code}] {task.error_message}"
                log.info("[%d/%d] %s %s", self.done + self.failed, self.total, what, _name(task))
        elif kind == "task_requeued":
            self.running.pop(task.id, None)
            self.fraction[task.id] = 0.0
            self._finish_bar(task)
        self._refresh_overall()

    def _bar(self, task: Task, stage: str, fraction: float) -> None:
        if self._progress is None:
            return
        bar = self._bars.get(task.id)
        if bar is None:
            bar = self._bars[task.id] = self._progress.add_task(_name(task)[-40:], total=1.0, info="")
        self._progress.update(bar, completed=fraction, info=stage)

    def _finish_bar(self, task: Task) -> None:
        bar = self._bars.pop(task.id, None)
        if bar is not None and self._progress is not None:
            self._progress.remove_task(bar)

    def _refresh_overall(self) -> None:
        if self._progress is not None and self._overall is not None:
            self._progress.update(self._overall, completed=sum(self.fraction.values()), info=self._overall_info())
