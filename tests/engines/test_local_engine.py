"""LocalEngine with real slot processes: environment before exec, process groups, deaths, stop."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import exits_within

from scribefleet.config import Settings
from scribefleet.engines.base import SlotSpec
from scribefleet.engines.local import LocalEngine, SlotEvent, SlotStatus, group_members


@pytest.fixture
def engine(tmp_path: Path, settings: Settings) -> Iterator[LocalEngine]:
    eng = LocalEngine(settings, tmp_path / "state", [SlotSpec("cpu0", "cpu", cpu_threads=2)])
    eng.start()
    yield eng
    eng.stop()


def wait_for(engine: LocalEngine, type_: str, within_s: float = 30.0) -> tuple[SlotEvent, list[SlotEvent]]:
    """Collect events until one of `type_` arrives (engine.poll blocks until something happens)."""
    seen: list[SlotEvent] = []
    give_up = time.monotonic() + within_s
    while time.monotonic() < give_up:
        for event in engine.poll(give_up - time.monotonic()):
            seen.append(event)
            if event.type == type_:
                return event, seen
    raise AssertionError(f"no {type_} event; saw {[e.type for e in seen]}")


def shell(task_id: str, run: str, cwd: Path) -> dict:
    return {"task_id": task_id, "kind": "shell", "spec": {"run": run, "cwd": str(cwd)}, "attempt": 1}


def test_a_slot_starts_with_its_environment_set_and_in_its_own_process_group(engine: LocalEngine, tmp_path: Path) -> None:
    ready, _ = wait_for(engine, "ready")
    slot = engine.slot("cpu0")
    assert ready.message["pid"] == slot.pid and slot.status is SlotStatus.IDLE and engine.free_slots() == [slot]
    assert os.getpgid(slot.pid) == slot.pid != os.getpgrp()
    engine.assign("cpu0", shell("t1", 'echo "[$CUDA_VISIBLE_DEVICES]$OMP_NUM_THREADS" > env.txt', tmp_path))
    assert slot.status is SlotStatus.BUSY and slot.task_id == "t1" and engine.free_slots() == []
    done, _ = wait_for(engine, "done")
    assert done.task_id == "t1" and slot.status is SlotStatus.IDLE and slot.tasks_done == 1
    assert (tmp_path / "env.txt").read_text().strip() == "[]2"  # a CPU slot sees no GPU; threads as planned


def test_kill_takes_the_whole_process_group_and_restart_brings_the_slot_back(engine: LocalEngine, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "up.fifo")
    wait_for(engine, "ready")
    engine.assign("cpu0", shell("t1", "sleep 30 & echo $! > child.pid; echo up > up.fifo; wait", tmp_path))
    fd = os.open(tmp_path / "up.fifo", os.O_RDONLY | os.O_NONBLOCK)
    assert select.select([fd], [], [], 30)[0]
    os.close(fd)
    death = engine.kill("cpu0")
    assert death is not None and death.task_id == "t1" and death.how == "killed by SIGKILL"
    assert exits_within(int((tmp_path / "child.pid").read_text()), 5)
    assert engine.slot("cpu0").status is SlotStatus.DEAD and engine.slot("cpu0").pid is None
    assert engine.restart("cpu0")
    wait_for(engine, "ready")
    engine.assign("cpu0", shell("t2", "true", tmp_path))
    assert wait_for(engine, "done")[0].task_id == "t2"


def test_kill_returns_only_once_every_process_of_the_group_has_exited(engine: LocalEngine, tmp_path: Path) -> None:
    # a task's next attempt may start the moment kill() returns: nothing of this one may still run then
    os.mkfifo(tmp_path / "up.fifo")
    wait_for(engine, "ready")
    engine.assign("cpu0", shell("t1", "for i in 1 2 3; do sleep 30 & done; echo up > up.fifo; wait", tmp_path))
    fd = os.open(tmp_path / "up.fifo", os.O_RDONLY | os.O_NONBLOCK)
    assert select.select([fd], [], [], 30)[0]
    os.close(fd)
    pgid = engine.slot("cpu0").pid
    assert len(group_members(pgid)) == 5  # the slot, bash and three sleeps
    death = engine.kill("cpu0")
    assert group_members(pgid) == []  # at once: no waiting here
    assert death is not None and death.pid == pgid and death.was == "busy" and death.task_id == "t1"


def test_a_slot_that_crashes_reports_its_death_with_the_tail_of_stderr(engine: LocalEngine, tmp_path: Path) -> None:
    wait_for(engine, "ready")
    engine.slot("cpu0").conn.send({"op": "run"})  # a malformed message: the slot's loop itself fails
    died, _ = wait_for(engine, "died")
    assert died.exit_code == 1 and died.signal is None and died.how == "exit code 1"
    assert "KeyError: 'task_id'" in died.stderr_tail
    slot_log = (tmp_path / "state" / "logs" / "slot-cpu0.log").read_text()
    assert "slot cpu0 crashed after 0 tasks completed" in slot_log and "Traceback" in slot_log


def test_heartbeats_and_a_clean_stop(tmp_path: Path, settings: Settings) -> None:
    settings.heartbeat_s = 0.1
    engine = LocalEngine(settings, tmp_path, [SlotSpec("cpu0", "cpu"), SlotSpec("cpu1", "cpu")])
    engine.start()
    try:
        beat, _ = wait_for(engine, "heartbeat")
        assert beat.message == {"ev": "heartbeat", "task_id": None}
    finally:
        engine.stop()
    assert all(h.status is SlotStatus.DEAD and h.pid is None for h in engine.slots)
    for name in ("cpu0", "cpu1"):
        log = (tmp_path / "logs" / f"slot-{name}.log").read_text()
        assert f"slot {name} started on cpu" in log and f"slot {name} stopped: 0 tasks completed" in log


def test_a_slot_that_never_becomes_ready_is_given_up(tmp_path: Path, settings: Settings) -> None:
    settings.slot_ready_timeout_s = 0.001
    settings.slot_restart_limit = 2
    engine = LocalEngine(settings, tmp_path, [SlotSpec("cpu0", "cpu")])
    engine.start()
    try:
        wait_for(engine, "died")
        assert engine.restart("cpu0")
        wait_for(engine, "died")
        assert not engine.restart("cpu0")
        slot = engine.slot("cpu0")
        assert slot.status is SlotStatus.FAILED and slot.error["code"] == "SLOT_CRASHED"
        assert "died 2 times before it became ready" in slot.error["message"]
    finally:
        engine.stop()


PARENT = """
import sys, time
from pathlib import Path
from scribefleet.config import Settings
from scribefleet.engines.base import SlotSpec
from scribefleet.engines.local import LocalEngine
settings = Settings(cache_dir=Path(sys.argv[1]) / "cache", _env_file=None)
engine = LocalEngine(settings, Path(sys.argv[1]), [SlotSpec("cpu0", "cpu"), SlotSpec("cpu1", "cpu")])
engine.start()
while engine.free_slots() != engine.slots:
    engine.poll(5)
