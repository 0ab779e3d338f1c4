"""The remote engine's pieces (engines/remote.py): the workers as the controller knows them, one attempt of a task
on a worker, and a place on a worker as a slot."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from scribefleet.config import Settings
from scribefleet.engines.base import SlotHandle
from scribefleet.engines.remote_http import WorkerClient
from scribefleet.store.models import iso_ms


def worker_urls(settings: Settings) -> list[str]:
    """REMOTE_WORKER_URL split on commas; a worker named twice (`http://a:8477,http://a:8477/`) counts once,
    else its places would count twice and the jobs beyond its real places would spin on its 429."""
    urls = (u.strip().rstrip("/") for u in (settings.remote_worker_url or "").split(","))
    return list(dict.fromkeys(u for u in urls if u))


@dataclass
class RemoteWorker:
    """One worker as the controller knows it: its client, whether it answers, what its last ping said."""

    index: int
    client: WorkerClient
    connected: bool = False
    capabilities: dict[str, Any] = field(default_factory=dict)
    failures: int = 0  # consecutive failed pings
    unauthorized: bool = False  # it refused our token: its jobs fail at once instead of waiting
    last_error: dict[str, Any] | None = None
    last_seen_at: float | None = None  # epoch seconds of the last answer

    @property
    def name(self) -> str:
        return f"remote{self.index}"

    def view(self) -> dict[str, Any]:
        caps = self.capabilities
        return {
            "name": self.name,
            "url": self.client.url,
            "connected": self.connected,
            "unauthorized": self.unauthorized,
            "workerCapabilities": {k: caps.get(k) for k in ("activeJobs", "maxConcurrentJobs", "gpu", "gpuName")},
            "models": caps.get("models") or [],
            "lastSeenAt": iso_ms(self.last_seen_at) if self.last_seen_at else None,
            "lastError": self.last_error,
        }


class Attempt:
    """One task on a remote worker: where it went, and the flags that end it early."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.canceled = threading.Event()  # kill(): tell the worker, then end
        self.detached = threading.Event()  # stop(): end, leave the worker's job running
        self.finished = threading.Event()
        self.worker: RemoteWorker | None = None
        self.worker_job_id: str | None = None
        self.last_seen_at: float | None = None
        self.last_error: dict[str, Any] | None = None  # of the last failed call while it goes on trying
        self.away_since: float | None = None  # epoch s: its worker stopped answering (a record's, at re-attach)
        self.handed_over = False  # its job's record outlives the attempt (an orphan to cancel), not forgotten

    def wait(self, delay_s: float) -> bool:
        """Sleep up to `delay_s`; True when the attempt must end (canceled or detached)."""
        deadline = time.monotonic() + delay_s
        while not (self.canceled.is_set() or self.detached.is_set()):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.canceled.wait(min(left, 0.2))
        return True

    def view(self) -> dict[str, Any]:
        caps = self.worker.capabilities if self.worker else {}
        return {
            "workerJobId": self.worker_job_id,
            "worker": self.worker.client.url if self.worker else None,
            "lastSeenAt": iso_ms(self.last_seen_at) if self.last_seen_at else None,
            "gpu": bool(caps.get("gpu")),
            "lastError": self.last_error,
        }


@dataclass
class RemoteSlot(SlotHandle):
    """One place on a remote worker."""

    worker: RemoteWorker | None = None
    generation: int = 0
    attempt: Attempt | None = None

