"""The dispatcher ("the brain"): the only code that changes task state.

One per state directory (flock on dispatcher.lock). It loads the queue from
the store, hands ready tasks (every need complete) to free slots of an engine
(capacity, device kind, model already loaded, never two tasks of the same
content at once), commits `running` before the slot hears of the task, then
follows what the engine reports: progress, results, failures, slot deaths.
It enforces deadlines, kills and restarts slots that stop sending heartbeats
(hung, `slot_silent_after_s`), retries what may succeed again, cancels on
request, and skips the dependents of whatever ends badly (its TaskBook, book.py,
holds the queue and those rules). A task whose write found the disk full goes
back to the queue, and nothing new starts until there is room (space.py). On
an engine that `runs_groups`, other ready transcribe tasks ride along with one
it places (groups.py): each is marked running on that slot, and whatever ends
the slot ends each of them.
Everything it decides is logged (see
monitor.py) and told to listeners as DispatchEvents. The engine is any
`engines.base.Engine`; the dispatcher knows no other part of engines/.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from scribefleet.config import Settings
from scribefleet.dispatch import groups
from scribefleet.dispatch.book import TaskBook
from scribefleet.dispatch.lending import Lending, Load
from scribefleet.dispatch.lock import DispatcherLock
from scribefleet.dispatch.monitor import DispatchEvent, Monitor, RunningTask
from scribefleet.dispatch.placement import Placement
from scribefleet.dispatch.space import MARGIN_BYTES, SpaceWait, is_disk_full
from scribefleet.engines.base import Engine, SlotEvent, SlotHandle, TaskRun
from scribefleet.errors import OutputWriteFailed, SlotCrashed, StateLocked, TaskTimeout
from scribefleet.masking import redact
from scribefleet.pipeline.spread_plan import is_long
from scribefleet.store.models import Task
from scribefleet.store.store import Store

log = logging.getLogger("scribefleet.dispatch")

Listener = Callable[[DispatchEvent], None]


def _audio_s(task: Task, measured_s: float | None = None) -> float | None:
    """The audio seconds of a transcription's work (the decoded length, else the header's); None: unknown."""
    return (measured_s or task.audio_s) if task.kind == "transcribe" else None


class Dispatcher:
    """Runs the tasks of a store on the slots of an engine."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        settings: Settings,
        *,
        listeners: Iterable[Listener] = (),
        lock: DispatcherLock | None = None,
    ) -> None:
        self.store, self.engine, self.settings = store, engine, settings
        self.listeners = list(listeners)
        self.monitor = Monitor(settings)
        # a caller that must change the store before dispatching (re-runs, --force) takes the lock first
        self.lock = lock or DispatcherLock(store.state_dir)
        self._stop = threading.Event()
        self._batch_id: str | None = None
        self.book = TaskBook(store, emit=self._emit)
        self._running: dict[str, RunningTask] = {}
        self._solo: set[str] = set()  # tasks whose group's slot died under them: they run alone (groups.py)
        self._dirty = True
        self.lending = Lending(settings.spread)  # free slots lent to a long file's windows (lending.py)
        self.space_wait: SpaceWait | None = None  # a write found the disk full: nothing new starts (space.py)

    # -- the loop ------------------------------------------------------------

    def run(self, *, burst: bool = True, batch_id: str | None = None) -> None:
        """Dispatch until the queue is idle (burst) or stop() is called.

        With `batch_id`, only that batch's tasks are run (cancel requests are
        honoured for any). The engine is started here, and stopped here before
        the lock goes (`_wind_down`); its owner may stop it again.
        """
        self.lock.acquire()
        try:
            self._batch_id = self.book.batch_id = batch_id
            self.book.recover()
            self.book.load()
            self.engine.start()
            self._loop(burst)
            log.info(self._monitor_line())
        finally:
            try:
                self._wind_down()
            finally:
                self.lock.release()

    def _wind_down(self) -> None:
        """Stop every slot, then put the tasks they were running back in the queue, all before the lock goes:
        a run that takes the state dir next (it may be waiting for it) recovers and dispatches those tasks, and
        must not while a slot of this run still runs one (a Ctrl-C's slots take up to their stop timeout)."""
        left = len(self._running)
        self.engine.stop()
        if left:
            log.info("run stopped with %d task(s) running; their slots are stopped, the tasks queued again", left)
        self._running.clear()
        self.book.recover()  # rows still running are this run's (the lock is held): queued, the attempt not counted

    def cancel(self, target_id: str) -> None:
        """Ask for a batch or task to be canceled; safe from any thread.

        The request is a row in the store; the running dispatcher applies it
        within `cancel_poll_s`, killing a running task's slot.
        """
        self.store.request_cancel(target_id)

    def stop(self) -> None:
        """Ask a non-burst run() to return (thread-safe); running tasks are left to the next run."""
        self._stop.set()

    def _loop(self, burst: bool) -> None:
        next_poll = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_poll:
                self._poll_store()
                next_poll = now + self.settings.cancel_poll_s
            self._check_deadlines(now)
            self._check_silence()
            self._check_space(burst)
            if self._dirty:
                self._dispatch()
            if burst and not self.book.queued and not self._running:
                return
            self.monitor.warn_stuck(self._running.values(), now)
            if self.monitor.due(now):
                log.info(self._monitor_line())
                self._emit("monitor", None, {"line": self._monitor_line()})
            timeout_s = min(self.settings.cancel_poll_s, max(0.0, next_poll - time.monotonic()))
            wake_at = list(self._slot_deadlines().values())
            wake_at.append(self.engine.next_silence_at(self._silent_after_s) or float("inf"))
            timeout_s = min(timeout_s, max(0.0, min(wake_at) - time.monotonic()))
            for event in self.engine.poll(timeout_s):
                self._handle(event)

    @property
    def _silent_after_s(self) -> float:
        # never less than two heartbeats, so a small setting cannot declare healthy slots hung
        return max(self.settings.slot_silent_after_s, 2 * self.settings.heartbeat_s)

    def _emit(self, type_: str, task: Task | None, data: dict[str, Any] | None = None) -> None:
        event = DispatchEvent(type_, task, data or {})
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a broken progress bar must not stop the batch
                log.exception("listener %r failed on %s", listener, type_)

    def _monitor_line(self) -> str:
        counts = self.store.counts(self._batch_id)
        running = list(self._running.values())
        return self.monitor.line(self.engine.slots, self.book.queued.values(), running, counts, time.monotonic())

    # -- loading and the store ------------------------------------------------

    def _poll_store(self) -> None:
        """Pick up tasks added since the last look and honour cancel requests."""
        if self.book.load_new():
            self._dirty = True
        for _, slot in self.book.apply_cancel_requests(self._stop_for_cancel):
            self._dirty = True
            if slot is not None:
                self._restart(slot)

    def _stop_for_cancel(self, task: Task) -> str | None:
        """Kill the slot running a task that is being canceled; returns the slot (None when it was not running)."""
        for helper_slot in self.lending.withdraw(task.id):  # its lent slots stop too
            self.engine.kill(helper_slot)
            self._restart(helper_slot)
        r = self._running.pop(task.id, None)
        if r is None:
            return None
        self.engine.kill(r.slot)
        self._requeue_group(r.slot, f"its slot {r.slot} was killed to cancel task {r.task.key} of its group")
        return r.slot

    # -- dispatching -----------------------------------------------------------

    def _dispatch(self) -> None:
        self._dirty = False
        placement = Placement(self.engine.slots, self._running.values())
        for task, error in placement.impossible(list(self.book.queued.values())):
            if task.id not in self.book.queued:
                continue  # skipped meanwhile, as a dependent of one failed here
            del self.book.queued[task.id]
            task = self.book.set_state(self.store.fail(task.id, error["code"], error["message"], error.get("details")))
            log.error("task %s failed [%s] without running: %s", task.key, error["code"], error["message"])
            self._emit("task_failed", task, {"code": error["code"]})
            self._ended(task.id)
        if not placement.free or (self.space_wait is not None and not self._probing()):
            self._explain_idle()
            return
        # enough ready tasks to fill the free slots (and their groups) with a choice of models; not the whole queue
        per_slot = max(4, self.settings.group_max) if self.engine.runs_groups else 4
        enough = per_slot * len(placement.free) + 8
        ready, waiting = [], 0
        for task in self.book.queued.values():
            if self.book.is_ready(task):
                ready.append(task)
                if len(ready) >= enough:
                    break
            else:
                waiting += 1
        assignments, blocked = placement.assign(ready)
        if self._probing():  # the disk was full: one task alone, to see whether it fits by itself (space.py)
            assignments = assignments[:1]
        members: dict[str, list[Task]] = {}
        if self.engine.runs_groups and not self._probing():
            busy = [r.task.content_key for r in self._running.values() if r.task.content_key]
            # no bigger than a fair share of the ready work, so slots still starting or busy get theirs
            share = -(-len(ready) // max(1, len(placement.usable)))
            members = groups.attach(assignments, ready, busy, min(self.settings.group_max, share), self._solo)
        taken = {slot for _, slot in assignments}
        waiting_ready = len(ready) - len(taken) - sum(len(m) for m in members.values())
        load = self._load(assignments, members, ready) if any(is_long(t.audio_s) for t, _ in assignments) else None
        for task, slot in assignments:
            # a group decodes together on its slot; a task alone may spread its windows over free slots
            spread = 1 if task.id in members else self.lending.spread_slots(
                task, self.engine.slot(slot), self.engine.slots, taken, waiting_ready, load)
            self._start(task, slot, members.get(task.id, ()), spread_slots=spread)
        self._lend([h for h in placement.free if h.name not in taken])
        if not assignments:
            self._explain_idle(waiting, blocked)

    def _load(self, assignments: list[tuple[Task, str]], members: dict[str, list[Task]], ready: list[Task]) -> Load:
        """The audio each slot holds after this round and that of the ready tasks left waiting (lending.Load)."""
        busy_s: dict[str, float | None] = {}

        def hold(slot: str, audio_s: float | None) -> None:
            held = busy_s.get(slot, 0.0)
            busy_s[slot] = None if held is None or audio_s is None else held + audio_s

        for r in self._running.values():
            hold(r.slot, _audio_s(r.task, r.audio_s))
        placed = set()
        for task, slot in assignments:
            for t in (task, *members.get(task.id, ())):
                hold(slot, _audio_s(t))
                placed.add(t.id)
        waiting_s = [_audio_s(t) for t in ready if t.id not in placed]
        long_placed = sum(is_long(t.audio_s) for t, _ in assignments)
        return Load(busy_s, waiting_s, long_placed)

    def _lend(self, free: list[SlotHandle]) -> None:
        """Free slots no ready task can use go to a running long transcription's windows (lending.py)."""
        if not free or not self.lending.offers:
            return
        for slot, run in self.lending.lend(free, {h.name: h.task_id for h in self.engine.slots}):
            owner = self._running.get(self.lending.helpers[run["task_id"]].owner_id)
            data = {"slot": slot, "pid": self.engine.slot(slot).pid, "helper": run["task_id"]}
            self._emit("slot_lent", owner.task if owner else None, data)
            if not self.engine.assign(slot, run):
                self.engine.kill(slot)  # it died under us; it is restarted like any dead slot
                self._restart(slot)

    def _explain_idle(self, waiting: int = 0, blocked: int = 0) -> None:
        """DEBUG: why queued work waits (seed 002: a brain that never says why is undebuggable)."""
        if self.book.queued and log.isEnabledFor(logging.DEBUG):
            running = list(self._running.values())
            self.monitor.idle_reason(list(self.book.queued.values()), waiting, blocked, self.engine.slots, running)

    def _start(self, task: Task, slot: str, members: Iterable[Task] = (), *, spread_slots: int = 1) -> None:
        run = self._begin(task, slot, spread_slots)
        if members:  # decoded together on this slot, each its own attempt (dispatch/groups.py)
            run["members"] = [self._begin(m, slot) for m in members]
        if not self.engine.assign(slot, run):
            event = self.engine.kill(slot)  # it died under us; handled like any crash
            if event is not None:
                event.task_id = task.id
                self._handle(event)

    def _begin(self, task: Task, slot: str, spread_slots: int = 1) -> TaskRun:
        """Mark a task running on a slot (committed before the slot hears of it); returns its run."""
        del self.book.queued[task.id]
        node = self.engine.slot(slot).node  # the machine, for engines whose slots live on others (Ray)
        task = self.book.set_state(self.store.mark_running(task.id, slot, node=node))  # committed before the slot hears
        now = time.monotonic()
        self._running[task.id] = RunningTask(task, slot, now, now + task.timeout_s, now, last_write=now)
        command = f", command: {redact(str(task.spec.get('run')))}" if task.kind == "shell" else ""
        log.info(
            "task %s (%s) dispatched to %s, attempt %d/%d%s",
            task.key, task.kind, slot, task.attempts, task.max_attempts, command,
        )  # fmt: skip
        self._emit("task_dispatched", task, {"slot": slot, "attempt": task.attempts})
        spec = task.spec if spread_slots <= 1 else {**task.spec, "spread_slots": spread_slots}
        return TaskRun(
            task_id=task.id, kind=task.kind, spec=spec, attempt=task.attempts,
            log_path=str(self.store.task_log_path(task)),
        )  # fmt: skip

    # -- what slots report -------------------------------------------------------

    def _handle(self, event: SlotEvent) -> None:
        if event.type in ("progress", "done", "failed", "died") and event.task_id in self.lending.helpers:
            self._on_helper(event)
            return
        handler = {
            "progress": self._on_progress,
            "done": self._on_done,
            "failed": self._on_failed,
            "died": self._on_died,
        }.get(event.type)
        if handler is not None:
            handler(event)
            return
        if event.type == "ready":
            slot = self.engine.slot(event.slot)
            log.info("slot %s ready on %s (pid %s), models: %s", event.slot, slot.device, slot.pid, slot.models or "none")
        elif event.type == "preflight_failed":
            log.error("slot %s failed its preflight [%s]: %s", event.slot, event.message.get("code"), event.message.get("message"))
        elif event.type in ("model_loaded", "model_unloaded"):
            verb = "loaded" if event.type == "model_loaded" else "unloaded"
            models = self.engine.slot(event.slot).models
            log.info("slot %s %s model %s; now holds %s", event.slot, verb, event.message.get("model"), models)
        elif event.type == "heartbeat":
            if log.isEnabledFor(logging.DEBUG):
                log.debug("heartbeat from slot %s (%s)", event.slot, self.book.keys.get(event.task_id or "", "idle"))
                if not self.engine.free_slots():
                    self._explain_idle()  # every slot busy: say so while the queue waits, not only at dispatch time
            return
        self._dirty = True
        self._emit(f"slot_{event.type}" if event.type in ("ready", "preflight_failed") else event.type, None,
                   {"slot": event.slot, **event.message})  # fmt: skip

    def _on_helper(self, event: SlotEvent) -> None:
        """A lent slot's news: its progress keeps the owner from looking stuck; its end frees the slot."""
        helper = self.lending.helper_event(event)
        if helper is None:
            return
        if event.type == "progress":
            owner = self._running.get(helper.owner_id)
            if owner is not None:
                owner.last_moved, owner.stuck_warned = time.monotonic(), False
                data = {k: event.message[k] for k in ("percent", "window") if k in event.message}
                self._emit("window_progress", owner.task, {"slot": event.slot, **data})
            return
        self._dirty = True
        if event.type == "died":
            self._restart(event.slot)

    def _on_progress(self, event: SlotEvent) -> None:
        r = self._running.get(event.task_id or "")
        if r is None or r.slot != event.slot:
            return
        now = time.monotonic()
        if "spread" in event.message:  # the owner's plan: free slots may help from now on
            log_path = str(self.store.task_log_path(r.task))
            self.lending.offer(r.task, self.engine.slot(r.slot), event.message["spread"], log_path)
            self._dirty = True
        stage, percent = event.message.get("stage"), float(event.message.get("percent") or 0.0)
        if stage != r.stage or percent != r.percent:
            r.last_moved, r.stuck_warned = now, False
        new_stage = stage != r.stage
        r.stage, r.percent = stage, percent
        if event.message.get("audio_s"):
            r.extend_for_audio(float(event.message["audio_s"]), self.settings.timeout_per_audio_s)
        if new_stage or now - r.last_write >= self.settings.progress_write_s:
            r.last_write = now
            self.store.record_progress(r.task.id, stage, percent / 100.0, event.message.get("audio_s"))
        data = {k: event.message[k] for k in ("stage", "percent", "audio_s") if k in event.message}
        self._emit("task_progress", r.task, {"slot": r.slot, **data})

    def _on_done(self, event: SlotEvent) -> None:
        r = self._running.pop(event.task_id or "", None)
        if r is None:
            return
        task = self.book.set_state(self.store.complete(r.task.id, event.message.get("result")))
        log.info("task %s completed on %s in %.2f s, attempt %d", task.key, r.slot, time.monotonic() - r.started, task.attempts)
        self._emit("task_completed", task, {"slot": r.slot})
        self._ended(task.id)

    def _on_failed(self, event: SlotEvent) -> None:
        r = self._running.pop(event.task_id or "", None)
        if r is None:
            return
        m = event.message
        code, message = str(m.get("code") or "TASK_FAILED"), str(m.get("message") or "the task failed")
        details = dict(m.get("details") or {})
        if is_disk_full(code, details):
            self._wait_for_space(r, code, message, details)
            return
        self._finish_badly(r, code, message, details, retryable=bool(m.get("retryable")))

    def _on_died(self, event: SlotEvent) -> None:
        group = self._on_slot(event.slot)
        r = next((r for r in group if r.task.id == event.task_id), group[0] if group else None)
        what = f"while running task {r.task.key}, attempt {r.task.attempts}" if r else f"while {event.was or 'idle'}"
        if len(group) > 1:
            what += f" (and {len(group) - 1} more of its group)"
        log.error(
            "slot %s crashed (%s) %s (pid %s, %d tasks completed by this process); stderr tail:\n%s",
            event.slot, event.how, what, event.pid, event.tasks_done, event.stderr_tail or "(empty)",
        )  # fmt: skip
        data = {"slot": event.slot, "how": event.how, "pid": event.pid, "stderr_tail": event.stderr_tail}
        self._emit("slot_died", r.task if r else None, data)
        for r in group:
            message = f"slot {event.slot} died ({event.how}) while running the task"
            details = {"slot": event.slot, "how": event.how, "stderr_tail": event.stderr_tail}
            self._finish_badly(r, SlotCrashed.code, message, details, retryable=True)
        self._restart(event.slot)

    def _restart(self, name: str) -> None:
        if self._stop.is_set():
            return
        if self.engine.restart(name):
            log.info("slot %s restarted", name)
        self._dirty = True

    def _check_silence(self) -> None:
        """A ready slot silent for `slot_silent_after_s` (stopped, frozen) is hung: kill, restart, re-queue."""
        after_s = self._silent_after_s
        for h in self.engine.silent_slots(after_s):
            group = self._on_slot(h.name)
            r = group[0] if group else None
            pid, silent_s = h.pid, time.monotonic() - h.last_heard_at
            what = f"while running task {r.task.key}, attempt {r.task.attempts}" if r else "while idle"
            log.warning(
                "slot %s (pid %s) is hung: no heartbeat for %.1f s (limit %g s) %s; killing its process group",
                h.name, pid, silent_s, after_s, what,
            )  # fmt: skip
            self.engine.kill(h.name)
            self._emit("slot_hung", r.task if r else None, {"slot": h.name, "pid": pid, "silent_s": round(silent_s, 1)})
            for r in group:
                how = f"hung: no heartbeat for {silent_s:.1f} s"
                message = f"slot {h.name} stopped answering ({how}) while running the task and was killed"
                details = {"slot": h.name, "how": how, "pid": pid}
                self._finish_badly(r, SlotCrashed.code, message, details, retryable=True)
            self._restart(h.name)

    def _slot_deadlines(self) -> dict[str, float]:
        """When each busy slot is killed: the last deadline of the tasks it runs (a group's lead ends last)."""
        deadlines: dict[str, float] = {}
        for r in self._running.values():
            deadlines[r.slot] = max(deadlines.get(r.slot, 0.0), r.deadline)
        return deadlines

    def _check_deadlines(self, now: float) -> None:
        for slot in [slot for slot, deadline in self._slot_deadlines().items() if now > deadline]:
            death = self.engine.kill(slot)
            for r in self._on_slot(slot):
                limit_s = round(r.deadline - r.started, 1)
                log.warning("task %s on %s ran past its %g s limit; its process group was killed", r.task.key, r.slot, limit_s)
                message = f"the task ran longer than its {limit_s:g} s limit and was killed (slot {r.slot})"
                details = {"slot": r.slot, "timeout_s": round(limit_s, 3), "how": death.how if death else None}
                self._finish_badly(r, TaskTimeout.code, message, details, retryable=True)
            self._restart(slot)

    def _on_slot(self, slot: str) -> list[RunningTask]:
        """Take every task a slot runs off the running list (a group is several); those of a group run alone next."""
        group = [r for r in self._running.values() if r.slot == slot]
        for r in group:
            del self._running[r.task.id]
            if len(group) > 1:
                self._solo.add(r.task.id)
        return group

    def _requeue_group(self, slot: str, why: str) -> None:
        """The other tasks of a slot killed for one of them go back to the queue; the attempt is not counted."""
        for r in self._on_slot(slot):
            self._solo.discard(r.task.id)  # not their fault
            details = {"slot": slot}
            self._finish_badly(r, SlotCrashed.code, f"re-queued: {why}", details, retryable=True, counted=False)

    # -- ends ------------------------------------------------------------------

    def _finish_badly(self, r: RunningTask, code: str, message: str, details: dict[str, Any], *, retryable: bool,
                      counted: bool = True) -> None:
        task, elapsed_s = r.task, time.monotonic() - r.started
        self.lending.withdraw(task.id)  # its helpers finish their window; a retry reuses it
        if retryable and (task.attempts < task.max_attempts or not counted):
            task = self.store.requeue(task.id, code, message, details, counted=counted)
            self.book.queue_again(task)
            log.warning(
                "task %s re-queued after [%s] on %s (attempt %d/%d, %.2f s): %s",
                task.key, code, r.slot, task.attempts, task.max_attempts, elapsed_s, message,
            )  # fmt: skip
            self._emit("task_requeued", task, {"slot": r.slot, "code": code, "message": message})
            self._dirty = True
            return
        task = self.book.set_state(self.store.fail(task.id, code, message, details))
        log.error(
            "task %s failed [%s] on %s after %.2f s, attempt %d/%d: %s",
            task.key, code, r.slot, elapsed_s, task.attempts, task.max_attempts, message,
        )  # fmt: skip
        self._emit("task_failed", task, {"slot": r.slot, "code": code})
        self._ended(task.id)

    def _wait_for_space(self, r: RunningTask, code: str, message: str, details: dict[str, Any]) -> None:
        """A write of the task found the disk full: the task goes back to the queue, its attempt not counted, and
        nothing new starts until the wait clears (space.py)."""
        self.lending.withdraw(r.task.id)
        task = self.store.requeue(r.task.id, code, message, details, counted=False)
        self.book.queue_again(task)
        before = self.space_wait
        lone_try = 2 if before is not None and before.lone_try else 0  # the lone try found no room either
        self.space_wait = SpaceWait(Path(str(details.get("path") or self.store.state_dir)), message, lone_try=lone_try)
        if before is None:
            log.warning(
                "task %s found no room: %s (%s); it waits in the queue, and no task starts until one running ends "
                "or %d MB more are free", task.key, self.space_wait.describe(), message, MARGIN_BYTES >> 20,
            )  # fmt: skip
        self._emit("task_requeued", task, {"slot": r.slot, "code": code, "message": message})
        self._dirty = True

    def _check_space(self, burst: bool) -> None:
        """End the wait for space when there is room again; stop a burst run that has nothing left to wait for."""
        wait = self.space_wait
        if wait is None:
            return
        if wait.cleared():
            log.info("%d MB more are free than when a write failed: starting tasks again", MARGIN_BYTES >> 20)
            self.space_wait, self._dirty = None, True
        elif self._running:
            return  # its end clears the wait (`_ended`)
        elif not wait.lone_try:
            log.info("nothing runs now: trying one waiting task alone (%s)", wait.describe())
            wait.lone_try, self._dirty = 1, True
        elif burst:
            raise OutputWriteFailed(
                f"{wait.describe()}: a task found no room for {wait.path.name} even with nothing else running, and "
                f"the run stops here, {len(self.book.queued)} task(s) queued. Free space, then run the same command "
                "again: finished work is kept",
                path=str(wait.path), write_error=wait.message,
            )  # fmt: skip

    def _probing(self) -> bool:
        """Whether the disk was full and one task is to be tried alone now (nothing runs)."""
        return self.space_wait is not None and self.space_wait.lone_try == 1 and not self._running

    def _ended(self, task_id: str) -> None:
        """A task reached a terminal state: its place is free, and the dependents of a bad end are skipped."""
        if self.space_wait is not None:  # its checkpoints may have made room: the waiting tasks try again
            self.space_wait = None
        self._dirty = True
        self.lending.withdraw(task_id)
        self.book.ended(task_id)


def request_cancel(store: Store, target_id: str, settings: Settings) -> bool:
    """Cancel a batch or task: recorded for the running dispatcher, or applied now when none runs.

    Returns True when it was applied at once (no dispatcher holds this state
    dir), False when the running dispatcher will apply it within
    `cancel_poll_s` (killing a running task's process group).
    """
    store.request_cancel(target_id)
    lock = DispatcherLock(store.state_dir)
    try:
        lock.acquire()
    except StateLocked:
        return False
    try:
        book = TaskBook(store)
        book.recover()  # no dispatcher holds the lock: running rows are leftovers
        book.load()
        book.apply_cancel_requests()  # nothing runs, so no slot has a task to stop
    finally:
        lock.release()
    return True
