"""The Store: batches, tasks, their needs, events and cancel requests in one SQLite file.

The single source of truth of a state directory (`OUT/.scribefleet/`). Anyone
may read it and add batches/tasks or cancel requests; only the dispatcher
changes a task's state, through the transition methods at the bottom. Each
change is one `BEGIN IMMEDIATE` transaction that also inserts an event, and
after the commit the event is appended to `batches/<batch-id>/events.jsonl`.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scribefleet.errors import OutputWriteFailed, ScribefleetError, UsageError
from scribefleet.fsio import make_dir
from scribefleet.fsio import write_failed as fsio_write_failed
from scribefleet.masking import redact_value
from scribefleet.store.models import RESOURCES, Batch, Event, Task, TaskState
from scribefleet.store.schema import connect, connect_read_only, write_failed

Q, R = TaskState.QUEUED, TaskState.RUNNING
JSONL_OPEN_MAX = 32  # events.jsonl files kept open at once (a controller sees many batches)


def new_id() -> str:
    """A short, readable, practically unique id (12 hex characters)."""
    return secrets.token_hex(6)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


class Store:
    """The SQLite store of one state directory."""

    def __init__(self, state_dir: Path, conn: sqlite3.Connection) -> None:
        self.state_dir = state_dir
        self._conn = conn
        self._lock = threading.RLock()
        self._pending_events: list[Event] = []
        self._jsonl_fds: dict[str, int] = {}  # batch id -> its open events.jsonl

    @classmethod
    def open(cls, state_dir: Path) -> Store:
        """Open the store of `state_dir`, creating the directory and schema on first use."""
        state_dir = make_dir(Path(state_dir))
        return cls(state_dir, connect(state_dir / "store.sqlite"))

    @classmethod
    def open_to_read(cls, state_dir: Path) -> Store:
        """Open the existing store of `state_dir` to read it (status, logs), also where it cannot be written."""
        state_dir = Path(state_dir)
        try:
            return cls.open(state_dir)
        except OutputWriteFailed:
            return cls(state_dir, connect_read_only(state_dir / "store.sqlite"))

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            for fd in self._jsonl_fds.values():
                os.close(fd)
            self._jsonl_fds.clear()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paths --------------------------------------------------------------

    def batch_dir(self, batch_id: str) -> Path:
        return self.state_dir / "batches" / batch_id

    def task_log_path(self, task: Task) -> Path:
        """Where a task's own output (a shell command's stdout/stderr) is written."""
        return Path(f"{self.state_dir}/batches/{task.batch_id}/tasks/{task.id}.log")  # one Path, not three (per task)

    # -- transactions and events --------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn.in_transaction:  # left open by a Ctrl-C between an earlier BEGIN and its try: undone
                self._conn.execute("ROLLBACK")
                self._pending_events.clear()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:  # a COMMIT that failed on a full disk has rolled back already
                    self._conn.execute("ROLLBACK")
                self._pending_events.clear()
                failed = write_failed(exc, self.state_dir / "store.sqlite") if isinstance(exc, sqlite3.Error) else None
                if failed is not None:
                    raise failed from exc
                raise
            events, self._pending_events = self._pending_events, []
        for event in events:
            self._append_jsonl(event)

    def _event(self, c: sqlite3.Connection, batch_id: str, task_id: str | None, type_: str, data: dict[str, Any], at: float) -> None:
        data = redact_value(data)  # an event names inputs and errors: a presigned link's signature stays out
        cur = c.execute(
            "INSERT INTO events (batch_id, task_id, at, type, data) VALUES (?,?,?,?,?)",
            (batch_id, task_id, at, type_, _dumps(data)),
        )
        self._pending_events.append(Event(int(cur.lastrowid or 0), batch_id, task_id, at, type_, data))

    def _append_jsonl(self, event: Event) -> None:
        line = (json.dumps(event.to_json(), ensure_ascii=False, default=str) + "\n").encode()
        with self._lock:
            try:
                fd = self._jsonl_fd(event.batch_id)
                os.write(fd, line)  # one write of one line (O_APPEND): concurrent appenders never interleave
            except OSError as exc:  # the event is committed in the store; only its copy in the file is lost
                raise fsio_write_failed(self.batch_dir(event.batch_id) / "events.jsonl", exc) from exc

    def _jsonl_fd(self, batch_id: str) -> int:
        """The batch's events.jsonl, kept open for appending (opening it per event cost a quarter of a
        millisecond per task); reopened when the file was removed, the least recently used closed past
        JSONL_OPEN_MAX. Called under the lock."""
        fd = self._jsonl_fds.pop(batch_id, None)
        if fd is not None and os.fstat(fd).st_nlink == 0:  # deleted or moved away: write where readers look
            os.close(fd)
            fd = None
        if fd is None:
            path = self.batch_dir(batch_id) / "events.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            while len(self._jsonl_fds) >= JSONL_OPEN_MAX:
                os.close(self._jsonl_fds.pop(next(iter(self._jsonl_fds))))
        self._jsonl_fds[batch_id] = fd  # re-inserted: the dict's order is least recently used first
        return fd

    # -- batches and tasks: anyone may add ----------------------------------

    def ensure_batch(self, key: str, kind: str, spec: dict[str, Any], out_dir: str | Path | None) -> str:
        """The id of the batch with this key, created if there is none yet."""
        with self._tx() as c:
            row = c.execute("SELECT id FROM batches WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return str(row["id"])
            batch_id, now = new_id(), time.time()
            c.execute(
                "INSERT INTO batches (id, key, kind, spec, out_dir, created_at) VALUES (?,?,?,?,?,?)",
                (batch_id, key, kind, _dumps(spec), None if out_dir is None else str(out_dir), now),
            )
            self._event(c, batch_id, None, "batch_created", {"key": key, "kind": kind}, now)
            return batch_id

    def add_task(
        self,
        batch_id: str,
        key: str,
        kind: str,
        spec: dict[str, Any],
        *,
        needs: Iterable[str] = (),
        max_attempts: int = 3,
        timeout_s: float = 1800.0,
        resources: str = "any",
        content_key: str | None = None,
    ) -> str:
        """Add a task (idempotent on (batch_id, key): an existing task's id is returned as is).

        `needs` are ids or keys of tasks already in the same batch, so tasks are
        always added after the tasks they need.
        """
        if resources not in RESOURCES:
            raise UsageError(f"resources must be one of {', '.join(RESOURCES)}, not {resources!r}", task=key)
        if max_attempts < 1 or timeout_s <= 0:
            raise UsageError("max_attempts must be >= 1 and timeout_s > 0", task=key)
        with self._tx() as c:
            row = c.execute("SELECT id FROM tasks WHERE batch_id = ? AND key = ?", (batch_id, key)).fetchone()
            if row is not None:
                return str(row["id"])
            need_ids = [self._resolve_need(c, batch_id, key, need) for need in needs]
            task_id, now = new_id(), time.time()
            seq = c.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM tasks").fetchone()[0]
            c.execute(
                "INSERT INTO tasks (id, seq, batch_id, key, kind, spec, max_attempts, timeout_s, resources,"
                " content_key, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (task_id, seq, batch_id, key, kind, _dumps(spec), max_attempts, float(timeout_s), resources, content_key, now, now),
            )
            c.executemany(
                "INSERT OR IGNORE INTO task_needs (task_id, need_id) VALUES (?,?)", [(task_id, n) for n in need_ids]
            )
            self._event(c, batch_id, task_id, "task_added", {"key": key, "kind": kind, "needs": need_ids}, now)
            return task_id

    @staticmethod
    def _resolve_need(c: sqlite3.Connection, batch_id: str, key: str, need: str) -> str:
        row = c.execute(
            "SELECT id FROM tasks WHERE batch_id = ? AND (id = ? OR key = ?) ORDER BY id = ? DESC LIMIT 1",
            (batch_id, need, need, need),
        ).fetchone()
        if row is None:
            raise UsageError(
                f"task {key!r} needs {need!r}, which is not in this batch; add a task before the tasks that need it",
                task=key,
                need=need,
            )
        return str(row["id"])

    def reset_tasks(self, batch_id: str, task_ids: Iterable[str] | None = None) -> int:
        """Put tasks of the batch (all, or `task_ids`) back to queued with no attempts, result or error.

        For --force and for re-runs of failed work; the caller holds the dispatcher lock.
        """
        now = time.time()
        with self._tx() as c:
            rows = c.execute("SELECT id, state FROM tasks WHERE batch_id = ?", (batch_id,)).fetchall()
            if task_ids is not None:
                wanted = set(task_ids)
                rows = [r for r in rows if r["id"] in wanted]
            c.executemany(
                "UPDATE tasks SET state = 'queued', stage = NULL, progress = 0, attempts = 0, slot = NULL,"
                " error_code = NULL, error_message = NULL, error_details = NULL, result = NULL,"
                " started_at = NULL, finished_at = NULL, updated_at = ? WHERE id = ?",
                [(now, r["id"]) for r in rows],
            )
            for row in rows:
                self._event(c, batch_id, row["id"], "reset", {"from": row["state"]}, now)
            return len(rows)

    def revise_task(self, task_id: str, spec: dict[str, Any], *, content_key: str | None) -> bool:
        """Give a task a new spec (its input changed since it was added); True if anything changed.

        A changed task goes back to queued from scratch. The caller holds the dispatcher lock.
        """
        with self._tx() as c:
            row = c.execute("SELECT batch_id, spec, content_key FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if row is None or (row["spec"] == _dumps(spec) and row["content_key"] == content_key):
                return False
            now = time.time()
            c.execute(
                "UPDATE tasks SET spec = ?, content_key = ?, state = 'queued', stage = NULL, progress = 0,"
                " attempts = 0, slot = NULL, error_code = NULL, error_message = NULL, error_details = NULL,"
                " result = NULL, started_at = NULL, finished_at = NULL, audio_s = NULL, updated_at = ? WHERE id = ?",
                (_dumps(spec), content_key, now, task_id),
            )
            self._event(c, row["batch_id"], task_id, "revised", {"content_key": content_key}, now)
            return True

    def request_cancel(self, target_id: str) -> str:
        """Ask the dispatcher to cancel a batch or a task; returns "batch" or "task"."""
        with self._tx() as c:
            task = c.execute("SELECT batch_id FROM tasks WHERE id = ?", (target_id,)).fetchone()
            batch = c.execute("SELECT id FROM batches WHERE id = ?", (target_id,)).fetchone()
            if task is None and batch is None:
                raise UsageError(f"no batch or task has the id {target_id!r}; see 'scribefleet status'", id=target_id)
            now = time.time()
            c.execute("INSERT INTO cancel_requests (target_id, requested_at) VALUES (?,?)", (target_id, now))
            kind = "task" if task is not None else "batch"
            batch_id = task["batch_id"] if task is not None else target_id
            self._event(c, batch_id, target_id if task is not None else None, "cancel_requested", {"target": kind}, now)
            return kind

    # -- reads ---------------------------------------------------------------

    def _query_tasks(self, where: str, args: tuple[Any, ...]) -> list[Task]:
        with self._lock:
            rows = self._conn.execute(f"SELECT * FROM tasks {where} ORDER BY seq", args).fetchall()
            needs: dict[str, list[str]] = {}
            if rows:
                for n in self._conn.execute(
                    f"SELECT n.task_id, n.need_id FROM task_needs n JOIN tasks ON tasks.id = n.task_id {where}", args
                ):
                    needs.setdefault(n["task_id"], []).append(n["need_id"])
        return [Task.from_row(r, tuple(needs.get(r["id"], ()))) for r in rows]

    def tasks(
        self, batch_id: str | None = None, states: Iterable[TaskState | str] | None = None, *, after_seq: int = 0
    ) -> list[Task]:
        """Tasks in submission order, optionally of one batch, in some states, added after `after_seq`."""
        clauses, args = _task_filter(batch_id, states, "tasks.")
        return self._query_tasks("WHERE " + " AND ".join(["tasks.seq > ?", *clauses]), (after_seq, *args))

    def task_page(
        self, batch_id: str | None = None, states: Iterable[TaskState | str] | None = None, *, limit: int,
        offset: int = 0, where: tuple[str, list[Any]] | None = None,
    ) -> tuple[list[Task], int]:
        """One page of tasks, newest first, and how many match in all: only the page's rows are read whole.
        `where`: one more SQL condition on the tasks' columns, with its arguments (a caller's own filter)."""
        clauses, args = _task_filter(batch_id, states)
        if where is not None:
            clauses, args = [*clauses, f"({where[0]})"], [*args, *where[1]]
        where = " AND ".join(["1 = 1", *clauses])
        with self._lock:
            total = self._conn.execute(f"SELECT COUNT(*) FROM tasks WHERE {where}", args).fetchone()[0]
            ids = [r[0] for r in self._conn.execute(
                f"SELECT id FROM tasks WHERE {where} ORDER BY seq DESC LIMIT ? OFFSET ?", [*args, limit, offset]
            )]  # fmt: skip
        if not ids:
            return [], total
        found = {t.id: t for t in self._query_tasks(f"WHERE tasks.id IN ({','.join('?' * len(ids))})", tuple(ids))}
        return [found[i] for i in ids if i in found], total

    def task(self, task_id: str) -> Task | None:
        found = self._query_tasks("WHERE tasks.id = ?", (task_id,))
        return found[0] if found else None

    def batches(self) -> list[Batch]:
        with self._lock:
            return [Batch.from_row(r) for r in self._conn.execute("SELECT * FROM batches ORDER BY created_at, id")]

    def batch_by_key(self, key: str) -> Batch | None:
        """The batch made with this key (`ensure_batch`), if any; nothing is created."""
        with self._lock:
            row = self._conn.execute("SELECT * FROM batches WHERE key = ?", (key,)).fetchone()
        return None if row is None else Batch.from_row(row)

    def tasks_with_key_prefix(self, batch_id: str, prefix: str) -> list[Task]:
        """The batch's tasks whose key starts with `prefix`, in submission order (a range on the
        (batch_id, key) index, not a scan of the batch)."""
        return self._query_tasks("WHERE tasks.batch_id = ? AND tasks.key >= ? AND tasks.key < ?",
                                 (batch_id, prefix, prefix + "\U0010ffff"))  # fmt: skip

    def batch(self, batch_id: str) -> Batch | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return None if row is None else Batch.from_row(row)

    def events(self, batch_id: str | None = None, task_id: str | None = None, *, after_id: int = 0) -> list[Event]:
        """Recorded events in order, optionally of one batch or task, newer than `after_id`."""
        clauses, args = ["id > ?"], [after_id]
        for column, value in (("batch_id", batch_id), ("task_id", task_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        with self._lock:
            rows = self._conn.execute(f"SELECT * FROM events WHERE {' AND '.join(clauses)} ORDER BY id", args).fetchall()
        return [Event.from_row(r) for r in rows]

    def counts(self, batch_id: str | None = None) -> dict[TaskState, int]:
        """How many tasks are in each state."""
        where, args = ("WHERE batch_id = ?", (batch_id,)) if batch_id else ("", ())
        with self._lock:
            rows = self._conn.execute(f"SELECT state, COUNT(*) AS n FROM tasks {where} GROUP BY state", args).fetchall()
        out = dict.fromkeys(TaskState, 0)
        out.update({TaskState(r["state"]): r["n"] for r in rows})
        return out

    def pending_cancels(self) -> list[tuple[int, str]]:
        """(request id, target id) of cancel requests no dispatcher has handled yet."""
        with self._lock:
            rows = self._conn.execute("SELECT id, target_id FROM cancel_requests WHERE handled = 0 ORDER BY id").fetchall()
        return [(r["id"], r["target_id"]) for r in rows]

    # -- state transitions: the dispatcher's alone ---------------------------

    def _transition(
        self, task_id: str, to: TaskState, allowed: tuple[TaskState, ...], event: str, data: dict[str, Any], **fields: Any
    ) -> Task:
        now = time.time()
        with self._tx() as c:
            row = self._update(c, task_id, to, allowed, now, fields)
            self._event(c, row["batch_id"], task_id, event, data, now)
            return self._task_of(c, row)

    def _update(
        self, c: sqlite3.Connection, task_id: str, to: TaskState, allowed: tuple[TaskState, ...], now: float,
        fields: dict[str, Any], extra_sql: str = "",
    ) -> sqlite3.Row:
        """Move one task to `to` if it is in an `allowed` state, in one statement; returns its new row."""
        if to.is_terminal:
            fields.setdefault("finished_at", now)
        sets = {"state": to.value, "updated_at": now, **fields}
        row = c.execute(
            f"UPDATE tasks SET {', '.join(f'{k} = ?' for k in sets)}{extra_sql} "
            f"WHERE id = ? AND state IN ({','.join('?' * len(allowed))}) RETURNING *",
            (*sets.values(), task_id, *(s.value for s in allowed)),
        ).fetchone()
        if row is None:
            found = c.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if found is None:
                raise ScribefleetError(f"no task {task_id!r} in the store", task_id=task_id)
            raise ScribefleetError(f"task {task_id} is {found['state']}; it cannot become {to.value}", task_id=task_id)
        return row

    @staticmethod
    def _task_of(c: sqlite3.Connection, row: sqlite3.Row) -> Task:
        """The Task of a row just written (its needs read in the same transaction)."""
        needs = tuple(n[0] for n in c.execute("SELECT need_id FROM task_needs WHERE task_id = ?", (row["id"],)))
        return Task.from_row(row, needs)

    def mark_running(self, task_id: str, slot: str, *, node: str | None = None) -> Task:
        """queued -> running on `slot` (on `node`, for slots of other machines): a new attempt starts
        (committed before the slot hears of it)."""
        now = time.time()
        fields = dict(
            slot=slot, started_at=now, finished_at=None, stage=None, progress=0.0,
            error_code=None, error_message=None, error_details=None,
        )  # fmt: skip
        with self._tx() as c:
            row = self._update(c, task_id, R, (Q,), now, fields, extra_sql=", attempts = attempts + 1")
            data = {"slot": slot, "attempt": row["attempts"], **({"node": node} if node else {})}
            self._event(c, row["batch_id"], task_id, "dispatched", data, now)
            return self._task_of(c, row)

    def record_progress(self, task_id: str, stage: str | None, progress: float, audio_s: float | None = None) -> None:
        """Write a running task's stage and progress (and its audio's length, once known); a new stage is also an event."""
        now = time.time()
        with self._tx() as c:
            row = c.execute("SELECT batch_id, stage FROM tasks WHERE id = ? AND state = 'running'", (task_id,)).fetchone()
            if row is None:
                return
            c.execute("UPDATE tasks SET stage = ?, progress = ?, updated_at = ?, audio_s = COALESCE(?, audio_s) WHERE id = ?",
                      (stage, progress, now, audio_s, task_id))  # fmt: skip
            if stage != row["stage"]:
                self._event(c, row["batch_id"], task_id, "stage", {"stage": stage}, now)

    def note_audio_s(self, task_id: str, audio_s: float | None) -> None:
        """A task's audio length as its input's header gives it (jobs/create.py), where none is known yet.

        The dispatcher plans with it before any slot decoded the file (a long one is spread, not grouped);
        the length a slot measures (`record_progress`) replaces it.
        """
        if audio_s is None or audio_s <= 0:
            return
        with self._tx() as c:
            c.execute("UPDATE tasks SET audio_s = ? WHERE id = ? AND audio_s IS NULL", (float(audio_s), task_id))

    def complete(self, task_id: str, result: dict[str, Any] | None) -> Task:
        return self._transition(task_id, TaskState.COMPLETE, (R,), "completed", {}, result=_dumps(result or {}), progress=1.0)

    def carry_over(self, task_id: str, done: Task) -> Task:
        """queued -> complete with the result of `done`, the same task finished in an earlier batch (a plan
        whose graph changed starts a new batch; what did not change is not done twice)."""
        return self._transition(task_id, TaskState.COMPLETE, (Q,), "completed", {"carried_over_from": done.id},
                                result=_dumps(done.result or {}), progress=1.0, stage=done.stage)  # fmt: skip

    def fail(self, task_id: str, code: str, message: str, details: dict[str, Any] | None = None) -> Task:
        """running (or queued, for a task that can never run) -> failed."""
        data = {"code": code, "message": message}
        return self._transition(
            task_id, TaskState.FAILED, (Q, R), "failed", data,
            error_code=code, error_message=message, error_details=_dumps(details or {}),
        )  # fmt: skip

    def requeue(self, task_id: str, code: str, message: str, details: dict[str, Any] | None = None, *,
                counted: bool = True) -> Task:
        """running -> queued for another attempt; the error that caused it stays visible until then.

        `counted=False`: the attempt ended through no fault of its own (another task of its group) and is given back.
        """
        extra = {} if counted else {"attempts": max(0, (self.task(task_id).attempts or 1) - 1)}  # type: ignore[union-attr]
        return self._transition(
            task_id, Q, (R,), "retry", {"code": code, "message": message},
            slot=None, error_code=code, error_message=message, error_details=_dumps(details or {}), **extra,
        )  # fmt: skip

    def cancel(self, task_id: str, code: str, message: str) -> Task:
        return self._transition(
            task_id, TaskState.CANCELED, (Q, R), "canceled", {"code": code},
            error_code=code, error_message=message, error_details=_dumps({}),
        )  # fmt: skip

    def skip(self, task_id: str, code: str, message: str, details: dict[str, Any] | None = None) -> Task:
        return self._transition(
            task_id, TaskState.SKIPPED, (Q,), "skipped", {"code": code, "message": message},
            error_code=code, error_message=message, error_details=_dumps(details or {}),
        )  # fmt: skip

    def recover_running(self, batch_id: str | None = None) -> list[Task]:
        """Tasks left `running` by a dead dispatcher go back to queued; the lost attempt is not counted."""
        recovered = []
        for task in self.tasks(batch_id, [R]):
            recovered.append(
                self._transition(
                    task.id, Q, (R,), "recovered", {"slot": task.slot, "attempt": task.attempts},
                    slot=None, attempts=max(0, task.attempts - 1), stage=None, progress=0.0,
                )  # fmt: skip
            )
        return recovered

    def mark_cancels_handled(self, request_ids: Iterable[int]) -> None:
        ids = list(request_ids)
        if ids:
            with self._tx() as c:
                c.executemany("UPDATE cancel_requests SET handled = 1 WHERE id = ?", [(i,) for i in ids])


def _task_filter(
    batch_id: str | None, states: Iterable[TaskState | str] | None, column: str = ""
) -> tuple[list[str], list[Any]]:
    """SQL conditions (and their arguments) for tasks of one batch and/or in some states; `column`
    prefixes the column names ("tasks." where the query joins other tables)."""
    clauses: list[str] = []
    args: list[Any] = []
    if batch_id is not None:
        clauses.append(f"{column}batch_id = ?")
        args.append(batch_id)
    if states is not None:
        values = [TaskState(s).value for s in states]
        clauses.append(f"{column}state IN ({','.join('?' * len(values))})")
        args.extend(values)
    return clauses, args