print(" ".join(str(h.pid) for h in engine.slots), flush=True)
sys.stdin.read()
"""


def test_slots_die_with_their_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
    finally:
        parent.kill()
        parent.wait()
    assert all(exits_within(pid, 10) for pid in pids)


@pytest.mark.gpu
def test_a_cuda_slot_passes_its_preflight_and_is_pinned_to_its_gpu(tmp_path: Path, settings: Settings) -> None:
    ctranslate2 = pytest.importorskip("ctranslate2")
    if ctranslate2.get_cuda_device_count() == 0:
        pytest.skip("no CUDA GPU on this machine")
    engine = LocalEngine(settings, tmp_path / "state", [SlotSpec("gpu0", "cuda", gpu_index=0)])
    engine.start()
    try:
        ready, seen = wait_for(engine, "ready", within_s=120)
        assert "preflight_failed" not in [e.type for e in seen]
        engine.assign("gpu0", shell("t1", 'echo "$CUDA_VISIBLE_DEVICES" > visible.txt', tmp_path))
        wait_for(engine, "done")
    finally:
        engine.stop()
    assert (tmp_path / "visible.txt").read_text().strip() == "0"
    assert "preflight ok" in (tmp_path / "state" / "logs" / "slot-gpu0.log").read_text()


def test_with_the_cuda_check_off_a_gpu_slot_takes_tasks_pinned_to_its_gpu(tmp_path: Path, settings: Settings) -> None:
    # SCRIBEFLEET_SLOT_PREFLIGHT=false: no CUDA is needed here, only the slot's pinning is under test
    settings = settings.model_copy(update={"slot_preflight": False})
    engine = LocalEngine(settings, tmp_path / "state", [SlotSpec("gpu3", "cuda", gpu_index=3)])
    engine.start()
    try:
        _, seen = wait_for(engine, "ready")
        assert "preflight_failed" not in [e.type for e in seen]
        engine.assign("gpu3", shell("t1", 'echo "$CUDA_VISIBLE_DEVICES" > visible.txt', tmp_path))
        wait_for(engine, "done")
    finally:
        engine.stop()
    assert (tmp_path / "visible.txt").read_text().strip() == "3"
    assert "preflight" not in (tmp_path / "state" / "logs" / "slot-gpu3.log").read_text()
