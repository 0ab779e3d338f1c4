"""ThreadEngine on its own: the kinds it runs and refuses, and a kill that silences the killed attempt.

The dispatcher's tests (tests/dispatch/) run on it as well; these cover what they cannot reach.
"""

from __future__ import annotations

import time
from pathlib import Path

from scribefleet.config import Settings
from scribefleet.engines import make_engine
from scribefleet.engines.base import Engine, SlotEvent, SlotSpec, SlotStatus, TaskRun


def _until(engine: Engine, type_: str, within_s: float = 30.0) -> SlotEvent:
    give_up = time.monotonic() + within_s
    while time.monotonic() < give_up:
        for event in engine.poll(give_up - time.monotonic()):
            if event.type == type_:
                return event
    raise AssertionError(f"no {type_} event within {within_s} s")


def test_the_thread_engine_fails_a_transcribe_task_and_runs_noop(tmp_path: Path, settings: Settings) -> None:
    engine = make_engine("thread", settings, tmp_path, [SlotSpec("cpu0", "cpu")])
    engine.start()
    _until(engine, "ready")
    log_path = str(tmp_path / "t.log")
    engine.assign("cpu0", TaskRun(task_id="t1", kind="transcribe", spec={}, attempt=1, log_path=log_path))
    failed = _until(engine, "failed")
    assert (failed.task_id, failed.message["code"]) == ("t1", "TASK_FAILED")
    assert "runs noop, shell tasks, not 'transcribe'" in failed.message["message"]
    assert engine.free_slots() == [engine.slot("cpu0")]
    engine.assign("cpu0", TaskRun(task_id="t2", kind="noop", spec={}, attempt=1, log_path=log_path))
    done = _until(engine, "done")
    assert (done.task_id, done.message["result"], engine.slot("cpu0").tasks_done) == ("t2", {}, 1)
    engine.stop()
    assert engine.slot("cpu0").status is SlotStatus.DEAD


def test_a_killed_thread_task_reports_nothing_after_its_death(tmp_path: Path, settings: Settings) -> None:
    engine = make_engine("thread", settings, tmp_path, [SlotSpec("cpu0", "cpu")])
    engine.start()
    _until(engine, "ready")
    spec = {"run": "sleep 30", "cwd": str(tmp_path)}
    engine.assign("cpu0", TaskRun(task_id="t1", kind="shell", spec=spec, attempt=1, log_path=str(tmp_path / "t.log")))
    _until(engine, "progress")
    death = engine.kill("cpu0")
    assert death is not None and (death.type, death.task_id, death.how, death.was) == ("died", "t1", "killed by SIGKILL", "busy")
    assert engine.slot("cpu0").status is SlotStatus.DEAD and engine.kill("cpu0") is None
    assert [e.type for e in engine.poll(0.2)] == []  # the killed attempt's "failed" is dropped
    assert engine.restart("cpu0") and _until(engine, "ready").slot == "cpu0"
    engine.stop()
