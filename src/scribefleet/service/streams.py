"""Live and past views of jobs: server-sent events and the log history.

SSE streams poll the store (its events table and task rows) every `POLL_S`:
the dispatcher writes every state change as an event and progress at most
every `progress_write_s`, so the stream shows what the store holds, also
across a controller restart. A job stream sends `job` (the whole job) first,
after each status change and last; `progress` when stage or percent moves;
`history` for each recorded event (with its id as the SSE id, so a reconnect
with Last-Event-ID resumes after it); `end` when the job is terminal. A batch
stream does the same for every job of a batch (reading an ended job once:
`BatchTasks`), sends `batch` (files, audio, elapsed time and ETA of the whole
batch, and the count of its jobs by status) whenever that changes, and ends
once all are terminal. Elapsed time and ETA are whole seconds, so a running
job's `progress` comes about once a second.

`job_history` is a job's whole story for `GET /api/jobs/{id}/logs`: its
store events, the lines of the controller and slot logs that name it (by id
or key), and its own task log, in time order.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from scribefleet.errors import InvalidRequest
from scribefleet.service.controller import Controller
from scribefleet.jobs.views import TaskView, batch_progress, task_view
from scribefleet.service.jobs import get_batch, get_task, job_json
from scribefleet.store.models import TERMINAL_STATES, Event, Task, TaskState, iso_ms

#: the states of a task that has not ended
OPEN_STATES = frozenset(TaskState) - TERMINAL_STATES

POLL_S = 0.25
#: an event id is a SQLite rowid: at most 19 decimal digits
_EVENT_ID = re.compile(r"[0-9]{1,18}")
KEEPALIVE_S = 15.0
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) ")


def parse_last_event_id(value: str | None) -> int:
    """The id of a Last-Event-ID header (0 without one); anything but a plain decimal id is INVALID_REQUEST."""
    if value is None or not value.strip():
        return 0
    if not _EVENT_ID.fullmatch(value.strip()):
        raise InvalidRequest(
            "Last-Event-ID must be the decimal id of an event this stream sent (at most 18 digits)",
            header="Last-Event-ID",
        )
    return int(value.strip())


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    """One server-sent event; data is JSON on one line."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return head + f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def event_json(event: Event) -> dict[str, Any]:
    return {"id": event.id, "at": iso_ms(event.at), "type": event.type, "data": event.data}


def _progress_json(job: dict[str, Any]) -> dict[str, Any]:
    return {"id": job["id"], "status": job["status"], **job["progress"]}


class _Keepalive:
    def __init__(self) -> None:
        self.last = time.monotonic()

    def due(self) -> bool:
        if time.monotonic() - self.last < KEEPALIVE_S:
            return False
        self.last = time.monotonic()
        return True


async def job_stream(controller: Controller, job_id: str, last_event_id: int = 0) -> AsyncIterator[str]:
    """The SSE stream of one job (get_task first, so an unknown id fails before streaming)."""
    task = get_task(controller, job_id)
    return _job_events(controller, task, last_event_id)


async def _job_events(controller: Controller, task: Task, after_id: int) -> AsyncIterator[str]:
    store, keepalive = controller.store, _Keepalive()
    job = job_json(task, controller)
    yield sse("job", job)
    while True:
        for event in store.events(task_id=task.id, after_id=after_id):
            after_id = event.id
            yield sse("history", event_json(event), event.id)
        fresh = store.task(task.id)
        if fresh is None:
            return
        now = job_json(fresh, controller)
        if now["status"] != job["status"] or fresh.is_terminal:
            yield sse("job", now)
        elif now["progress"] != job["progress"]:
            yield sse("progress", _progress_json(now))
        job = now
        if fresh.is_terminal:
            yield sse("end", {"status": now["status"]})
            return
        if keepalive.due():
            yield ": keepalive\n\n"
        await asyncio.sleep(POLL_S)


async def batch_stream(controller: Controller, batch_id: str) -> AsyncIterator[str]:
    get_batch(controller, batch_id)
    return _batch_events(controller, batch_id)


