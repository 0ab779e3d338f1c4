"""One dispatcher per state dir; a dispatcher killed with -9 leaves work that the next one resumes."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from helpers import exits_within

from scribefleet.dispatch.dispatcher import Dispatcher
from scribefleet.dispatch.lock import DispatcherLock
from scribefleet.dispatch.monitor import DispatchEvent
from scribefleet.engines.base import SlotSpec
from scribefleet.engines.local import LocalEngine
from scribefleet.errors import StateLocked
from scribefleet.store import Store, TaskState

if TYPE_CHECKING:
    from .conftest import Fleet

DISPATCHER = """
import sys
from pathlib import Path
from scribefleet.config import Settings
from scribefleet.dispatch.dispatcher import Dispatcher
from scribefleet.dispatch.lock import DispatcherLock
from scribefleet.engines.base import SlotSpec
from scribefleet.engines.local import LocalEngine
from scribefleet.store import Store

state = Path(sys.argv[1])
settings = Settings(cache_dir=state / "cache", _env_file=None)
engine = LocalEngine(settings, state, [SlotSpec("cpu0", "cpu")])
Dispatcher(Store.open(state), engine, settings).run(burst=True)
"""


def test_a_second_dispatcher_in_the_same_state_dir_is_refused(fleet: Fleet) -> None:
    fleet.add("one", "true")
    refusals: list[StateLocked] = []

    def start_another(event: DispatchEvent) -> None:
        if event.type == "task_dispatched" and not refusals:
            engine = LocalEngine(fleet.settings, fleet.state_dir, [SlotSpec("other", "cpu")])
            with Store.open(fleet.state_dir) as store, pytest.raises(StateLocked) as err:
                Dispatcher(store, engine, fleet.settings).run()
            assert engine.slots[0].pid is None  # refused before it started anything
            refusals.append(err.value)

    fleet.run(slots=1, listeners=[start_another])
    assert refusals and refusals[0].code == "STATE_LOCKED"
    assert refusals[0].details["pid"] == os.getpid() and f"pid {os.getpid()}" in refusals[0].message
    assert fleet.task("one").is_complete


def test_running_rows_of_a_killed_dispatcher_are_recovered_by_the_next(fleet: Fleet) -> None:
    os.mkfifo(fleet.work / "up.fifo")
    # the resumed run outlasts RUN_STAGE_AFTER_S, so it reports its run stage
    fleet.add("long", "echo $$ > shell.pid; if [ -f marker ]; then sleep 0.3; exit 0; fi; touch marker; echo up > up.fifo; sleep 30")
    fleet.add("later", "touch later.ran", needs=["long"])
    first = subprocess.Popen([sys.executable, "-c", DISPATCHER, str(fleet.state_dir)])
    try:
        fleet.wait_fifo("up.fifo")
        with pytest.raises(StateLocked) as err:  # while it lives, nobody else dispatches here
            Dispatcher(fleet.store, fleet.make_engine(1), fleet.settings).run()
        assert err.value.details["pid"] == first.pid
    finally:
        first.kill()
        first.wait()
    assert fleet.task("long").state is TaskState.RUNNING  # left behind by the dead dispatcher
    orphan = int((fleet.work / "shell.pid").read_text())
    assert exits_within(orphan, 10), "the slot's command outlived the dispatcher"

    fleet.run(slots=1)
    long = fleet.task("long")
    assert long.is_complete and long.attempts == 1  # the lost attempt is not counted
    assert fleet.event_types("long")[-4:] == ["recovered", "dispatched", "stage", "completed"]
    assert fleet.task("later").is_complete
    assert "task long recovered: it was left running on slot cpu0" in fleet.log_text


def test_a_cancel_with_no_dispatcher_running_is_applied_at_once(fleet: Fleet) -> None:
    from scribefleet.dispatch import request_cancel

    first = fleet.add("first", "true")
    fleet.add("second", "true", needs=["first"])
    fleet.add("other", "true")
    assert request_cancel(fleet.store, first, fleet.settings) is True
    assert fleet.task("first").state is TaskState.CANCELED
    assert fleet.task("second").state is TaskState.SKIPPED and fleet.task("other").is_queued
    assert fleet.store.pending_cancels() == []


def test_a_cancel_while_a_dispatcher_runs_is_left_to_it(fleet: Fleet) -> None:
    from scribefleet.dispatch import request_cancel

    target = fleet.add("target", "true")
    fleet.store.ensure_batch("another", "plan", {}, None)
    with DispatcherLock(fleet.state_dir):  # as if a dispatcher were running here
        assert request_cancel(fleet.store, target, fleet.settings) is False
    assert fleet.task("target").is_queued and [t for _, t in fleet.store.pending_cancels()] == [target]
    fleet.run(slots=1)  # the next dispatcher applies it before running anything
    assert fleet.task("target").state is TaskState.CANCELED


HOLD_PLAN = """
tasks:
  - id: hold
    kind: shell
    run: |
      exec 9>>hold.lock
      flock -n 9 || { echo overlap >> runs.txt; exit 3; }
      if [ -e marker ]; then echo again >> runs.txt; exit 0; fi
      touch marker; echo first >> runs.txt; echo up > up.fifo; sleep 60
  - id: after
    kind: shell
    needs: [hold]
    run: echo after >> runs.txt
