"""Seed 002's three test cases, asserted on the log text the dispatcher writes.

1. A slot killed mid-task: the log shows the crash (signal, pid, task), the
   re-queue, the restart and the second attempt, in that order.
2. All slots busy with a long queue: the MONITOR line shows `slots busy 2/2`
   and the queue by kind; at DEBUG, "nothing dispatched" names the queue by
   kind, the free slots (0 of 2), the models loaded and who is busy.
3. A task whose model no slot holds: it is dispatched, the slot loads the
   model, the log says so; and placement sends each task to the slot that
   already holds its model, so alternating models do not reload on every task.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from scribefleet.dispatch.monitor import DispatchEvent
from scribefleet.store import TaskState

if TYPE_CHECKING:
    from .conftest import Fleet

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR)\s+\[")


def _in_order(log: str, *fragments: str) -> None:
    at = 0
    for fragment in fragments:
        found = log.find(fragment, at)
        assert found >= 0, f"{fragment!r} not found after position {at} of the log:\n{log}"
        at = found + len(fragment)


@pytest.mark.local_only("SIGKILLs the slot process")
def test_case_1_a_slot_killed_mid_task_logs_the_crash_and_the_requeue(fleet: Fleet) -> None:
    os.mkfifo(fleet.work / "up.fifo")
    fleet.add("victim", "if [ -f marker ]; then echo again; exit 0; fi; touch marker; echo up > up.fifo; sleep 30")
    killed: list[int] = []

    def kill_when_running(event: DispatchEvent) -> None:
        if event.type == "task_progress" and not killed:
            fleet.wait_fifo("up.fifo")  # the command is really running
            killed.append(fleet.engine.slot("cpu0").pid)
            os.kill(killed[0], signal.SIGKILL)

    fleet.run(slots=1, listeners=[kill_when_running])
    assert fleet.task("victim").is_complete and fleet.task("victim").attempts == 2
    log = fleet.log_text
    _in_order(
        log,
        "task victim (shell) dispatched to cpu0, attempt 1/3, command: if [ -f marker ]",
        f"slot cpu0 crashed (killed by SIGKILL) while running task victim, attempt 1 (pid {killed[0]}, "
        "0 tasks completed by this process)",
        "task victim re-queued after [SLOT_CRASHED] on cpu0 (attempt 1/3",
        "slot cpu0 restarted",
        "slot cpu0 ready on cpu",
        "task victim (shell) dispatched to cpu0, attempt 2/3",
        "task victim completed on cpu0",
    )
    assert all(ISO_MS.match(line) for line in log.splitlines() if line[:2] == "20")
    # the slot's own log: lifecycle of both processes (the killed one could not say goodbye)
    slot_log = (fleet.state_dir / "logs" / "slot-cpu0.log").read_text()
    assert slot_log.count("slot cpu0 started on cpu") == 2 and slot_log.count("slot cpu0 stopped: 1 tasks completed") == 1


class _Watch(logging.Handler):
    """Sets an event once a log line matching each pattern has been seen."""

    def __init__(self, *patterns: str) -> None:
        super().__init__(logging.DEBUG)
        self.pending = [re.compile(p) for p in patterns]
        self.all_seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.pending = [p for p in self.pending if not p.search(message)]
        if not self.pending:
            self.all_seen.set()


def test_case_2_all_slots_busy_monitor_and_debug_lines_show_the_queue(fleet: Fleet) -> None:
    fleet.settings.monitor_interval_s = 0.1
    fleet.settings.heartbeat_s = 0.1
    for name in ("a", "b"):
        os.mkfifo(fleet.work / f"{name}.fifo")
        fleet.add(name, f"read x < {name}.fifo")  # holds its slot until the test lets it go
    for i in range(4):
        fleet.add(f"s{i}", "true")
    fleet.add("gate", "exit 1", max_attempts=1)
    for name in ("tr1", "tr2"):  # queued transcribe tasks that never run: their need fails
        fleet.store.add_task(fleet.batch_id, name, "transcribe", {}, needs=["gate"])
    queue = "shell:5 transcribe:2"  # s0..s3 and gate; tr1, tr2
    watch = _Watch(
        rf"^MONITOR slots busy 2/2 \| queue {queue} \| running 2 \| stuck 0 \| done 0 failed 0$",
        rf"^nothing dispatched - queue: {queue}; free slots: 0 of 2; models loaded: cpu0=\[\] cpu1=\[\]; "
        r"busy: cpu0=[ab] cpu1=[ab]$",
    )

    def release() -> None:
        watch.all_seen.wait(60)  # let them go anyway, so a failing test still ends
        for name in ("a", "b"):
            with open(fleet.work / f"{name}.fifo", "w") as fifo:
                fifo.write("go\n")

    logger = logging.getLogger("scribefleet")
    logger.addHandler(watch)
    releaser = threading.Thread(target=release, daemon=True)
    releaser.start()
    try:
        fleet.run(slots=2)
    finally:
        logger.removeHandler(watch)
        releaser.join()
    assert watch.all_seen.is_set(), f"never logged: {[p.pattern for p in watch.pending]}"
    assert fleet.task("s3").is_complete and fleet.task("tr2").state is TaskState.SKIPPED
    log = fleet.log_text
    assert f"INFO    [dispatch] MONITOR slots busy 2/2 | queue {queue} | running 2 |" in log
    assert f"DEBUG   [monitor] nothing dispatched - queue: {queue}; free slots: 0 of 2; models loaded: " in log
    assert re.search(r"DEBUG   \[dispatch\] heartbeat from slot cpu[01] \([ab]\)", log)  # heartbeats name the task


def _transcribe_spec(tmp: Path, audio: Path, model: Any, name: str) -> dict[str, Any]:
    from scribefleet.options import TranscribeOptions

    options = TranscribeOptions(formats="txt", batch_size=1, vad=False, beam_size=1)
    return {
        "input_path": str(audio), "display": audio.name, "work_dir": str(tmp / "work" / name),
        "outputs": {"txt": str(tmp / "out" / f"{name}.txt")}, "options": options.model_dump(mode="json"),
        "model_path": str(model.path), "model_id": model.model_id,
    }  # fmt: skip


@pytest.fixture
def two_models(fleet: Fleet) -> tuple[Any, Any]:
    """The bundled tiny.en by name, and the same folder by path: two model ids, so two loads."""
    pytest.importorskip("faster_whisper")
    from scribefleet.pipeline.models import resolve_model

    by_name = resolve_model("tiny.en", fleet.settings)
    by_path = resolve_model(str(by_name.path), fleet.settings)
    assert by_name.model_id == "tiny.en" and by_path.model_id == f"path:{by_name.path}"
    return by_name, by_path


@pytest.mark.local_only("transcribe tasks load models in slot processes")
def test_case_3_a_task_whose_model_no_slot_holds_is_dispatched_and_loads_it(
    fleet: Fleet, two_models: tuple[Any, Any], speech: dict[str, Path]
) -> None:
    first, second = two_models
    for name, audio, model in (("one", "en01.wav", first), ("two", "en02.wav", second)):
        fleet.store.add_task(fleet.batch_id, name, "transcribe", _transcribe_spec(fleet.work, speech[audio], model, name))
    fleet.run(slots=1)
    assert fleet.task("one").is_complete and fleet.task("two").is_complete
    assert (fleet.work / "out" / "two.txt").read_text().strip()
    _in_order(
        fleet.log_text,
        "task one (transcribe) dispatched to cpu0",
        "slot cpu0 loaded model tiny.en; now holds ['tiny.en']",
        "task one completed on cpu0",
        "task two (transcribe) dispatched to cpu0",
        f"slot cpu0 loaded model {second.model_id}; now holds ['tiny.en', '{second.model_id}']",
        "task two completed on cpu0",
    )


@pytest.mark.local_only("transcribe tasks load models in slot processes")
@pytest.mark.slow
def test_model_affine_placement_keeps_each_model_on_the_slot_that_holds_it(
    fleet: Fleet, two_models: tuple[Any, Any], speech: dict[str, Path]
) -> None:
    fleet.settings.slot_max_models = 1  # a slot that changes model must unload the other: loads show it all
    audio = sorted(speech)[:6]
    for i, name in enumerate(audio):
        model = two_models[i % 2]  # A B A B A B
        fleet.store.add_task(fleet.batch_id, f"t{i}", "transcribe", _transcribe_spec(fleet.work, speech[name], model, f"t{i}"))
    loads: list[tuple[str, str]] = []

    def count_loads(event: DispatchEvent) -> None:
        if event.type == "model_loaded":
            loads.append((event.data["slot"], event.data["model"]))

    fleet.run(slots=2, listeners=[count_loads])
    assert {t.state for t in fleet.store.tasks(fleet.batch_id)} == {TaskState.COMPLETE}
    # one load per slot, and at most one more at the end, when only one model's tasks remain and the
    # other slot is free: never a reload per task (placement in queue order alone reloads on most tasks)
    assert {m for _, m in loads} == {m.model_id for m in two_models}
    assert len(loads) <= 3, loads
