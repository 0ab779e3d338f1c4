"""What an engine must do: the one contract between the dispatcher and every engine.

An engine hosts *slots* (a process on this machine, a thread, a job slot on a
remote worker, a Ray actor) and runs one task at a time on each. The
dispatcher knows engines only through `Engine` below and the value types of
this module; it never imports an engine's own module. Only the dispatcher
changes task state: an engine runs what it is given and reports.

An engine must:

* **host slots** - `slots` lists a `SlotHandle` per slot, names unique within
  the engine (a remote engine may put the host in the name), each with its
  `SlotStatus`, the task it runs, the models it holds, the node it runs on
  when remote and, when FAILED, the error that says why;
* **start and stop** - `start()` starts every slot (ready comes later, as a
  "ready" event); `stop()` stops them all; `restart(name)` starts a dead slot
  again and returns False (the slot FAILED) when it keeps dying before ready;
* **run a task on a slot** - `assign(name, run)` hands a `TaskRun` to an IDLE
  slot, which becomes BUSY; False when the slot is gone (its death follows as
  an event);
* **run a group** (only an engine whose `runs_groups` is True: its slots share
  this machine's files and run `worker.slot.Slot`) - a `TaskRun` may carry
  other transcribe tasks' runs as `members` (dispatch/groups.py); the slot runs
  them all at once (worker/group.py) and reports each under its own task id:
  progress, then done or failed per member, the lead's (`run["task_id"]`)
  last. The slot is IDLE again only at the lead's done or failed; a death,
  kill or hang ends every member's attempt;
* **cancel** - `kill(name)` stops the slot and whatever its task started,
  returns only once all of it is gone (a retry must never overlap a leftover),
  and returns the death as a "died" `SlotEvent`;
* **report through `poll()`** - `poll(timeout_s)` blocks up to `timeout_s` and
  returns `SlotEvent`s in arrival order (types below); it is the only way
  news reaches the dispatcher, and the dispatcher calls it from one thread;
* **report health and capacity** - a slot's status and error, `capacity()`,
  and `silent_slots(after_s)` / `next_silence_at(after_s)` for ready slots that
  stopped sending heartbeats (hung); an engine whose slots cannot hang returns
  none.

Event types (`SlotEvent.type`, the slot's own message in `SlotEvent.message`):

    ready             the slot can take a task ({"models": [...]})
    preflight_failed  it cannot use its device: FAILED ({"code", "message", "details"})
    model_loaded / model_unloaded   {"model": id}
    heartbeat         it is alive ({"task_id": id or None})
    progress          {"task_id", "stage", "percent", "audio_s"?, "spread"?, ...}; "spread":
                      {"work_dir", "windows"} says other slots may now decode the task's
                      windows (dispatch/lending.py lends them runs of kind "window")
    done              {"task_id", "result": {...}}: the slot is IDLE again
    failed            {"task_id", "code", "message", "details", "retryable"}: IDLE again
    died              the slot is gone (exit_code/signal, stderr_tail, was): DEAD
    slots_changed     capacity or health changed otherwise (a remote worker came or
                      went): the dispatcher looks at `slots` again

Any other type is passed on to the dispatcher's listeners and also makes it
look at `slots` again. Engines register by name in `scribefleet.engines`.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, NotRequired, TypedDict

from scribefleet.worker.slot_spec import SlotSpec

__all__ = ["Capacity", "Engine", "SlotEvent", "SlotHandle", "SlotSpec", "SlotStatus", "TaskRun"]

log = logging.getLogger("scribefleet.engine")


class SlotStatus(str, Enum):
    """What a slot is doing, as the engine sees it."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DEAD = "dead"  # exited or killed; restart() brings it back
    FAILED = "failed"  # preflight failed or it kept dying before ready: not restarted

    @property
    def is_alive(self) -> bool:
        return self in (SlotStatus.STARTING, SlotStatus.IDLE, SlotStatus.BUSY)


@dataclass
class SlotHandle:
    """One slot as its engine holds it; engines subclass it to keep their own parts (a process, a thread)."""

    spec: SlotSpec
    status: SlotStatus = SlotStatus.DEAD
    task_id: str | None = None
    models: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None  # {"code", "message", "details"} when FAILED
    started_at: float = 0.0  # time.monotonic() of the last start
    last_heard_at: float = 0.0  # time.monotonic() of the last message (heartbeats included)
    tasks_done: int = 0
    #: the host whose places this slot is one of (a remote worker), so placement spreads work by load
    group: str = ""
    deaths_before_ready: int = 0  # in a row; a "ready" resets it, and restart() gives up at the engine's limit

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def device(self) -> str:
        return self.spec.device

    @property
    def pid(self) -> int | None:
        """The slot's process on this machine, when it has one of its own."""
        return None

    @property
    def node(self) -> str | None:
        """The machine the slot runs on, when that is not this one (a Ray node: "host (ip)")."""
        return None

    @property
    def is_free(self) -> bool:
        return self.status is SlotStatus.IDLE

    def starting(self) -> None:
        """A new start of the slot: STARTING, with no task, models, error or finished tasks yet."""
        self.status, self.task_id, self.models, self.error, self.tasks_done = SlotStatus.STARTING, None, [], None, 0
        self.started_at = self.last_heard_at = time.monotonic()

    def heard(self, ev: str, msg: dict[str, Any]) -> None:
        """What a message of the slot (its "ev" and the message) changes, the same in every engine."""
        self.last_heard_at = time.monotonic()
        if ev == "ready":
            self.status, self.deaths_before_ready = SlotStatus.IDLE, 0
            self.models = list(msg.get("models") or [])
        elif ev == "preflight_failed":
            self.status = SlotStatus.FAILED
            self.error = {k: msg.get(k) for k in ("code", "message", "details")}
        elif ev == "model_loaded" and msg.get("model") not in self.models:
            self.models.append(str(msg.get("model")))
        elif ev == "model_unloaded" and msg.get("model") in self.models:
            self.models.remove(str(msg.get("model")))
        elif ev in ("done", "failed") and msg.get("task_id") == self.task_id:
            self.status, self.task_id = SlotStatus.IDLE, None
            self.tasks_done += ev == "done"


