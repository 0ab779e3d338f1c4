"""TaskView: the one public view of a task, whether read from a store or from a controller's API.

`task_view(task)` makes it from a store row; `TaskView.from_api(job)` from the
job JSON a controller sends. It is written out in two spellings of the same
fields: `as_json()`, the snake_case JSON of the CLI (`status --json`,
`submit --json`, `transcribe --json`), and `as_api_json()`, the camelCase job
of the HTTP API (docs/api.md, seed 001's names).

A job sent to a remote worker (spec "remote") has `execution_mode` "remote"
and, while it waits for a worker's place (queued, or stage `queued_remote`),
the status `queued_remote` with the message "Waiting for worker capacity"
(seed 001); `worker` then says which worker job it is.

`percent` is the whole job's progress: each stage covers a share of it
(`STAGE_SPAN_PERCENT`; a URL job's download comes first, `FETCH_SPAN_PERCENT`, and
the file's stages share the rest); `stage_percent` is the current stage's own; `elapsed_s`
and `eta_s` its time so far and left (jobs/eta.py; `batch_progress` sums a
batch's). With the
task's events at hand, `stages` tells each stage's state, time and attempts
(`stage_history`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from scribefleet.jobs import eta
from scribefleet.jobs.eta import whole
from scribefleet.store.models import TERMINAL_STATUSES, Event, Task, TaskState, iso_ms

#: share of the whole job each stage covers, in percent: (start, end)
STAGE_SPAN_PERCENT = {"decode": (0, 10), "vad": (10, 15), "transcribe": (15, 90), "render": (90, 95), "publish": (95, 100)}
#: a URL job's download: the first part of the whole; the stages above share the rest
FETCH_SPAN_PERCENT = 20.0


def iso(at: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC to the millisecond; None stays None."""
    return None if at is None else iso_ms(at)