"""



def test_a_run_waiting_for_the_lock_gets_it_only_once_the_stopped_runs_slots_are_gone(tmp_path: Path) -> None:
    """Two real runs on one state dir. The first is Ctrl-C'd while its slot runs `hold` (the slot ends only at
    its 5 s stop timeout); `scribefleet dispatch`, waiting for the state dir's lock, took it as the first run's
    dispatcher returned, before its slots had stopped, and ran `hold` again beside the old copy (`overlap`:
    the command's own flock was still held). The lock now goes once the slots are gone and `hold` is queued."""
    cli = [sys.executable, "-m", "scribefleet.cli.main"]
    env = {**os.environ, "SCRIBEFLEET_SHELL_ALLOW_ALL": "1"}
    (tmp_path / "plan.yaml").write_text(HOLD_PLAN.lstrip())
    os.mkfifo(tmp_path / "up.fifo")
    state = tmp_path / ".scribefleet"
    first = subprocess.Popen([*cli, "plan", "run", str(tmp_path / "plan.yaml")], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    second = None
    try:
        fd = os.open(tmp_path / "up.fifo", os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert select.select([fd], [], [], 120)[0], "hold never started"
        finally:
            os.close(fd)
        second = subprocess.Popen([*cli, "dispatch", "--out", str(state)], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
        log = state / "logs" / "scribefleet.log"
        give_up = time.monotonic() + 60
        while f"runner: waiting for pid {first.pid}" not in log.read_text():  # polling the lock, every 0.5 s
            assert time.monotonic() < give_up and second.poll() is None, "the second run is not waiting for the lock"
            time.sleep(0.1)
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
        assert first.returncode == 130, err
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert (tmp_path / "runs.txt").read_text().split() == ["first", "again", "after"]
    with Store.open(state) as store:
        hold = next(t for t in store.tasks() if t.key == "hold")
        types = [e.type for e in store.events(task_id=hold.id)]
    assert hold.is_complete and types.count("dispatched") == 2 and types.count("recovered") == 1, types


def test_is_held_only_looks_and_its_probe_never_refuses_a_run(tmp_path: Path) -> None:
    """`status` asks whether a live process holds the state dir: without making the lock file, and the shared
    lock of its probe (an instant) is waited out by a run that starts then, not refused as STATE_LOCKED."""
    import fcntl
    import threading

    state = tmp_path / "state"
    state.mkdir()
    looker = DispatcherLock(state)
    assert not looker.is_held() and not (state / "dispatcher.lock").exists()
    run = DispatcherLock(state)
    run.acquire()
    assert looker.is_held()
    run.release()
    assert not looker.is_held()

    probe = os.open(state / "dispatcher.lock", os.O_RDONLY)  # another status, caught mid-probe
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
    threading.Timer(0.05, os.close, args=(probe,)).start()
    run.acquire()
    assert run.held and looker.is_held()
    run.release()
