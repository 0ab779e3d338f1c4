"""What the remote engine remembers of its jobs on workers, kept in the store so that failover outlives a restart.

`JobRecord` is the remote engine's (engines/remote.py) view of the store's
`remote_jobs` table (store/remote_jobs.py): a job is `started` when made or
found again on a worker, `away` while its worker does not answer (since
when), `orphaned` when nobody follows it any more (its task went to another
worker, or ended, or its cancel did not reach the worker), and forgotten
once it ended there or was canceled. `cancel_orphans` cancels a worker's
orphans when it answers again. A record that cannot be written is logged,
never a failure of the job: what is lost is only a restarted controller's
knowledge of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from scribefleet.engines.remote_http import WorkerClient
from scribefleet.errors import ScribefleetError
from scribefleet.store.remote_jobs import RemoteJob, RemoteJobs

log = logging.getLogger("scribefleet.remote")

T = TypeVar("T")


class JobRecord:
    """The remote engine's jobs on workers, in the store of `state_dir` (None: nothing is recorded)."""

    def __init__(self, state_dir: Path | None) -> None:
        self.state_dir = state_dir
        self._jobs: RemoteJobs | None = None

    def open(self, worker_urls: Iterable[str]) -> None:
        """Open the record (once) and tidy it: orphans of ended tasks, workers no longer configured."""
        if self._jobs is None and self.state_dir is not None:
            self._jobs = RemoteJobs(self.state_dir)
            self._do(lambda jobs: jobs.tidy(worker_urls), None)

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.close()
            self._jobs = None

    def _do(self, change: Callable[[RemoteJobs], T], default: T) -> T:
        jobs = self._jobs
        if jobs is None:
            return default
        try:
            return change(jobs)
        except Exception as exc:  # noqa: BLE001 - bookkeeping never fails a job
            log.warning("remote_record_failed: %s", exc)
            return default

    def started(self, worker_url: str, worker_job_id: str, task_id: str, attempt_key: str) -> None:
        self._do(lambda jobs: jobs.started(worker_url, worker_job_id, task_id, attempt_key), None)

    def away(self, worker_url: str, worker_job_id: str, since: float | None) -> None:
        self._do(lambda jobs: jobs.away(worker_url, worker_job_id, since), None)

    def orphaned(self, worker_url: str, worker_job_id: str) -> None:
        self._do(lambda jobs: jobs.orphaned(worker_url, worker_job_id), None)

    def forget(self, worker_url: str, worker_job_id: str) -> None:
        self._do(lambda jobs: jobs.forget(worker_url, worker_job_id), None)

    def of_attempt(self, attempt_key: str) -> list[RemoteJob]:
        return self._do(lambda jobs: jobs.of_attempt(attempt_key), [])

    def cancel_orphans(self, client: WorkerClient) -> None:
        """A worker is back: cancel its jobs nobody follows any more (their tasks went to another worker, or
        ended, meanwhile); one it no longer has is forgotten, one it could not cancel is tried at the next ping."""
        for orphan in self._do(lambda jobs: jobs.orphans(client.url), []):
            try:
                client.cancel(orphan.worker_job_id)  # None when it no longer knows the job: forgotten too
                log.info("remote_canceled: job %s on %s (its task went to another worker or ended while this one "
                         "was away)", orphan.worker_job_id, client.url)  # fmt: skip
            except ScribefleetError as err:
                log.warning("remote_cancel_failed: job %s on %s [%s]: %s", orphan.worker_job_id, client.url,
                            err.code, err.message)  # fmt: skip
                continue
            self.forget(orphan.worker_url, orphan.worker_job_id)
