"""ThreadEngine: slots as threads of this process, running `shell` and `noop` tasks.

The second implementation of `engines.base.Engine`, beside the local one, and
the proof that the dispatcher needs nothing else: the dispatcher's own tests
run on both. A slot is a record here, not a process; each task runs in a
thread of its own and reports through a queue that `poll()` reads, so the
events are the ones a slot process sends (ready, heartbeat, progress, done,
failed, died). A shell command leads its own process group (a thread cannot
be killed, a group can), and `kill()` SIGKILLs that group and returns once
all of it is gone, like the local engine. Events of a killed attempt that
arrive later are dropped. Slots cannot hang, so none is ever silent; models
are never loaded, so `transcribe` and the other kinds are refused.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scribefleet.config import Settings
from scribefleet.engines.base import Engine, SlotEvent, SlotHandle, SlotSpec, SlotStatus, TaskRun
from scribefleet.engines.local import GROUP_EXIT_WAIT_S, open_group, wait_gone
from scribefleet.errors import ScribefleetError, TaskError
from scribefleet.worker.kinds import TaskContext
from scribefleet.worker.shell import run_shell

log = logging.getLogger("scribefleet.engine")


def run_noop(spec: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Handler of the `noop` kind: does nothing and succeeds."""
    ctx.progress("run", 1.0, None)
    return {}


KINDS = {"shell": run_shell, "noop": run_noop}


class _Attempt:
    """One task running in a thread, and the process group of its command (for kill)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pgid: int | None = None
        self.killed = False
        self.finished = threading.Event()

    def spawned(self, pid: int) -> None:
        with self._lock:
            self.pgid = pid
            if self.killed:  # killed before its command started: the command goes at once
                _killpg(pid)

    def kill(self) -> None:
        """SIGKILL the command's group and wait until the thread and every process of the group are done."""
        with self._lock:
            self.killed, pgid = True, self.pgid
            members = {}
            if pgid is not None:
                _killpg(pgid)
                members = open_group(pgid)
        self.finished.wait(GROUP_EXIT_WAIT_S)
        left = wait_gone(members, GROUP_EXIT_WAIT_S)
        if left or not self.finished.is_set():
            log.warning("a killed thread task left processes %s (its thread finished: %s)", left, self.finished.is_set())


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class ThreadSlot(SlotHandle):
    """A slot as a record: what it runs now, and which of its starts the events in the queue belong to."""

    generation: int = 0  # bumped by every start and kill; older events are dropped
    attempt: _Attempt | None = None
    next_heartbeat_at: float = 0.0