@dataclass(frozen=True)
class TaskView:
    """One task (a job) as everyone outside the store sees it."""

    id: str
    status: str
    batch_id: str | None = None
    key: str = ""
    kind: str = "transcribe"
    name: str = ""  # what people call it: the input relative to the folder given, or the plan task id
    input: str | None = None
    stage: str | None = None
    percent: float = 0.0
    stage_percent: float = 0.0
    attempts: int = 0
    error_code: str | None = None
    error_message: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # format -> published path (or URL, from a controller)
    formats: tuple[str, ...] = ()  # what it was asked to write
    options: dict[str, Any] = field(default_factory=dict)
    duration_s: float | None = None
    language: str | None = None
    guards: dict[str, int] | None = None  # how often each hallucination guard fired (pipeline/guards.py)
    slot: str | None = None
    node: str | None = None  # the machine of the slot's last attempt, where an engine says (Ray); needs the events
    execution_mode: str = "local"
    message: str | None = None  # what it waits for, in words ("Waiting for worker capacity")
    remote: dict[str, Any] | None = None  # {workerJobId, worker, lastSeenAt, gpu} of a remote job
    published: dict[str, str] = field(default_factory=dict)  # format -> s3:// URL (--publish)
    created_at: float | None = None
    updated_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    stages: tuple[dict[str, Any], ...] = ()  # stage_history(): [{stage, state, time_s, attempts}]
    warnings: tuple[str, ...] = ()  # what the model could not do of what was asked (pipeline.language)
    elapsed_s: float | None = None  # since its attempt started (to its end, once finished); jobs/eta.py
    eta_s: float | None = None  # seconds left: its audio left over the rate so far; None when it cannot tell
    fraction: float | None = None  # of its audio done (jobs/eta.audio_fraction); what a batch's ETA sums
    interrupted: bool = False  # running in the store, but no process holds its state dir: a killed run's

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def shown_status(self) -> str:
        """The status as people read it: `running (interrupted: ...)` for a task no run runs any more."""
        return f"{self.status} ({self.message})" if self.interrupted else self.status

    def as_json(self, **where: Any) -> dict[str, Any]:
        """The CLI's JSON (snake_case); `where` adds state_dir= or controller=."""
        return {
            "id": self.id, "job_id": self.id, "batch_id": self.batch_id, "key": self.key, "kind": self.kind,
            "name": self.name, "input": self.input, "state": self.status, "status": self.status, "stage": self.stage,
            "percent": self.percent, "stage_percent": self.stage_percent, "elapsed_s": whole(self.elapsed_s),
            "eta_s": whole(self.eta_s), "attempts": self.attempts,
            "error_code": self.error_code, "error_message": self.error_message, "outputs": dict(self.outputs),
            "duration_s": self.duration_s, "language": self.language, "guards": self.guards, "slot": self.slot,
            "published": dict(self.published), **self._seed_fields(), "warnings": list(self.warnings),
            **({"stages": list(self.stages)} if self.stages else {}), **({"node": self.node} if self.node else {}),
            **({"interrupted": True, "message": self.message} if self.interrupted else {}), **where,
        }  # fmt: skip

    def _seed_fields(self) -> dict[str, Any]:
        """Seed 003's check_yt_job fields: the SRT's place (its s3:// URL when published) and the error."""
        srt_path = self.published.get("srt") or self.outputs.get("srt")
        error = f"{self.error_code}: {self.error_message}" if self.error_code else None
        return {"srt_path": srt_path, "error": error}

    def as_api_json(self, *, slot_is_gpu: bool = False, remote: dict[str, Any] | None = None) -> dict[str, Any]:
        """The HTTP API's job (camelCase, docs/api.md); outputs are download URLs once complete.

        `remote`: the remote engine's live view of a remote job (else the one its result kept).
        """
        worker = None
        if self.slot is not None or self.status != TaskState.QUEUED.value and self.started_at is not None:
            seen = self.updated_at if self.status == TaskState.RUNNING.value else self.finished_at or self.updated_at
            worker = {"slot": self.slot, "gpu": slot_is_gpu, "lastSeenAt": iso(seen), **({"node": self.node} if self.node else {})}
        remote = remote or self.remote
        if self.execution_mode == "remote" and remote:
            worker = {**(worker or {}), **remote}
        complete = self.status == TaskState.COMPLETE.value
        return {
            "id": self.id,
            "batchId": self.batch_id,
            "status": self.status,
            "executionMode": self.execution_mode,
            "kind": self.kind,
            "filename": self.name,
            "progress": {"stage": self.stage, "percent": self.percent, "stagePercent": self.stage_percent,
                         "elapsedS": whole(self.elapsed_s), "etaS": whole(self.eta_s)},
            "worker": worker,
            "lastErrorCode": self.error_code,
            "lastErrorMessage": self.error_message,
            "message": self.message,
            "outputs": {f: f"/api/jobs/{self.id}/outputs/{f}" for f in self.formats} if complete else {},
            "options": self.options,
            "attempts": self.attempts,
            "audioDurationS": self.duration_s,
            "language": self.language,
            "guards": self.guards,
            "warnings": list(self.warnings),
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
            "startedAt": iso(self.started_at),
            "finishedAt": iso(self.finished_at),
            **({"stages": [_camel(s) for s in self.stages]} if self.stages else {}),
        }

    @classmethod
    def from_api(cls, job: dict[str, Any], base_url: str = "") -> TaskView:
        """A controller's job JSON as a view; relative output URLs made absolute against `base_url`."""
        progress = job.get("progress") if isinstance(job.get("progress"), dict) else {}
        worker = job.get("worker") if isinstance(job.get("worker"), dict) else {}
        outputs = job.get("outputs") if isinstance(job.get("outputs"), dict) else {}
        job_id = str(job.get("id") or job.get("jobId") or "")
        return cls(
            id=job_id, status=str(job.get("status") or "unknown"), batch_id=job.get("batchId"),
            kind=str(job.get("kind") or "transcribe"), name=str(job.get("filename") or job.get("name") or job_id),
            input=job.get("filename"), stage=progress.get("stage"), percent=_number(progress.get("percent")),
            stage_percent=_number(progress.get("stagePercent")), attempts=int(_number(job.get("attempts"))),
            elapsed_s=_optional(progress.get("elapsedS")), eta_s=_optional(progress.get("etaS")),
            error_code=job.get("lastErrorCode"), error_message=job.get("lastErrorMessage"),
            outputs={f: base_url + u if str(u).startswith("/") else str(u) for f, u in outputs.items() if u},
            formats=tuple(outputs), options=dict(job.get("options") or {}), duration_s=job.get("audioDurationS"),
            language=job.get("language"), guards=job.get("guards") if isinstance(job.get("guards"), dict) else None,
            slot=worker.get("slot") or worker.get("name"),
            execution_mode=str(job.get("executionMode") or "local"), warnings=tuple(job.get("warnings") or ()),
            message=job.get("message") if isinstance(job.get("message"), str) else None,
        )  # fmt: skip


