"""Lending rules: how many slots a transcription may count on, which free slots are lent, when lending stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from scribefleet.dispatch.lending import Lending, Load
from scribefleet.engines.base import SlotEvent, SlotHandle, SlotSpec, SlotStatus
from scribefleet.store import Store, Task


@pytest.fixture
def make(tmp_path: Path):
    store = Store.open(tmp_path)
    batch = store.ensure_batch("b", "plan", {}, None)

    def task(key: str, kind: str = "transcribe", audio_s: float | None = None) -> Task:
        spec = {"run": "true"} if kind == "shell" else {"input_path": f"/in/{key}.wav", "work_dir": f"/w/{key}"}
        task_id = store.add_task(batch, key, kind, spec)
        store.note_audio_s(task_id, audio_s)  # its header's length, as jobs/create.py records it
        return store.task(task_id)

    yield task
    store.close()


def slot(name: str, device: str = "cpu", status: SlotStatus = SlotStatus.IDLE, task_id: str | None = None) -> SlotHandle:
    return SlotHandle(SlotSpec(name, device), status=status, task_id=task_id)


def test_a_transcription_counts_the_idle_and_starting_slots_of_its_device_less_waiting_work(make) -> None:
    lending, long = Lending(), make("long")
    slots = [slot("cpu0"), slot("cpu1", status=SlotStatus.STARTING), slot("cpu2"), slot("gpu0", "cuda"),
             slot("r0", "remote"), slot("cpu3", status=SlotStatus.BUSY)]
    assert lending.spread_slots(long, slots[0], slots, {"cpu0"}, waiting=0) == 3  # itself, cpu1, cpu2
    assert lending.spread_slots(long, slots[0], slots, {"cpu0"}, waiting=1) == 2  # queued work comes first
    assert lending.spread_slots(long, slots[0], slots, {"cpu0", "cpu2"}, waiting=0) == 1  # one spare, two takers
    assert lending.spread_slots(make("sh", "shell"), slots[0], slots, {"cpu0"}, waiting=0) == 1
    assert lending.spread_slots(long, slots[4], slots, {"r0"}, waiting=0) == 1, "a remote place shares no files"
    assert Lending(enabled=False).spread_slots(long, slots[0], slots, {"cpu0"}, waiting=0) == 1


def test_a_long_file_counts_the_slots_whose_work_ends_before_it(make) -> None:
    """One two-hour file and thirty short ones on four slots: the short ones hold the other three slots (or
    are still waiting) for minutes, so the plan is cut for all four; a slot with work as long as the file, or
    of unknown length, or the thirty files' audio counted as a whole, does not come."""
    lending, long = Lending(), make("long", audio_s=7200.0)
    slots = [slot("cpu0", status=SlotStatus.BUSY), slot("cpu1", status=SlotStatus.BUSY),
             slot("cpu2", status=SlotStatus.STARTING), slot("cpu3", status=SlotStatus.BUSY), slot("gpu0", "cuda"),
             slot("cpu4", status=SlotStatus.FAILED)]  # fmt: skip
    taken = {"cpu0", "cpu1", "cpu3"}  # this round: the long file on cpu0, groups of short files on cpu1 and cpu3
    load = Load({"cpu0": 7200.0, "cpu1": 8 * 20.0, "cpu3": 8 * 20.0}, waiting_s=[20.0] * 14)
    assert lending.spread_slots(long, slots[0], slots, taken, waiting=14) == 1  # without the load: no idle slot
    assert lending.spread_slots(long, slots[0], slots, taken, waiting=14, load=load) == 4
    assert lending.spread_slots(long, slots[0], slots, taken, 14, Load({**load.busy_s, "cpu1": 7200.0}, [])) == 3
    assert lending.spread_slots(long, slots[0], slots, taken, 14, Load({**load.busy_s, "cpu1": None}, [])) == 3
    assert lending.spread_slots(long, slots[0], slots, taken, 14, Load(load.busy_s, [20.0] * 14 + [7200.0])) == 3
    assert lending.spread_slots(long, slots[0], slots, taken, 14, Load(load.busy_s, [None, None])) == 2
    assert lending.spread_slots(long, slots[0], slots, taken, 14, Load(load.busy_s, [], long_placed=2)) == 2
    # a file under the long threshold keeps the rule of the idle slots
    short = make("short", audio_s=300.0)
    assert lending.spread_slots(short, slots[1], slots, taken, waiting=14, load=load) == 1


def test_free_slots_of_the_owners_device_are_lent_until_a_helper_finds_nothing_left(make) -> None:
    lending, long = Lending(), make("long")
    owner = slot("cpu0", status=SlotStatus.BUSY, task_id=long.id)
    lending.offer(long, owner, {"work_dir": "/w/long-content", "windows": 4}, "/logs/long.log")
    free = [slot("cpu1"), slot("gpu0", "cuda"), slot("r0", "remote")]
    ((name, run),) = lending.lend(free, {"cpu0": long.id})
    assert name == "cpu1" and run["kind"] == "window" and run["spec"]["work_dir"] == "/w/long-content"
    assert run["spec"]["input_path"] == long.spec["input_path"] and lending.helpers[run["task_id"]].owner_id == long.id

    busy = {"cpu0": long.id, "cpu1": run["task_id"]}
    done = SlotEvent("cpu1", "done", {"result": {"window": 1}}, task_id=run["task_id"])
    assert lending.helper_event(done) is not None and not lending.helpers
    ((_, again),) = lending.lend([slot("cpu1")], busy | {"cpu1": None})  # it took a window: lent again
    nothing = SlotEvent("cpu1", "done", {"result": {"window": None}}, task_id=again["task_id"])
    lending.helper_event(nothing)
    assert lending.lend([slot("cpu1")], {"cpu0": long.id}) == [], "no window left: the slot stays free"


def test_a_failed_helper_ends_the_lending_and_the_owners_end_names_its_helpers(make) -> None:
    lending, long = Lending(), make("long")
    lending.offer(long, slot("cpu0", status=SlotStatus.BUSY), {"work_dir": "/w/x", "windows": 8}, "/l")
    runs = lending.lend([slot("cpu1"), slot("cpu2"), slot("cpu3")], {})
    assert [name for name, _ in runs] == ["cpu1", "cpu2", "cpu3"]
    busy = {name: run["task_id"] for name, run in runs}
    lending.helper_event(SlotEvent("cpu1", "failed", {"code": "OUT_OF_MEMORY"}, task_id=busy["cpu1"]))
    assert lending.lend([slot("cpu1")], busy) == [], "the owner decodes what a failing helper held"
    assert sorted(lending.withdraw(long.id)) == ["cpu2", "cpu3"]
    assert lending.withdraw(long.id) == []


def test_helpers_whose_slot_was_killed_meanwhile_are_forgotten(make) -> None:
    lending, long = Lending(), make("long")
    lending.offer(long, slot("cpu0", status=SlotStatus.BUSY), {"work_dir": "/w/x", "windows": 3}, "/l")
    ((_, run),) = lending.lend([slot("cpu1")], {})
    assert lending.lend([], {"cpu1": None}) == [] and run["task_id"] not in lending.helpers  # hung, killed
    assert [name for name, _ in lending.lend([slot("cpu1")], {})] == ["cpu1"]
