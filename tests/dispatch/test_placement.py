"""Placement rules: device kinds, model affinity, one run per content, tasks no slot can ever run."""

from __future__ import annotations

from pathlib import Path

import pytest

from scribefleet.dispatch.placement import Placement
from scribefleet.engines.base import SlotSpec
from scribefleet.engines.base import SlotHandle, SlotStatus
from scribefleet.store import Store, Task


@pytest.fixture
def make(tmp_path: Path):
    store = Store.open(tmp_path)
    batch = store.ensure_batch("b", "plan", {}, None)

    def task(key: str, model: str | None = None, **kwargs) -> Task:
        spec = {"model_id": model} if model else {}
        return store.task(store.add_task(batch, key, "transcribe", spec, **kwargs))

    yield task
    store.close()


def slot(name: str, device: str = "cpu", models: tuple[str, ...] = (), status: SlotStatus = SlotStatus.IDLE) -> SlotHandle:
    return SlotHandle(SlotSpec(name, device), status=status, models=list(models))


def test_a_task_goes_to_the_free_slot_that_already_holds_its_model(make) -> None:
    slots = [slot("cpu0", models=("small",)), slot("cpu1", models=("tiny.en",)), slot("cpu2")]
    a, b = make("a", "large-v3"), make("b", "tiny.en")
    assignments, blocked = Placement(slots, []).assign([a, b])
    # b is warm on cpu1; a loads its model on the slot holding the fewest models (cpu2)
    assert {t.key: s for t, s in assignments} == {"b": "cpu1", "a": "cpu2"} and blocked == 0


def test_no_free_slot_stays_idle_while_ready_work_waits(make) -> None:
    slots = [slot("cpu0", models=("small",)), slot("cpu1", models=("medium",))]
    tasks = [make("a", "tiny.en"), make("b", "tiny.en"), make("c", "tiny.en")]
    assignments, _ = Placement(slots, []).assign(tasks)
    assert [t.key for t, _ in assignments] == ["a", "b"] and {s for _, s in assignments} == {"cpu0", "cpu1"}


def test_resources_decide_which_slots_may_run_a_task(make) -> None:
    gpu_task, cpu_task = make("g", resources="gpu"), make("c", resources="cpu")
    mixed = [slot("gpu0", "cuda"), slot("cpu0")]
    assignments, _ = Placement(mixed, []).assign([gpu_task, cpu_task])
    assert {t.key: s for t, s in assignments} == {"g": "gpu0", "c": "cpu0"}
    assert Placement([slot("cpu0")], []).assign([gpu_task])[0] == []
    # a machine of GPU slots only still runs cpu tasks (else they would wait forever)
    assert Placement([slot("gpu0", "cuda")], []).assign([cpu_task])[0] == [(cpu_task, "gpu0")]


def test_two_tasks_with_the_same_content_never_run_at_once(make) -> None:
    first, second, other = make("a", content_key="k1"), make("b", content_key="k1"), make("c", content_key="k2")
    assignments, blocked = Placement([slot("cpu0"), slot("cpu1"), slot("cpu2")], []).assign([first, second, other])
    assert [t.key for t, _ in assignments] == ["a", "c"] and blocked == 1


def test_gpu_tasks_fail_with_the_preflight_error_when_no_gpu_slot_is_left(make) -> None:
    failed_gpu = slot("gpu0", "cuda", status=SlotStatus.FAILED)
    failed_gpu.error = {"code": "CUDA_UNAVAILABLE", "message": "libcublas.so.12 not found"}
    gpu_task, any_task = make("g", resources="gpu"), make("a")
    impossible = Placement([failed_gpu, slot("cpu0")], []).impossible([gpu_task, any_task])
    assert [(t.key, e["code"], e["message"]) for t, e in impossible] == [("g", "CUDA_UNAVAILABLE", "libcublas.so.12 not found")]
    assert Placement([slot("gpu0", "cuda", status=SlotStatus.STARTING)], []).impossible([gpu_task]) == []
    everything = Placement([failed_gpu], []).impossible([gpu_task, any_task])
    assert [t.key for t, _ in everything] == ["g", "a"]


def test_remote_tasks_only_on_remote_places_least_loaded_worker_first(make, tmp_path: Path) -> None:
    def remote(name: str, group: str, models: tuple[str, ...] = (), status: SlotStatus = SlotStatus.IDLE) -> SlotHandle:
        return SlotHandle(SlotSpec(name, "remote"), status=status, models=list(models), group=group)  # type: ignore[arg-type]

    slots = [slot("cpu0"), remote("r0-0", "r0", ("tiny.en",), SlotStatus.BUSY), remote("r0-1", "r0", ("tiny.en",)),
             remote("r1-0", "r1"), remote("r1-1", "r1"), remote("r2-0", "r2"), remote("r2-1", "r2")]
    local = make("local", "tiny.en")
    jobs = [make(f"remote{i}", "tiny.en") for i in range(3)]
    store = Store.open(tmp_path)
    for t in jobs:  # what add_transcribe_task(remote=True) writes
        store.revise_task(t.id, {**t.spec, "remote": True}, content_key=None)
    jobs = [store.task(t.id) for t in jobs]
    assignments, _ = Placement(slots, []).assign([local, *jobs])
    where = {t.key: s for t, s in assignments}
    assert where["local"] == "cpu0"
    # r0 holds the model but is half busy: the idle workers r1 and r2 get one each first; then all three are
    # half busy and the one holding the model wins
    assert {where["remote0"][:2], where["remote1"][:2]} == {"r1", "r2"}
    assert where["remote2"] == "r0-1"
    store.close()