def _camel(stage: dict[str, Any]) -> dict[str, Any]:
    return {"stage": stage["stage"], "state": stage["state"], "timeS": stage["time_s"], "attempts": stage["attempts"]}


#: events that end an attempt, and the state they leave the stage the attempt was in
_ATTEMPT_ENDS = {"completed": "done", "failed": "failed", "canceled": "canceled", "retry": "interrupted",
                 "recovered": "interrupted"}  # fmt: skip


def stage_history(task: Task, events: list[Event]) -> tuple[dict[str, Any], ...]:
    """Each pipeline stage of a transcribe task: state (pending, running, done, skipped, failed, canceled,
    interrupted, unused), time spent in it over every attempt, and the attempts that reached it.

    Read from the task's events since it was last queued afresh (a rerun starts a new history); a stage
    a finished task took from its checkpoint is `skipped` (the result's `stages_run` lists those that ran).
    """
    from scribefleet.pipeline.stages import STAGES  # the stage names are the pipeline's

    if task.kind != "transcribe":
        return ()
    since = max((i for i, e in enumerate(events) if e.type == "reset"), default=-1) + 1
    rows = {name: {"stage": name, "state": "pending", "time_s": 0.0, "attempts": 0} for name in STAGES}
    current: str | None = None
    entered = 0.0
    for event in events[since:]:
        if event.type == "dispatched":
            current = None
        elif event.type == "stage" and event.data.get("stage") in rows:
            if current is not None:
                rows[current]["state"] = "done"
                rows[current]["time_s"] += event.at - entered
            current, entered = event.data["stage"], event.at
            rows[current]["state"] = "running"
            rows[current]["attempts"] += 1
        elif event.type in _ATTEMPT_ENDS and current is not None:
            rows[current]["state"] = _ATTEMPT_ENDS[event.type]
            rows[current]["time_s"] += event.at - entered
            current = None
    unused = {"fetch"} if not task.spec.get("url") else set()
    if not (task.spec.get("options") or {}).get("diarize"):
        unused.add("diarize")
    for name in unused:  # stages this job has no use for: a file needs no fetch, speakers only when asked
        rows[name]["state"] = "unused"
    ran = (task.result or {}).get("stages_run")
    if task.is_complete and isinstance(ran, list):
        timings = (task.result or {}).get("timings_s") or {}
        for name, row in rows.items():
            row["state"] = "done" if name in ran else "unused" if name in unused else "skipped"
            row["time_s"] = timings.get(name, 0.0) if name in ran else 0.0
    for row in rows.values():
        row["time_s"] = round(row["time_s"], 3)
    return tuple(rows.values())


