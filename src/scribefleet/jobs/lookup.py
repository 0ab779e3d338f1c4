"""From what a person types to a batch or task of a store; cancelling it; the log lines that name it.

An id names a batch or a task: a batch id, a task id (both printed by
`status`), a task's key (a plan task id such as `transcribe:fox`, or a
transcribe input's path), or the name `status` shows for a job (its input
relative to the folder given, e.g. `day1/talk.mp3`), looked up in the newest
batch that has it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scribefleet.config import Settings
from scribefleet.dispatch import request_cancel
from scribefleet.dispatch.lock import DispatcherLock
from scribefleet.errors import InputNotFound, NotFound
from scribefleet.masking import redact
from scribefleet.store.models import Batch, Event, Task, iso_ms
from scribefleet.store.store import Store

POLL_S = 0.2
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) ")
_BATCH_START = re.compile(r"\bbatch ([0-9a-f]{12}): ")


@dataclass
class Target:
    """What an id named: a whole batch, or one task of it."""

    batch: Batch
    task: Task | None  # None: the whole batch

    @property
    def id(self) -> str:
        return str(self.task.id if self.task is not None else self.batch.id)

    @property
    def what(self) -> str:
        return f"task {self.task.key}" if self.task is not None else f"batch {self.batch.id}"

    def tasks(self, store: Store) -> list[Task]:
        if self.task is not None:
            found = store.task(self.task.id)
            return [found] if found is not None else []
        return store.tasks(batch_id=self.batch.id)


def state_dir_of(target: Path) -> Path:
    """The state dir of an OUT folder, or the state dir itself."""
    target = Path(target).expanduser().resolve()
    if (target / "store.sqlite").exists():
        return target
    return target / ".scribefleet"


def open_store(state: Path, *, to_read: bool = False) -> Store:
    """The store of an OUT folder or state dir; INPUT_NOT_FOUND when there is none. `to_read`: only to read it,
    so an OUT folder on a read-only disk still shows its jobs."""
    state_dir = state_dir_of(Path(state))
    if not (state_dir / "store.sqlite").is_file():
        raise InputNotFound(
            f"no scribefleet state in {state} (looked for {state_dir}/store.sqlite); pass the OUT folder of "
            "a transcribe run or the state dir of a plan run (.scribefleet beside the plan) with --state",
            state=str(state),
        )  # fmt: skip
    return Store.open_to_read(state_dir) if to_read else Store.open(state_dir)


def nobody_runs(store: Store) -> bool:
    """True when no live process holds the store's state dir (its dispatcher lock): a task the store calls
    running then is one a killed run (`kill -9`, a crash) left behind; the next run queues it again.
    Read-only, for `status`: call it after reading the tasks, so a run that starts meanwhile is not missed."""
    return not DispatcherLock(store.state_dir).is_held()


def find_target(store: Store, ident: str) -> Target:
    """The batch or task `ident` names: an id, else a task key or shown name in the newest batch that has it."""
    task = store.task(ident)
    if task is not None:
        return Target(_batch(store, task.batch_id), task)
    batch = store.batch(ident)
    if batch is not None:
        return Target(batch, None)
    for batch in sorted(store.batches(), key=lambda b: b.created_at, reverse=True):
        tasks = store.tasks(batch_id=batch.id)
        for match in (lambda t: t.key == ident, lambda t: t.spec.get("display") == ident):
            found = [t for t in tasks if match(t)]
            if found:
                return Target(batch, found[0])
    raise NotFound(
        f"no batch, task, task key or job name {ident!r} in {store.state_dir}; 'scribefleet status' lists them",
        id=ident,
    )  # fmt: skip


def _batch(store: Store, batch_id: str) -> Batch:
    batch = store.batch(batch_id)
    assert batch is not None, f"task of unknown batch {batch_id}"  # the store's foreign key
    return batch


def cancel(store: Store, target: Target, settings: Settings, *, wait_s: float = 10.0) -> list[Task] | None:
    """Cancel the target's unfinished tasks and wait up to `wait_s` for them to end.

    Returns what became of them (some may still be running when a dispatcher is
    slow to apply it), or None when nothing was left to cancel.
    """
    open_tasks = [t for t in target.tasks(store) if not t.is_terminal]
    if not open_tasks:
        return None
    if not request_cancel(store, target.id, settings):  # the running dispatcher applies it
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not all(t.is_terminal for t in _refresh(store, open_tasks)):
            time.sleep(POLL_S)  # another process changes the store; there is nothing to wait on but it
    return _refresh(store, open_tasks)


def _refresh(store: Store, tasks: list[Task]) -> list[Task]:
    return [store.task(t.id) or t for t in tasks]


# -- log lines -------------------------------------------------------------------


def event_line(event: Event, keys: dict[str, str]) -> str:
    """One event as a log line: time, task key, type, data."""
    who = redact(keys.get(event.task_id or "", "(batch)"))  # a task's key may be a presigned link
    shown = {k: [keys.get(n, n) for n in v] if k == "needs" else v for k, v in event.data.items()}
    data = " ".join(f"{k}={redact(str(v))}" for k, v in shown.items())  # values only: `key=` names a field here
    return f"{iso_ms(event.at)}  {who}  {event.type}{'  ' + data if data else ''}"


def _log_files(path: Path) -> list[Path]:
    """A rotating log and its backups, oldest first."""
    backups = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    return [p for p in (*backups, path) if p.is_file()]


def _records(paths: list[Path]) -> Iterator[str]:
    """Log records of files, a traceback or stderr tail kept with the line that began it."""
    for path in paths:
        record: list[str] = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if _STAMP.match(line) and record:
                yield "\n".join(record)
                record = []
            if _STAMP.match(line) or record:
                record.append(line)
        if record:
            yield "\n".join(record)


def batch_log_lines(state_dir: Path, batch_id: str) -> list[str]:
    """Dispatcher log records of the runs of one batch (from its `batch <id>:` line to another batch's)."""
    current: str | None = None
    lines = []
    for record in _records(_log_files(state_dir / "logs" / "scribefleet.log")):
        started = _BATCH_START.search(record.split("\n", 1)[0])
        if started:
            current = started.group(1)
        if current == batch_id or batch_id in record:
            lines.append(record)
    return lines


def task_log_lines(store: Store, task: Task) -> list[str]:
    """Dispatcher and slot log records that name the task (by key or id), in time order.

    A dispatcher record counts when it lies in a run of the task's batch, or, for a
    runner that dispatches every queued batch at once (`submit`), when it lies
    within the time the task's events span.
    """
    names = "|".join(re.escape(name) for name in (task.key, redact(task.key), task.id))  # logs mask a key's secrets
    mention = re.compile(rf"\btask (?:{names})(?=[\s:,;)]|$)")
    events = store.events(task_id=task.id)
    first, last = (iso_ms(events[0].at - 1.0), iso_ms(events[-1].at + 1.0)) if events else ("~", "")
    in_batch = set(batch_log_lines(store.state_dir, task.batch_id))
    records = [
        r for r in _records(_log_files(store.state_dir / "logs" / "scribefleet.log"))
        if mention.search(r.split("\n", 1)[0]) and (r in in_batch or first <= r[:24] <= last)
    ]  # fmt: skip
    for slot_log in sorted((store.state_dir / "logs").glob("slot-*.log")):
        records += [r for r in _records(_log_files(slot_log)) if mention.search(r.split("\n", 1)[0])]
    return sorted(records, key=lambda r: r[:24])