class ThreadEngine(Engine):
    """Hosts slots as threads of this process; runs `shell` and `noop` tasks."""

    def __init__(self, settings: Settings, state_dir: Path, slots: list[SlotSpec]) -> None:
        if len({s.name for s in slots}) != len(slots):
            raise ValueError("slot names must be unique")
        self.settings = settings
        self.state_dir = Path(state_dir)
        self._slots = {s.name: ThreadSlot(s) for s in slots}
        self._inbox: queue.Queue[tuple[str, int, dict[str, Any]]] = queue.Queue()
        self._started = False

    @property
    def slots(self) -> list[ThreadSlot]:
        return list(self._slots.values())

    def slot(self, name: str) -> ThreadSlot:
        return self._slots[name]

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for h in self._slots.values():
            self._spawn(h)

    def _spawn(self, h: ThreadSlot) -> None:
        h.generation += 1
        h.starting()
        h.attempt = None
        h.next_heartbeat_at = h.started_at + self.settings.heartbeat_s
        log.info("slot %s starting on %s (a thread of pid %d)", h.name, h.device, os.getpid())
        self._inbox.put((h.name, h.generation, {"ev": "ready", "slot": h.name, "device": h.device, "models": []}))

    def stop(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        for h in self._slots.values():
            if h.attempt is not None and not h.attempt.finished.wait(max(0.0, deadline - time.monotonic())):
                log.warning("slot %s did not stop within %.0f s; killing its task", h.name, timeout_s)
            self.kill(h.name)
        self._started = False

    # -- work ----------------------------------------------------------------

    def assign(self, name: str, run: TaskRun) -> bool:
        h = self._slots[name]
        if h.status is not SlotStatus.IDLE:
            raise RuntimeError(f"slot {name} is {h.status.value}, not idle")
        h.status, h.task_id, h.attempt = SlotStatus.BUSY, str(run["task_id"]), _Attempt()
        args = (h.name, h.generation, h.spec, h.attempt, dict(run))
        threading.Thread(target=self._work, args=args, name=f"slot-{name}", daemon=True).start()
        return True

    def kill(self, name: str) -> SlotEvent | None:
        h = self._slots[name]
        if not h.status.is_alive:
            return None
        task_id, was = h.task_id, h.status
        if h.attempt is not None:
            h.attempt.kill()
        h.generation += 1
        h.status, h.task_id, h.attempt = SlotStatus.DEAD, None, None
        return SlotEvent(name, "died", task_id=task_id, signal=int(signal.SIGKILL), tasks_done=h.tasks_done, was=was.value)

    def _work(self, name: str, generation: int, spec: SlotSpec, attempt: _Attempt, run: dict[str, Any]) -> None:
        """The thread of one attempt: run the kind's handler, report like a slot process does."""
        task_id = str(run["task_id"])

        def progress(stage: str, fraction: float, extra: dict[str, Any] | None = None) -> None:
            if extra and "pid" in extra and attempt.pgid is None:
                attempt.spawned(int(extra["pid"]))  # the command leads its own group
            message = {"ev": "progress", "task_id": task_id, "stage": stage, "percent": round(100.0 * fraction, 2)}
            message.update(_plain({k: v for k, v in (extra or {}).items() if k not in message}))
            self._inbox.put((name, generation, message))

        ctx = TaskContext(
            task_id=task_id, slot_name=name, device=spec.device, cpu_threads=spec.cpu_threads,
            log_path=Path(run["log_path"]), settings=self.settings, progress=progress,
            attempt=int(run.get("attempt", 1)), own_process_group=True,
        )  # fmt: skip
        kind = str(run.get("kind"))
        try:
            handler = KINDS.get(kind)
            if handler is None:
                raise TaskError(f"the thread engine runs {', '.join(sorted(KINDS))} tasks, not {kind!r}", kind=kind)
            reply = {"ev": "done", "task_id": task_id, "result": _plain(handler(dict(run.get("spec") or {}), ctx) or {})}
        except ScribefleetError as err:
            reply = {"ev": "failed", "task_id": task_id, **_plain(err.to_dict()), "retryable": err.retryable}
        except Exception as exc:  # noqa: BLE001 - any bug in a handler fails the task, not the engine
            details = {"traceback": traceback.format_exc().splitlines()[-15:]}
            message = f"{type(exc).__name__}: {exc} (slot {name})"
            reply = {"ev": "failed", "task_id": task_id, "code": "INTERNAL_ERROR", "retryable": False,
                     "message": message, "details": details}  # fmt: skip
        self._inbox.put((name, generation, reply))
        attempt.finished.set()

    # -- events --------------------------------------------------------------

    def poll(self, timeout_s: float) -> list[SlotEvent]:
        events = self._heartbeats()
        beats = [h.next_heartbeat_at for h in self._slots.values() if h.status in (SlotStatus.IDLE, SlotStatus.BUSY)]
        if events:
            timeout_s = 0.0
        elif beats:  # wake up in time for the next heartbeat
            timeout_s = min(timeout_s, max(0.0, min(beats) - time.monotonic()))
        try:
            item = self._inbox.get(timeout=max(0.0, timeout_s)) if timeout_s > 0 else self._inbox.get_nowait()
            while True:
                if (event := self._on_message(*item)) is not None:
                    events.append(event)
                item = self._inbox.get_nowait()
        except queue.Empty:
            pass
        return events + self._heartbeats()

    def _on_message(self, name: str, generation: int, msg: dict[str, Any]) -> SlotEvent | None:
        h = self._slots[name]
        if generation != h.generation:
            return None  # from an attempt killed meanwhile
        ev = str(msg.get("ev"))
        h.heard(ev, msg)
        if h.task_id is None:
            h.attempt = None
        return SlotEvent(name, ev, msg, task_id=msg.get("task_id") or h.task_id)

    def _heartbeats(self) -> list[SlotEvent]:
        """What a slot process's heartbeat thread would have sent by now (one per slot at most)."""
        now, events = time.monotonic(), []
        for h in self._slots.values():
            if h.status in (SlotStatus.IDLE, SlotStatus.BUSY) and now >= h.next_heartbeat_at:
                h.next_heartbeat_at, h.last_heard_at = now + self.settings.heartbeat_s, now
                events.append(SlotEvent(h.name, "heartbeat", {"ev": "heartbeat", "task_id": h.task_id}, task_id=h.task_id))
        return events


def _plain(value: Any) -> Any:
    """JSON-safe copy, as a slot process sends it (Paths become strings)."""
    return json.loads(json.dumps(value, default=str))
