"""Placement: which free slot gets which ready task.

The rules, in order:
  * resources: a remote task (spec "remote") only on a remote worker's place, and no other
    task there; a "gpu" task only on a cuda slot; a "cpu" task on a CPU slot
    (on any slot when the engine has no CPU slot, so it can never starve);
    "any" anywhere;
  * never two tasks with the same content_key at once (the second would
    redo the first's work; it waits and then finds the result);
  * model-affine: a task whose model (spec "model_id") a free slot already
    holds goes there first; the others take any free slot, preferring slots
    with the fewest models loaded, so warm slots stay free for their models;
  * remote tasks go to the least loaded worker (busy places / places of the
    slot's `group`), and among equals to one that holds their model;
  * no slot stays idle while a task it may run is ready.
A task no usable slot can ever run (a gpu task when every cuda slot failed its
preflight, anything when every slot is given up) is reported as impossible,
with the error it should fail with, instead of waiting forever.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from scribefleet.dispatch.monitor import RunningTask
from scribefleet.engines.base import SlotHandle, SlotStatus
from scribefleet.errors import CudaUnavailable, SlotCrashed
from scribefleet.store.models import Task


class Placement:
    """One round of matching ready tasks to free slots."""

    def __init__(self, slots: Sequence[SlotHandle], running: Iterable[RunningTask]) -> None:
        self.slots = slots
        self.usable = [h for h in slots if h.status is not SlotStatus.FAILED]
        self.free = [h for h in slots if h.is_free]
        self.has_cpu = any(h.device == "cpu" for h in self.usable)
        self.has_gpu = any(h.device == "cuda" for h in self.usable)
        self.content_busy = {r.task.content_key for r in running if r.task.content_key}
        self.group_size: Counter[str] = Counter(h.group for h in self.usable if h.group)
        self.group_busy: Counter[str] = Counter(h.group for h in slots if h.group and h.status is SlotStatus.BUSY)

    def eligible(self, task: Task, slot: SlotHandle) -> bool:
        if bool(task.spec.get("remote")) != (slot.device == "remote"):
            return False  # remote tasks only on remote workers' places, and nothing else there
        if task.resources == "gpu":
            return slot.device == "cuda"
        if task.resources == "cpu":
            return slot.device == "cpu" or not self.has_cpu
        return True

    def _failed_error(self, device: str | None) -> dict[str, Any] | None:
        return next((h.error for h in self.slots if h.error and (device is None or h.device == device)), None)

    def impossible(self, queued: Iterable[Task]) -> list[tuple[Task, dict[str, Any]]]:
        """Queued tasks that no slot can ever run, each with the error to fail it with."""
        if not self.usable:
            error = self._failed_error(None) or {
                "code": SlotCrashed.code,
                "message": "no slot could be started; see the slot-*.stderr files in the state dir's logs/",
            }
            return [(t, error) for t in queued]
        if self.has_gpu:
            return []
        gpu_tasks = [t for t in queued if t.resources == "gpu"]
        if not gpu_tasks:
            return []
        error = self._failed_error("cuda") or {
            "code": CudaUnavailable.code,
            "message": "the task needs a GPU but no GPU slot is running; run it with --device cpu "
            "or on a machine whose GPU 'scribefleet doctor' accepts",
        }
        return [(t, error) for t in gpu_tasks]

    def _prefers(self, task: Task, slot: SlotHandle) -> tuple[float, int]:
        """Sort key among eligible free slots: fewest models loaded, then the right device.

        A remote worker's place: the least loaded worker, then one that holds the model.
        """
        if slot.group:
            return self.group_busy[slot.group] / max(1, self.group_size[slot.group]), int(task.model_id not in slot.models)
        wants_gpu = task.resources == "gpu" or (task.resources == "any" and task.model_id is not None)
        return len(slot.models), int((slot.device == "cuda") != wants_gpu)

    def assign(self, ready: Iterable[Task]) -> tuple[list[tuple[Task, str]], int]:
        """(task, slot name) pairs to start now, and how many ready tasks wait for their content."""
        free, busy = list(self.free), set(self.content_busy)
        assignments: list[tuple[Task, str]] = []
        pending, blocked = [], 0
        for task in ready:
            if task.content_key and task.content_key in busy:
                blocked += 1
            else:
                pending.append(task)

        def take(task: Task, slot: SlotHandle) -> None:
            assignments.append((task, slot.name))
            free.remove(slot)
            if slot.group:
                self.group_busy[slot.group] += 1
            if task.content_key:
                busy.add(task.content_key)

        rest = []
        for task in pending:  # first pass: tasks whose model a free slot already holds
            warm = next((s for s in free if task.model_id in s.models and self.eligible(task, s)), None)
            if task.model_id and warm is not None and task.content_key not in busy and not warm.group:
                take(task, warm)
            else:
                rest.append(task)
        for task in rest:  # second pass: any eligible free slot
            if not free:
                break
            if task.content_key and task.content_key in busy:
                blocked += 1
                continue
            candidates = [s for s in free if self.eligible(task, s)]
            if candidates:
                take(task, min(candidates, key=lambda s: self._prefers(task, s)))
        return assignments, blocked
