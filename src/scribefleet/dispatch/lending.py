"""Lending free slots to a long transcription, so its windows are decoded on every free slot (pipeline/spread.py).

A transcription's slot (the owner) announces, in a progress message, a plan
other slots may help with: {"spread": {"work_dir", "windows"}}. From then on,
whenever a slot is free and no ready task can use it (queued work first: the
dispatcher lends only what placement left over), the slot is lent: it gets a
*helper run*, kind "window", with the owner's spec and work dir, and decodes
one window. A helper run is no stored task: it is tracked here, never changes
task state, and its end (done, failed or died) only frees the slot again. A
helper that took no window (none left) or failed ends the lending to that job;
the owner decodes whatever a failed or dead helper held.

How many slots a plan is cut for (`spread_slots`, when the task is placed): a
file's slot plus the slots of its device kind left idle this round, less the
ready tasks left waiting. A *long* file (`pipeline.spread_plan.is_long`, by its
length from the header or the decode; such a file is never grouped) counts
further ahead, since short work ends long before it: each other slot of its
device kind for the part of the file's length that the work it holds leaves
(work of unknown length: none), less the audio of the ready tasks left waiting
(unknown: a whole file's worth), in units of the file's length (`Load`). So one
two-hour file among thirty short ones on four slots is planned for four: the
short files decode in groups on three slots first, then those slots are lent
to its windows.

Slots are lent only on the owner's device kind (a CPU helper would make a GPU
job wait for its window) and never on a remote worker's places, which do not
share the filesystem (a Ray cluster needs a shared one anyway). When the owner
is canceled its helpers are killed; when it ends otherwise the lending stops
and running helpers finish their window (a retried owner reuses it).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from scribefleet.engines.base import SlotEvent, SlotHandle, SlotStatus, TaskRun
from scribefleet.pipeline.spread_plan import is_long
from scribefleet.store.models import Task
from scribefleet.worker.kinds import WINDOW_KIND

log = logging.getLogger("scribefleet.dispatch")


@dataclass
class Offer:
    """A running transcription that other slots may help: its plan's work dir and windows."""

    task: Task
    device: str  # the owner's slot's device kind: helpers only on the same
    work_dir: str
    windows: int
    log_path: str
    helpers: set[str] = field(default_factory=set)  # helper run ids now running
    closed: bool = False  # no window left to take, or a helper failed: lend no more


@dataclass
class Helper:
    """One helper run: which owner it helps and on which slot."""

    id: str
    owner_id: str
    slot: str


@dataclass(frozen=True)
class Load:
    """The work around one placement round, in audio seconds (None: of unknown length), for a long file's plan."""

    busy_s: dict[str, float | None]  # slot name -> the audio of the tasks it runs or was just given
    waiting_s: list[float | None]  # each ready task left waiting
    long_placed: int = 1  # long transcriptions placed this round: they share the slots to come


def lendable(slot: SlotHandle) -> bool:
    """A slot that may ever be lent: on this filesystem (not a remote worker's place)."""
    return slot.device != "remote"


