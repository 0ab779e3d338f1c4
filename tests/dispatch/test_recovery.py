"""One dispatcher per state dir; a dispatcher killed with -9 leaves work that the next one resumes."""

from __future__ import annotations

import os
import subprocess
import sys
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
