"""What the dispatcher says about itself: the MONITOR line, stuck tasks, why nothing ran.

Seed 002: a dead worker, a worker that never claimed work and a task stuck
for an hour were all invisible. So the dispatcher logs, at INFO, a summary
every `monitor_interval_s`:

    MONITOR slots busy 2/3 | queue transcribe:12 shell:40 | running 2 | stuck 0 | done 30 failed 1

a WARNING naming task, slot and minutes when a running task's progress has
not moved for `stuck_after_s`, and at DEBUG why nothing could be dispatched
(at each heartbeat while every slot is busy, and whenever the reason changes):

    nothing dispatched - queue: transcribe:3; free slots: 0 of 2; models loaded: cpu0=[tiny.en] cpu1=[]; busy: cpu0=a.wav cpu1=b.wav
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from scribefleet.config import Settings
from scribefleet.engines.base import Capacity, SlotHandle, SlotStatus
from scribefleet.store.models import Task, TaskState

log = logging.getLogger("scribefleet.monitor")


@dataclass
class DispatchEvent:
    """What listeners (the CLI's progress, the service's SSE) hear: a type, the task, details."""

    type: str  # task_dispatched, task_progress, task_completed, task_failed, task_requeued, ...
    task: Task | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunningTask:
    """A task the dispatcher has handed to a slot, with its clocks (time.monotonic())."""

    task: Task
    slot: str
    started: float
    deadline: float
    last_moved: float
    stage: str | None = None
    percent: float = 0.0
    audio_s: float | None = None
    last_write: float = 0.0
    stuck_warned: bool = False

    def extend_for_audio(self, audio_s: float, per_audio_s: float) -> None:
        """A long file earns a longer limit: timeout_s + audio_s * timeout_per_audio_s."""
        self.audio_s = audio_s
        self.deadline = max(self.deadline, self.started + self.task.timeout_s + audio_s * per_audio_s)


def by_kind(tasks: Iterable[Task]) -> str:
    counts = Counter(t.kind for t in tasks)
    return " ".join(f"{kind}:{n}" for kind, n in sorted(counts.items())) or "empty"


def models_loaded(slots: Iterable[SlotHandle]) -> str:
    return " ".join(f"{h.name}=[{','.join(h.models)}]" for h in slots) or "none"


class Monitor:
    """Timed summaries and warnings; it reads the dispatcher's view and changes nothing."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.next_line_at = time.monotonic() + settings.monitor_interval_s
        self._last_idle_reason = ""

    def stuck(self, running: Iterable[RunningTask], now: float) -> list[RunningTask]:
        return [r for r in running if now - r.last_moved >= self.settings.stuck_after_s]

    def warn_stuck(self, running: Iterable[RunningTask], now: float) -> None:
        """One WARNING per stuck spell of each task (it re-arms when progress moves again)."""
        for r in self.stuck(running, now):
            if r.stuck_warned:
                continue
            r.stuck_warned = True
            log.warning(
                "task %s on slot %s is stuck: no progress for %.1f min (stage %s, %.0f%%, running %.1f min)",
                r.task.key, r.slot, (now - r.last_moved) / 60, r.stage or "-", r.percent, (now - r.started) / 60,
            )  # fmt: skip

    def line(
        self,
        slots: Sequence[SlotHandle],
        queued: Iterable[Task],
        running: list[RunningTask],
        counts: dict[TaskState, int],
        now: float,
    ) -> str:
        capacity = Capacity.of(slots)
        text = (
            f"MONITOR slots busy {capacity.busy}/{capacity.usable} | queue {by_kind(queued)} | running {len(running)} "
            f"| stuck {len(self.stuck(running, now))} | done {counts[TaskState.COMPLETE]} "
            f"failed {counts[TaskState.FAILED]}"
        )
        extra = [f"{s.value} {counts[s]}" for s in (TaskState.CANCELED, TaskState.SKIPPED) if counts[s]]
        down = [h.name for h in slots if h.status in (SlotStatus.DEAD, SlotStatus.FAILED)]
        return text + "".join(f" {e}" for e in extra) + (f" | slots down {','.join(down)}" if down else "")

    def due(self, now: float) -> bool:
        if now < self.next_line_at:
            return False
        self.next_line_at = now + self.settings.monitor_interval_s
        return True

    def idle_reason(
        self, queued: list[Task], waiting: int, blocked: int, slots: Sequence[SlotHandle], running: Iterable[RunningTask] = ()
    ) -> None:
        """DEBUG: why queued work did not start this round (logged when the reason changes)."""
        free = [h for h in slots if h.is_free]
        reason = f"queue: {by_kind(queued)}; free slots: {len(free)} of {len(slots)}; models loaded: {models_loaded(slots)}"
        busy = " ".join(f"{r.slot}={r.task.key}" for r in sorted(running, key=lambda r: r.slot))
        if busy:
            reason += f"; busy: {busy}"
        for status in (SlotStatus.STARTING, SlotStatus.DEAD, SlotStatus.FAILED):
            names = [h.name for h in slots if h.status is status]
            if names:
                reason += f"; {status.value}: {' '.join(names)}"
        if waiting:
            reason += f"; waiting on needs: {waiting}"
        if blocked:
            reason += f"; same content already running: {blocked}"
        if reason != self._last_idle_reason:
            self._last_idle_reason = reason
            log.debug("nothing dispatched - %s", reason)
