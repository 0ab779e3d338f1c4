"""The engine registry, and what the thread engine refuses: kinds that need a slot process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scribefleet.config import Settings
from scribefleet.engines import ENGINES, make_engine
from scribefleet.engines.base import Engine, SlotEvent, SlotSpec, SlotStatus, TaskRun
from scribefleet.errors import UsageError


def test_every_registered_engine_is_an_engine(tmp_path: Path, settings: Settings) -> None:
    assert set(ENGINES) == {"local", "thread"}
    for name in ENGINES:
        engine = make_engine(name, settings, tmp_path, [SlotSpec("cpu0", "cpu")])
        assert isinstance(engine, Engine) and [h.name for h in engine.slots] == ["cpu0"]
        assert engine.capacity().total == 1 and engine.slot("cpu0").status is SlotStatus.DEAD
    with pytest.raises(UsageError, match="unknown engine 'ray'; choose one of local, thread"):
        make_engine("ray", settings, tmp_path, [])


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