class Lending:
    """The dispatcher's book of offers and helper runs."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.offers: dict[str, Offer] = {}
        self.helpers: dict[str, Helper] = {}
        self._ids = itertools.count(1)

    def spread_slots(self, task: Task, slot: SlotHandle, slots: Sequence[SlotHandle], taken: set[str], waiting: int,
                     load: Load | None = None) -> int:
        """How many slots a transcription just placed on `slot` may count on (its window plan's size).

        Itself, plus the slots of its device kind that stay idle after this round's placement
        (`taken`: the slots it filled) or are still starting, less the ready tasks left `waiting`
        (they come first), shared among the tasks placed this round. A long file with the round's
        `load`: itself plus the slots to come (`_to_come`).
        """
        if not self.enabled or task.kind != "transcribe" or not lendable(slot):
            return 1
        if load is not None and task.audio_s is not None and is_long(task.audio_s):
            return 1 + self._to_come(task.audio_s, slot, slots, load)
        spare = sum(
            1 for h in slots
            if h.name not in taken and lendable(h) and h.device == slot.device
            and h.status in (SlotStatus.IDLE, SlotStatus.STARTING)
        )  # fmt: skip
        return 1 + max(0, spare - waiting) // max(1, len(taken))

    @staticmethod
    def _to_come(length_s: float, slot: SlotHandle, slots: Sequence[SlotHandle], load: Load) -> int:
        """Other slots of `slot`'s device kind that will be free to help a file of `length_s` before it ends:
        the time each has left over once its work is done, less the waiting work, in units of `length_s`."""
        free_s = 0.0
        for h in slots:
            if h.name == slot.name or not lendable(h) or h.device != slot.device or h.status is SlotStatus.FAILED:
                continue
            busy_s = load.busy_s.get(h.name, 0.0)
            if busy_s is not None:
                free_s += max(0.0, length_s - busy_s)
        free_s -= sum(length_s if s is None else s for s in load.waiting_s)
        return max(0, round(free_s / length_s / max(1, load.long_placed)))

    def offer(self, task: Task, slot: SlotHandle, spread: dict[str, Any], log_path: str) -> None:
        """The owner announced its plan: lend it slots from now on."""
        if not self.enabled or task.id in self.offers or not spread.get("work_dir"):
            return
        windows = int(spread.get("windows") or 0)
        self.offers[task.id] = Offer(task, slot.device, str(spread["work_dir"]), windows, log_path)
        log.info("task %s: %d windows may be spread over free slots", task.key, windows)

    def lend(self, free: Iterable[SlotHandle], busy_task: dict[str, str | None]) -> list[tuple[str, TaskRun]]:
        """Helper runs for the free slots left after placement: (slot name, run) pairs to assign.

        `busy_task` maps each slot to the task id its engine says it runs, so helpers
        whose slot was killed meanwhile (hung) are forgotten.
        """
        for helper in [h for h in self.helpers.values() if busy_task.get(h.slot) != h.id]:
            self._forget(helper)
        runs: list[tuple[str, TaskRun]] = []
        for slot in free:
            offer = self._pick(slot)
            if offer is None:
                continue
            helper = Helper(f"{offer.task.id}~window{next(self._ids)}", offer.task.id, slot.name)
            self.helpers[helper.id] = helper
            offer.helpers.add(helper.id)
            spec = {**offer.task.spec, "work_dir": offer.work_dir}
            runs.append((slot.name, TaskRun(task_id=helper.id, kind=WINDOW_KIND, spec=spec, attempt=1,
                                            log_path=offer.log_path)))  # fmt: skip
            log.debug("slot %s lent to task %s (helper %s)", slot.name, offer.task.key, helper.id)
        return runs

    def _pick(self, slot: SlotHandle) -> Offer | None:
        """The open offer on this slot's device with the fewest helpers (an owner decodes a window itself)."""
        if not lendable(slot):
            return None
        open_ = [o for o in self.offers.values() if not o.closed and o.device == slot.device
                 and len(o.helpers) < o.windows - 1]  # fmt: skip
        return min(open_, key=lambda o: len(o.helpers), default=None)

    def helper_event(self, event: SlotEvent) -> Helper | None:
        """The helper run an event is about, ended (and forgotten) when it is a done, failed or died."""
        helper = self.helpers.get(event.task_id or "")
        if helper is None or event.type not in ("done", "failed", "died"):
            return helper
        self._forget(helper)
        offer = self.offers.get(helper.owner_id)
        if event.type == "done":
            window = (event.message.get("result") or {}).get("window")
            if window is None and offer is not None:
                offer.closed = True  # nothing left to take
            log.debug("helper %s on %s finished window %s", helper.id, helper.slot, window)
        elif offer is not None:
            offer.closed = True  # the owner decodes what it held; a failing helper is not tried again
            what = event.how if event.type == "died" else f"[{event.message.get('code')}] {event.message.get('message')}"
            log.warning("slot %s helping task %s %s; the task's own slot decodes its window",
                        helper.slot, offer.task.key, what if event.type == "failed" else f"died ({what})")  # fmt: skip
        return helper

    def withdraw(self, task_id: str) -> list[str]:
        """The owner ended or was stopped: no more lending; returns the slots its helpers still run on."""
        offer = self.offers.pop(task_id, None)
        if offer is None:
            return []
        return [self.helpers[h].slot for h in offer.helpers if h in self.helpers]

    def _forget(self, helper: Helper) -> None:
        self.helpers.pop(helper.id, None)
        offer = self.offers.get(helper.owner_id)
        if offer is not None:
            offer.helpers.discard(helper.id)
