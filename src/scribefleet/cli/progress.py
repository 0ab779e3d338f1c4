"""Progress while a batch runs: rich bars on a terminal, plain log lines otherwise.

On a terminal: one overall bar (files, audio done, throughput in audio
seconds per wall second, ETA) and one bar per running file with its stage.
When stderr is not a terminal (CI, cron, `| tee`), the same facts arrive as
INFO log lines, one per state change.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from scribefleet.dispatch.monitor import DispatchEvent
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


class BatchProgress:
    """Listens to dispatcher events and shows them."""

    def __init__(self, console: Console, *, json_mode: bool = False) -> None:
        self.console = console
        self.fancy = console.is_terminal
        self.started = time.monotonic()
        self.total = 0
        self.fraction: dict[str, float] = {}
        self.audio_s: dict[str, float] = {}
        self.done = 0
        self.failed = 0
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
            audio = (t.result or {}).get("duration_s") if t.result else None
            if audio:
                self.audio_s[t.id] = float(audio)
        if not self.fancy:
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
        with self._progress:
            yield
        self._progress = None

    def _overall_info(self) -> str:
        elapsed = max(1e-6, time.monotonic() - self.started)
        finished = sum(self.fraction.values())
        audio_done = sum(self.audio_s.get(k, 0.0) * f for k, f in self.fraction.items())
        eta = "?"
        if finished > 0 and self.total:
            eta = f"{elapsed * (self.total - finished) / finished:,.0f}s"
        return (f"{self.done}/{self.total} done, {self.failed} failed | audio {audio_done:,.0f}s "
                f"| {audio_done / elapsed:.2f} audio-s/s | ETA {eta}")

    def on_event(self, event: DispatchEvent) -> None:
        """Dispatcher listener: called in the dispatcher's thread for every event."""
        task = getattr(event, "task", None)
        data = getattr(event, "data", None) or {}
        kind = event.type
        if task is None:
            return
        if kind == "task_progress":
            self.fraction[task.id] = float(data.get("percent", 0.0)) / 100.0
            if data.get("audio_s"):
                self.audio_s[task.id] = float(data["audio_s"])
            self._bar(task, data.get("stage", ""), self.fraction[task.id])
        elif kind == "task_dispatched":
            self.fraction[task.id] = 0.0
            self._bar(task, f"on {data.get('slot', '?')}", 0.0)
            if not self.fancy:
                log.info("started %s on %s (attempt %s)", _name(task), data.get("slot", "?"), task.attempts)
        elif kind in ("task_completed", "task_failed", "task_canceled", "task_skipped"):
            self.fraction[task.id] = 1.0
            ok = kind == "task_completed"
            self.done += ok
            self.failed += not ok
            if ok and task.result and task.result.get("duration_s"):
                self.audio_s[task.id] = float(task.result["duration_s"])
            self._finish_bar(task)
            if not self.fancy:
                what = "done" if ok else f"FAILED [{task.error_code}] {task.error_message}"
                log.info("[%d/%d] %s %s", self.done + self.failed, self.total, what, _name(task))
        elif kind == "task_requeued":
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