@dataclass
class SlotEvent:
    """A message from a slot (type = its "ev") or its death (type "died")."""

    slot: str
    type: str
    message: dict[str, Any] = field(default_factory=dict)
    task_id: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    stderr_tail: str = ""
    pid: int | None = None  # of the slot process, for deaths
    tasks_done: int = 0  # by this process of the slot, for deaths
    was: str = ""  # for deaths: what the slot was doing (a SlotStatus value)

    @property
    def how(self) -> str:
        """How a slot died, in words: "killed by SIGKILL", "exit code 1"."""
        if self.signal is not None:
            try:
                return f"killed by {signal.Signals(self.signal).name}"
            except ValueError:
                return f"killed by signal {self.signal}"
        return f"exit code {self.exit_code}"


class TaskRun(TypedDict):
    """What `assign` hands a slot: one attempt of one task (a dict, so it crosses any wire as JSON)."""

    task_id: str
    kind: str  # a key of worker.kinds.KINDS ("window": a lent slot's helper run, no stored task)
    spec: dict[str, Any]  # the task's spec as stored
    attempt: int
    log_path: str  # where the task writes its log
    members: NotRequired[list[TaskRun]]  # other tasks run with this one on its slot (runs_groups engines)


@dataclass(frozen=True)
class Capacity:
    """How many slots an engine has, and in what state (FAILED slots are not usable)."""

    total: int
    usable: int
    busy: int
    free: int

    @classmethod
    def of(cls, slots: Sequence[SlotHandle]) -> Capacity:
        usable = [h for h in slots if h.status is not SlotStatus.FAILED]
        return cls(
            total=len(slots),
            usable=len(usable),
            busy=sum(h.status is SlotStatus.BUSY for h in slots),
            free=sum(h.is_free for h in slots),
        )


class Engine(ABC):
    """Hosts slots and runs tasks on them for the dispatcher (see the module docstring)."""

    #: whether a TaskRun may carry `members` (a group of transcribe tasks decoded in shared batches)
    runs_groups: ClassVar[bool] = False

    @property
    @abstractmethod
    def slots(self) -> Sequence[SlotHandle]:
        """Every slot, in a stable order."""

    def slot(self, name: str) -> SlotHandle:
        return next(h for h in self.slots if h.name == name)

    def free_slots(self) -> list[SlotHandle]:
        return [h for h in self.slots if h.is_free]

    def capacity(self) -> Capacity:
        return Capacity.of(self.slots)

    @abstractmethod
    def start(self) -> None:
        """Start every slot (once; later calls do nothing). Ready comes later, as an event."""

    @abstractmethod
    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop every slot, waiting up to `timeout_s` before killing what is left."""

    @property
    def restart_limit(self) -> float:
        """Deaths before ready in a row after which restart() gives up on a slot."""
        return math.inf

    def restart(self, name: str) -> bool:
        """Start a dead slot again; False (and the slot FAILED) when it keeps dying before ready.

        The rule of every engine that starts its own slots (`_spawn`); an engine
        whose slots live elsewhere (a remote worker) overrides it."""
        h = self.slot(name)
        if h.status.is_alive:
            return True
        if h.status is SlotStatus.FAILED:
            return False
        if h.deaths_before_ready >= self.restart_limit:
            h.status = SlotStatus.FAILED
            h.error = {
                "code": "SLOT_CRASHED",
                "message": f"slot {name} died {h.deaths_before_ready} times before it became ready{self._where_to_look(name)}",
                "details": {"slot": name},
            }
            log.error("slot %s given up: %s", name, h.error["message"])
            return False
        self._spawn(h)
        return True

    def _spawn(self, h: Any) -> None:
        """Start the slot `h` (STARTING); engines that start their own slots implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not start slots itself")

    def _where_to_look(self, name: str) -> str:
        """The end of a given-up slot's message: where its deaths are told ("; see FILE")."""
        return ""

    @abstractmethod
    def assign(self, name: str, run: TaskRun) -> bool:
        """Hand a task to an idle slot (now BUSY); False when the slot is gone (its death follows as an event)."""

    @abstractmethod
    def kill(self, name: str) -> SlotEvent | None:
        """Stop the slot and all its task started, now; returns how it died (None when it was not running)."""

    @abstractmethod
    def poll(self, timeout_s: float) -> list[SlotEvent]:
        """Block up to `timeout_s` for events; return them in arrival order."""

    def silent_slots(self, after_s: float) -> list[SlotHandle]:
        """Ready slots (idle or busy) that have sent nothing, not even a heartbeat, for `after_s`."""
        return []

    def next_silence_at(self, after_s: float) -> float | None:
        """When the first ready slot will have been silent for `after_s` (time.monotonic()), if ever."""
        return None
