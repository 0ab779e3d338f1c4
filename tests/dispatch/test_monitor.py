"""Monitor: the MONITOR line, stuck warnings once per spell, deadlines that grow with the audio."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from scribefleet.config import Settings
from scribefleet.dispatch.monitor import Monitor, RunningTask
from scribefleet.engines.base import SlotSpec
from scribefleet.engines.base import SlotHandle, SlotStatus
from scribefleet.store import Store, Task, TaskState


@pytest.fixture
def tasks(tmp_path: Path) -> list[Task]:
    with Store.open(tmp_path) as store:
        batch = store.ensure_batch("b", "plan", {}, None)
        for i, kind in enumerate(["transcribe", "transcribe", "shell", "llm"]):
            store.add_task(batch, f"t{i}", kind, {}, timeout_s=100.0)
        return store.tasks(batch)


def test_the_monitor_line_counts_slots_queue_running_stuck_and_ends(tasks: list[Task], settings: Settings) -> None:
    settings.stuck_after_s = 60
    slots = [
        SlotHandle(SlotSpec("gpu0", "cuda"), status=SlotStatus.BUSY),
        SlotHandle(SlotSpec("gpu1", "cuda"), status=SlotStatus.IDLE),
        SlotHandle(SlotSpec("gpu2", "cuda"), status=SlotStatus.FAILED),
    ]
    running = [RunningTask(tasks[0], "gpu0", started=0.0, deadline=100.0, last_moved=0.0)]
    counts = {**dict.fromkeys(TaskState, 0), TaskState.COMPLETE: 30, TaskState.FAILED: 1, TaskState.SKIPPED: 2}
    line = Monitor(settings).line(slots, tasks[1:], running, counts, now=61.0)
    assert line == (
        "MONITOR slots busy 1/2 | queue llm:1 shell:1 transcribe:1 | running 1 | stuck 1 | done 30 failed 1 "
        "skipped 2 | slots down gpu2"
    )


def test_a_stuck_task_is_warned_about_once_per_spell(tasks: list[Task], settings: Settings) -> None:
    settings.stuck_after_s = 60
    monitor = Monitor(settings)
    r = RunningTask(tasks[0], "cpu0", started=0.0, deadline=1000.0, last_moved=0.0)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("scribefleet.monitor")
    logger.addHandler(handler)
    try:
        monitor.warn_stuck([r], now=30.0)
        monitor.warn_stuck([r], now=130.0)
        monitor.warn_stuck([r], now=190.0)
        r.last_moved, r.stuck_warned = 190.0, False  # progress moved: the next spell is warned again
        monitor.warn_stuck([r], now=260.0)
    finally:
        logger.removeHandler(handler)
    assert [rec.getMessage() for rec in records] == [
        "task t0 on slot cpu0 is stuck: no progress for 2.2 min (stage -, 0%, running 2.2 min)",
        "task t0 on slot cpu0 is stuck: no progress for 1.2 min (stage -, 0%, running 4.3 min)",
    ]


def test_the_deadline_grows_with_the_audio_but_never_shrinks(tasks: list[Task]) -> None:
    r = RunningTask(tasks[0], "cpu0", started=10.0, deadline=110.0, last_moved=10.0)
    r.extend_for_audio(600.0, per_audio_s=2.0)
    assert r.deadline == 10.0 + 100.0 + 1200.0
    r.extend_for_audio(1.0, per_audio_s=2.0)
    assert r.deadline == 1310.0


def test_the_idle_reason_names_the_queue_free_slots_models_and_who_is_busy(tasks: list[Task], settings: Settings) -> None:
    slots = [
        SlotHandle(SlotSpec("cpu0", "cpu"), status=SlotStatus.BUSY, models=["tiny.en"]),
        SlotHandle(SlotSpec("cpu1", "cpu"), status=SlotStatus.STARTING),
    ]
    running = [RunningTask(tasks[0], "cpu0", started=0.0, deadline=100.0, last_moved=0.0)]
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("scribefleet.monitor")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        monitor = Monitor(settings)
        for _ in range(3):  # the same reason is said once, not at every look
            monitor.idle_reason(tasks[1:], 0, 0, slots, running)
        monitor.idle_reason(tasks[2:], 1, 0, slots, running)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert [rec.getMessage() for rec in records] == [
        "nothing dispatched - queue: llm:1 shell:1 transcribe:1; free slots: 0 of 2; models loaded: cpu0=[tiny.en] "
        "cpu1=[]; busy: cpu0=t0; starting: cpu1",
        "nothing dispatched - queue: llm:1 shell:1; free slots: 0 of 2; models loaded: cpu0=[tiny.en] cpu1=[]; "
        "busy: cpu0=t0; starting: cpu1; waiting on needs: 1",
    ]