class BatchTasks:
    """A batch's tasks, poll after poll, with what a stream shows of each: an ended task is read and drawn once
    (it does not change), the open ones every poll. Re-read whole four times a second, a batch of thousands
    held the controller's event loop for most of each second: 55 to 120 ms a poll per 1000 jobs on a 2-core
    CPU; 2000 ended jobs and 10 open now take 4 ms a poll (the first one still reads them all)."""

    def __init__(self, controller: Controller, batch_id: str) -> None:
        self.controller, self.batch_id = controller, batch_id
        self.ended: dict[str, tuple[Task, dict[str, Any], TaskView]] = {}
        self.open: set[str] = set()
        self.last_seq = 0

    def read(self) -> list[tuple[Task, dict[str, Any], TaskView]]:
        """(task, its job JSON, its view) of every task of the batch, in submission order."""
        store = self.controller.store
        open_now = store.tasks(self.batch_id, states=OPEN_STATES)
        added = store.tasks(self.batch_id, after_seq=self.last_seq)  # the first time: all; a job may end unseen
        ids = {t.id for t in open_now}
        gone = [store.task(i) for i in self.open - ids]  # ended since the last poll
        for task in [*added, *gone]:
            if task is not None and task.is_terminal and task.id not in ids:
                self.ended[task.id] = (task, job_json(task, self.controller), task_view(task))
        for task_id in ids:
            self.ended.pop(task_id, None)  # open again (a re-run)
        self.open = ids
        self.last_seq = max([self.last_seq, *(t.seq for t in added)])
        live = [(t, job_json(t, self.controller), task_view(t)) for t in open_now]
        return sorted([*self.ended.values(), *live], key=lambda row: row[0].seq)


async def _batch_events(controller: Controller, batch_id: str) -> AsyncIterator[str]:
    seen: dict[str, dict[str, Any]] = {}
    keepalive = _Keepalive()
    summary: dict[str, Any] | None = None
    batch = BatchTasks(controller, batch_id)
    while True:
        rows = batch.read()
        progress = batch_progress(view for _, _, view in rows).as_api_json()
        if (now := {**progress, "counts": dict(Counter(j["status"] for _, j, _ in rows))}) != summary:
            summary = now
            yield sse("batch", {"id": batch_id, **now})
        for task, now, _ in rows:
            before = seen.get(task.id)
            if before is None or now["status"] != before["status"]:
                yield sse("job", now)
            elif now["progress"] != before["progress"]:
                yield sse("progress", _progress_json(now))
            seen[task.id] = now
        if rows and all(task.is_terminal for task, _, _ in rows):
            yield sse("end", {"counts": dict(Counter(j["status"] for j in seen.values()))})
            return
        if keepalive.due():
            yield ": keepalive\n\n"
        await asyncio.sleep(POLL_S)


# -- history -------------------------------------------------------------------


def _log_files(logs_dir: Path) -> list[Path]:
    """Controller and slot logs, rotated backups (oldest) first."""
    files: list[Path] = []
    for base in sorted(logs_dir.glob("*.log")):
        backups = sorted(logs_dir.glob(base.name + ".*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
        files += [*backups, base]
    return files


def _log_lines(task: Task, logs_dir: Path) -> Iterator[dict[str, Any]]:
    needles = (task.id, task.key)
    for path in _log_files(logs_dir):
        try:
            with path.open(encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if any(n in line for n in needles):
                        m = _LOG_TIME.match(line)
                        yield {"at": m.group(1) if m else None, "source": "log", "file": path.name, "line": line.rstrip("\n")}
        except OSError:
            continue


def job_history(controller: Controller, task: Task) -> list[dict[str, Any]]:
    """Events, log lines and task-log lines of one job, in time order."""
    entries = [{"source": "event", **event_json(e)} for e in controller.store.events(task_id=task.id)]
    for entry in entries:
        entry.pop("id")
    entries += list(_log_lines(task, controller.state_dir / "logs"))
    entries.sort(key=lambda e: e["at"] or "")
    task_log = controller.store.task_log_path(task)
    if task_log.is_file():
        with task_log.open(encoding="utf-8", errors="replace") as fh:
            entries += [{"at": None, "source": "task", "line": line.rstrip("\n")} for line in fh]
    return entries


def history_text(entries: list[dict[str, Any]]) -> str:
    lines = []
    for e in entries:
        if e["source"] == "event":
            data = f" {json.dumps(e['data'], ensure_ascii=False)}" if e.get("data") else ""
            lines.append(f"{e['at']} EVENT   {e['type']}{data}")
        else:
            lines.append(e["line"])
    return "".join(line + "\n" for line in lines)