def _number(value: Any) -> float:
    """A number from JSON written by any controller version; 0 for what is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _optional(value: Any) -> float | None:
    return None if value is None else _number(value)


def _times(task: Task, now: float) -> tuple[float | None, float | None, float | None]:
    """(elapsed_s, eta_s, audio fraction done) of a task (jobs/eta.py)."""
    fraction = eta.audio_fraction(task.kind, task.stage, task.progress or 0.0, complete=task.is_complete)
    if task.started_at is None or task.is_queued:
        return None, None, 0.0 if task.is_queued else fraction
    elapsed = max(0.0, (task.finished_at if task.is_terminal and task.finished_at else now) - task.started_at)
    if task.is_terminal:
        return elapsed, 0.0 if task.is_complete else None, fraction
    return elapsed, eta.eta_s(elapsed, fraction, task.audio_s), fraction


def batch_progress(views: Iterable[TaskView], now: float | None = None) -> eta.BatchTimes:
    """A batch's audio, audio done, elapsed time (since its first task started) and ETA, from its tasks' views."""
    views = list(views)
    now = time.time() if now is None else now
    started = [v.started_at for v in views if v.started_at is not None]
    if not started:
        elapsed = None
    elif all(v.is_terminal for v in views):
        elapsed = max(v.finished_at or v.started_at or 0.0 for v in views) - min(started)
    else:
        elapsed = now - min(started)
    status = {QUEUED_REMOTE: "queued"}
    files = [eta.FileProgress(status.get(v.status, v.status), v.fraction, v.duration_s) for v in views]
    return eta.batch_progress(files, elapsed)


def _percent(task: Task) -> float:
    if task.state is TaskState.COMPLETE:
        return 100.0
    if task.stage == "fetch":
        return round(FETCH_SPAN_PERCENT * task.progress, 1)
    start, end = STAGE_SPAN_PERCENT.get(task.stage or "", (0, 0))
    percent = start + (end - start) * task.progress if task.stage in STAGE_SPAN_PERCENT else 0.0
    if task.spec.get("url") and task.stage:
        percent = FETCH_SPAN_PERCENT + (100 - FETCH_SPAN_PERCENT) * percent / 100
    return round(percent, 1)


WAITING_FOR_CAPACITY = "Waiting for worker capacity"
QUEUED_REMOTE = "queued_remote"
#: what `status` says of a task the store calls running while no process holds its state dir (kill -9 of its run)
INTERRUPTED = "interrupted: no run holds this folder; rerun to resume"


def _status(task: Task) -> tuple[str, str | None]:
    """The status a client sees, and what it waits for: a remote job waiting for a worker is queued_remote."""
    if task.spec.get("remote") and (task.is_queued or task.is_running and task.stage == QUEUED_REMOTE):
        return QUEUED_REMOTE, WAITING_FOR_CAPACITY
    return task.state.value, None


def task_view(task: Task, events: list[Event] | None = None, now: float | None = None, *,
              orphaned: bool = False) -> TaskView:
    """A store task as its public view (times as of `now`, default now); with its events (in order), each
    stage's history too. `orphaned`: no process holds the task's state dir (`DispatcherLock.is_held`), so a
    task still running in the store is one a killed run left: interrupted, its time stopped when it was
    last heard of (the next run queues it again)."""
    spec, result = task.spec, task.result or {}
    status, message = _status(task)
    interrupted = orphaned and task.is_running
    if interrupted:
        message = INTERRUPTED
        now = task.updated_at
    elapsed_s, eta_s, fraction = _times(task, time.time() if now is None else now)
    if interrupted:
        eta_s = None
    return TaskView(
        id=task.id, status=status, message=message,
        execution_mode="remote" if spec.get("remote") else "local", remote=result.get("remote"), batch_id=task.batch_id, key=task.key, kind=task.kind,
        name=str(spec.get("display") or task.key), input=spec.get("input_path") or spec.get("url") or task.key,
        stage=task.stage,
        percent=_percent(task), stage_percent=100.0 if task.is_complete else round(100.0 * (task.progress or 0.0), 1),
        attempts=task.attempts, error_code=task.error_code, error_message=task.error_message,
        outputs=dict(result.get("outputs") or {}), formats=tuple((spec.get("outputs") or {}).keys()),
        options=dict(spec.get("options") or {}), duration_s=result.get("duration_s") or task.audio_s,
        language=result.get("language"), elapsed_s=elapsed_s, eta_s=eta_s, fraction=fraction,
        guards=result.get("guards"), slot=task.slot, created_at=task.created_at, updated_at=task.updated_at,
        started_at=task.started_at, finished_at=task.finished_at, published=dict(result.get("published") or {}),
        node=next((e.data.get("node") for e in reversed(events or []) if e.type == "dispatched"), None),
        stages=stage_history(task, events) if events is not None else (), warnings=tuple(result.get("warnings") or ()),
        interrupted=interrupted,
    )  # fmt: skip
