"""The dispatcher's book of tasks: the queue, every state it has seen, and the rules between tasks.

`TaskBook` holds the tasks of one dispatcher's scope (a batch, or the whole
store): the queued ones in submission order, the state and key of each, and
who needs whom. It applies the rules that follow from one task's end without
any slot: the dependents of a task that ended badly are skipped (naming the
task at fault), and a cancel request cancels its queued targets. It needs no
engine, so a cancel made while no dispatcher runs is applied by a book alone
(`apply_cancel_requests`), under the dispatcher lock, by the same code the
running dispatcher uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from scribefleet.errors import DependencyFailed, UserCanceled
from scribefleet.store.models import Task, TaskState
from scribefleet.store.store import Store

log = logging.getLogger("scribefleet.dispatch")

Emit = Callable[[str, "Task | None", "dict[str, Any] | None"], None]


def _no_listener(type_: str, task: Task | None, data: dict[str, Any] | None = None) -> None:
    return None


class TaskBook:
    """The tasks in a dispatcher's scope and the rules between them; it writes their ends to the store."""

    def __init__(self, store: Store, batch_id: str | None = None, emit: Emit = _no_listener) -> None:
        self.store, self.batch_id, self.emit = store, batch_id, emit
        self.queued: dict[str, Task] = {}  # in submission order
        self.states: dict[str, TaskState] = {}
        self.keys: dict[str, str] = {}
        self._dependents: dict[str, list[str]] = {}
        self._root: dict[str, tuple[str, str | None]] = {}  # task id -> (key, code) of the failure behind it
        self._last_seq = 0

    def recover(self) -> None:
        """Rows left running by a dispatcher that died go back to the queue (not an attempt)."""
        left = {t.id: t.slot for t in self.store.tasks(states=[TaskState.RUNNING])}
        for task in self.store.recover_running():
            log.warning(
                "task %s recovered: it was left running on slot %s by a dispatcher that stopped; queued again",
                task.key, left.get(task.id),
            )  # fmt: skip
            self.emit("task_recovered", task, {"slot": left.get(task.id)})

    def load(self, tasks: list[Task] | None = None) -> bool:
        """Take in the scope's tasks (or these new ones); True when any of them is queued."""
        added = False
        for task in self.store.tasks(self.batch_id) if tasks is None else tasks:
            self._last_seq = max(self._last_seq, task.seq)
            self.states[task.id], self.keys[task.id] = task.state, task.key
            for need in task.needs:
                self._dependents.setdefault(need, []).append(task.id)
            if task.is_queued:
                self.queued[task.id] = task
                added = True
        for task in list(self.queued.values()):
            bad = next((n for n in task.needs if self.need_state(n).is_bad_end), None)
            if bad is not None and task.id in self.queued:
                self.skip(task, bad)
        return added

    def load_new(self) -> bool:
        """Take in the tasks queued since the last look; True when there were any."""
        new = self.store.tasks(self.batch_id, [TaskState.QUEUED], after_seq=self._last_seq)
        return self.load(new) if new else False

    def need_state(self, task_id: str) -> TaskState:
        state = self.states.get(task_id)
        if state is None:  # a need outside the loaded scope
            found = self.store.task(task_id)
            state = found.state if found else TaskState.FAILED
            self.states[task_id] = state
            if found:
                self.keys[task_id] = found.key
        return state

    def is_ready(self, task: Task) -> bool:
        return all(self.need_state(n) is TaskState.COMPLETE for n in task.needs)

    def set_state(self, task: Task) -> Task:
        self.states[task.id] = task.state
        return task

    def queue_again(self, task: Task) -> None:
        """A task re-queued after a failed attempt takes its place in submission order again."""
        self.set_state(task)
        self.queued[task.id] = task
        self.queued = dict(sorted(self.queued.items(), key=lambda kv: kv[1].seq))

    def ended(self, task_id: str) -> None:
        """A task reached a terminal state: skip the dependents of a bad end."""
        if self.states[task_id].is_bad_end:
            for dependent in self._dependents.get(task_id, ()):
                if dependent in self.queued:
                    self.skip(self.queued[dependent], task_id)

    def skip(self, task: Task, need_id: str) -> None:
        need_key, need_state = self.keys.get(need_id, need_id), self.need_state(need_id)
        root_key, root_code = self._root.get(need_id, (need_key, None))
        if root_code is None:
            found = self.store.task(need_id)
            root_code = found.error_code if found else None
        self._root[task.id] = (root_key, root_code)
        because = "" if root_key == need_key else f" because {root_key!r} did not succeed"
        verb = need_state.value if need_state is TaskState.FAILED else f"was {need_state.value}"
        message = f"not run: it needs {need_key!r}, which {verb}{because} ({root_code})"
        details = {"need": need_key, "need_state": need_state.value, "root": root_key, "root_code": root_code}
        del self.queued[task.id]
        task = self.set_state(self.store.skip(task.id, DependencyFailed.code, message, details))
        log.info("task %s skipped: %s", task.key, message)
        self.emit("task_skipped", task, {"need": need_key})
        self.ended(task.id)

    def apply_cancel_requests(
        self, stop_running: Callable[[Task], str | None] = lambda task: None
    ) -> list[tuple[Task, str | None]]:
        """Cancel the targets of every pending request; returns each task canceled, with the slot it ran on.

        `stop_running(task)` stops a running target and returns its slot (None
        when the task was not running); the book itself only knows the queue.
        """
        requests = self.store.pending_cancels()
        canceled: list[tuple[Task, str | None]] = []
        for _, target in requests:
            for task in self._targets(target):
                if self.states.get(task.id, task.state).is_terminal:
                    continue  # skipped meanwhile, as a dependent of an earlier target
                slot = stop_running(task)
                self.queued.pop(task.id, None)
                task = self.set_state(self.store.cancel(task.id, UserCanceled.code, "canceled by request"))
                how = f" (its process group on {slot} was killed)" if slot else " while queued"
                log.info("task %s canceled%s", task.key, how)
                self.emit("task_canceled", task, {"slot": slot})
                self.ended(task.id)
                canceled.append((task, slot))
        self.store.mark_cancels_handled(i for i, _ in requests)
        return canceled

    def _targets(self, target: str) -> list[Task]:
        if self.store.batch(target) is not None:
            found = self.store.tasks(target)
        else:
            one = self.store.task(target)
            found = [one] if one is not None else []
        return [t for t in found if not t.is_terminal]
