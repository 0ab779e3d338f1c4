"""The rows of the store as Python values: task states, tasks, batches, events.

These are read-only snapshots. Only the dispatcher changes a task's state, and
it does so through `Store` methods, each one transaction that also records an
event; a snapshot never writes itself back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class TaskState(str, Enum):
    """Where a task is in its life: queued -> running -> one terminal state."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELED = "canceled"
    SKIPPED = "skipped"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def is_bad_end(self) -> bool:
        """Terminal without a result: dependents of such a task are skipped."""
        return self in (TaskState.FAILED, TaskState.CANCELED, TaskState.SKIPPED)


TERMINAL_STATES = frozenset({TaskState.COMPLETE, TaskState.FAILED, TaskState.CANCELED, TaskState.SKIPPED})
#: the same, as the wire strings a client reads in a job's `status`
TERMINAL_STATUSES = frozenset(s.value for s in TERMINAL_STATES)


class TaskKind(str, Enum):
    """What a task does; a slot has one handler per kind (worker/kinds.py), a plan names them in `kind:`."""

    TRANSCRIBE = "transcribe"
    SHELL = "shell"
    AGGREGATE = "aggregate"
    LLM = "llm"


TASK_KINDS: tuple[str, ...] = tuple(k.value for k in TaskKind)

#: where a task may run: "gpu" only on cuda slots, "cpu" on CPU slots (any slot when
#: the engine has none), "any" anywhere
RESOURCES = ("cpu", "gpu", "any")


def iso_ms(at: float) -> str:
    """Epoch seconds as `2026-11-23T13:37:29.123Z` (the log format)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass(frozen=True)
class Batch:
    """A group of tasks submitted together (one `transcribe` run, one plan)."""

    id: str
    key: str
    kind: str
    spec: dict[str, Any]
    out_dir: str | None
    created_at: float

    @classmethod
    def from_row(cls, row: Any) -> Batch:
        return cls(row["id"], row["key"], row["kind"], _json(row["spec"]) or {}, row["out_dir"], row["created_at"])


@dataclass(frozen=True)
class Task:
    """One unit of work: a kind, its spec, and where it stands."""

    id: str
    batch_id: str
    key: str
    kind: str
    spec: dict[str, Any]
    state: TaskState
    stage: str | None
    progress: float
    attempts: int
    max_attempts: int
    timeout_s: float
    resources: str
    slot: str | None
    content_key: str | None
    error_code: str | None
    error_message: str | None
    error_details: dict[str, Any] | None
    result: dict[str, Any] | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    needs: tuple[str, ...] = field(default=())
    seq: int = 0  # submission order (needs always come before the tasks that need them)
    audio_s: float | None = None  # seconds of audio of its input: its header's, then what a slot decoded

    @classmethod
    def from_row(cls, row: Any, needs: tuple[str, ...] = ()) -> Task:
        return cls(
            id=row["id"],
            batch_id=row["batch_id"],
            key=row["key"],
            kind=row["kind"],
            spec=_json(row["spec"]) or {},
            state=TaskState(row["state"]),
            stage=row["stage"],
            progress=row["progress"],
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            timeout_s=row["timeout_s"],
            resources=row["resources"],
            slot=row["slot"],
            content_key=row["content_key"],
            error_code=row["error_code"],
            error_message=row["error_message"],
            error_details=_json(row["error_details"]),
            result=_json(row["result"]),
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            updated_at=row["updated_at"],
            needs=needs,
            seq=row["seq"],
            audio_s=row["audio_s"],
        )

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal

    @property
    def is_queued(self) -> bool:
        return self.state is TaskState.QUEUED

    @property
    def is_running(self) -> bool:
        return self.state is TaskState.RUNNING

    @property
    def is_complete(self) -> bool:
        return self.state is TaskState.COMPLETE

    @property
    def model_id(self) -> str | None:
        """The model this task needs loaded (spec key `model_id`), for model-affine dispatch."""
        value = self.spec.get("model_id")
        return str(value) if value else None

    @property
    def elapsed_s(self) -> float | None:
        """Seconds from the start of the last attempt to its end (or to now while running)."""
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else time.time()
        return max(0.0, end - self.started_at)


@dataclass(frozen=True)
class Event:
    """One recorded change: a task state change, a stage change, a batch creation..."""

    id: int
    batch_id: str
    task_id: str | None
    at: float
    type: str
    data: dict[str, Any]

    @classmethod
    def from_row(cls, row: Any) -> Event:
        return cls(row["id"], row["batch_id"], row["task_id"], row["at"], row["type"], _json(row["data"]) or {})

    def to_json(self) -> dict[str, Any]:
        """The events.jsonl shape."""
        return {
            "id": self.id,
            "at": iso_ms(self.at),
            "batch_id": self.batch_id,
            "task_id": self.task_id,
            "type": self.type,
            **({"data": self.data} if self.data else {}),
        }
