"""RemoteJobs: the controller's jobs on remote workers, as the remote engine must remember them across restarts.

One row per job the controller made on a worker (engines/remote.py): the
worker's URL and job id, the task and attempt (its Idempotency-Key) it runs,
and two facts a restarted controller would otherwise lose:

- `away_since`: when the worker stopped answering about it (epoch seconds,
  NULL while it answers). A restarted controller that finds the worker still
  away keeps following the job there and fails it over to another worker
  when SCRIBEFLEET_REMOTE_WORKER_FAILOVER_S have passed since that moment,
  when the first controller would have, not a whole period later and not at
  once.
- `state`: `active` while a task's attempt follows it, `orphan` once nobody
  does (its task went to another worker, or ended, while this worker was
  away): the controller cancels it when the worker answers again, instead of
  leaving it to run for nobody until the worker's own abandon timer.

A row goes when its job has ended on the worker, or was canceled there. It
has its own connection to the store file (the engine's threads write it,
never the dispatcher's transactions) and no events: it is the engine's
bookkeeping, not a task's history.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from scribefleet.store.models import TERMINAL_STATUSES
from scribefleet.store.schema import connect, write_failed


@dataclass(frozen=True)
class RemoteJob:
    """One job the controller made on a remote worker."""

    worker_url: str
    worker_job_id: str
    task_id: str
    attempt_key: str
    state: str  # active | orphan
    away_since: float | None


class RemoteJobs:
    """The remote_jobs table of one state folder, on a connection of its own (safe from any thread)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "store.sqlite"
        self._conn = connect(self.path)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _write(self, sql: str, args: Iterable[object]) -> None:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute(sql, tuple(args))
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise (write_failed(exc, self.path) or exc) from exc

    def started(self, worker_url: str, worker_job_id: str, task_id: str, attempt_key: str) -> None:
        """A task's attempt follows this job (made or found again on the worker); it answers."""
        self._write(
            "INSERT INTO remote_jobs (worker_url, worker_job_id, task_id, attempt_key, state, away_since, updated_at)"
            " VALUES (?,?,?,?, 'active', NULL, ?) ON CONFLICT (worker_url, worker_job_id) DO UPDATE SET"
            " task_id = excluded.task_id, attempt_key = excluded.attempt_key, state = 'active', away_since = NULL,"
            " updated_at = excluded.updated_at",
            (worker_url, worker_job_id, task_id, attempt_key, time.time()),
        )

    def away(self, worker_url: str, worker_job_id: str, since: float | None) -> None:
        """Its worker has not answered since `since` (epoch seconds); None: it answers again."""
        self._write("UPDATE remote_jobs SET away_since = ?, updated_at = ? WHERE worker_url = ? AND worker_job_id = ?",
                    (since, time.time(), worker_url, worker_job_id))  # fmt: skip

    def orphaned(self, worker_url: str, worker_job_id: str) -> None:
        """Nobody follows the job any more: cancel it when its worker answers."""
        self._write("UPDATE remote_jobs SET state = 'orphan', updated_at = ? WHERE worker_url = ? AND worker_job_id = ?",
                    (time.time(), worker_url, worker_job_id))  # fmt: skip

    def forget(self, worker_url: str, worker_job_id: str) -> None:
        """The job ended on its worker, or was canceled there."""
        self._write("DELETE FROM remote_jobs WHERE worker_url = ? AND worker_job_id = ?", (worker_url, worker_job_id))

    def of_attempt(self, attempt_key: str) -> list[RemoteJob]:
        """The active jobs of an attempt (one, unless a worker was given the same key twice)."""
        return self._select("attempt_key = ? AND state = 'active'", (attempt_key,))

    def orphans(self, worker_url: str) -> list[RemoteJob]:
        return self._select("worker_url = ? AND state = 'orphan'", (worker_url,))

    def tidy(self, worker_urls: Iterable[str]) -> None:
        """At start: the jobs of tasks that ended meanwhile are orphans; those of workers no longer configured
        (nobody can reach them) are forgotten."""
        urls = list(worker_urls)
        ended = ",".join("?" * len(TERMINAL_STATUSES))
        self._write(f"UPDATE remote_jobs SET state = 'orphan' WHERE state = 'active' AND task_id IN "
                    f"(SELECT id FROM tasks WHERE state IN ({ended}))", sorted(TERMINAL_STATUSES))  # fmt: skip
        self._write(f"DELETE FROM remote_jobs WHERE worker_url NOT IN ({','.join('?' * len(urls))})", urls)

    def _select(self, where: str, args: tuple[object, ...]) -> list[RemoteJob]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT worker_url, worker_job_id, task_id, attempt_key, state, away_since FROM remote_jobs "
                f"WHERE {where} ORDER BY updated_at", args,
            ).fetchall()  # fmt: skip
        return [RemoteJob(*tuple(r)) for r in rows]
