"""RemoteEngine: the controller's local slots plus places on remote workers (seed 001), behind one Engine.

The dispatcher knows one engine; this one holds the local engine it was given
and adds a slot (device "remote") per place on each remote worker. A remote
slot runs only tasks whose resources are "remote" (dispatch/placement.py),
and a local slot never does. How many places a worker has comes from its
`GET /v1/ping` (maxConcurrentJobs), asked by a watcher thread every
REMOTE_WORKER_POLL_SECONDS; the worker still decides (it answers 429 when
full), so the slots are only how many attempts try at once.

Running a task on a remote slot is a thread of its own (`_work`):

1. re-attach: a worker that already holds a job with the attempt's
   Idempotency-Key (`<task id>-<attempt>`; a controller killed mid-job
   recovers the task with the same attempt number) is followed, nothing is
   sent again;
2. else upload the media with POST /v1/jobs; while the worker is full (429)
   or unreachable the task reports stage `queued_remote` and tries again
   with backoff and jitter, until REMOTE_WORKER_TIMEOUT_SECONDS;
3. poll GET /v1/jobs/{id} with backoff and jitter (back to the first delay
   whenever progress moves); a poll that fails is logged and repeated, so a
   worker that goes away for a while only delays the job. One that stays
   away (marked unreachable, no answer for SCRIBEFLEET_REMOTE_WORKER_FAILOVER_S)
   while another worker answers fails the attempt as retryable
   (`remote_failover`): the dispatcher counts it and sends the job again, to
   a worker that answers. Its job on the lost worker is canceled if that
   worker comes back (it would else run for nobody until its abandon timer);
4. download each output to the task's output path atomically; done.

Cancel (`kill`) tells the worker (POST cancel). `stop()` only detaches: the
worker keeps running its jobs and the next controller re-attaches.

What failover needs outlives the controller (engines/remote_record.py over
store/remote_jobs.py): each job
made on a worker, since when its worker has not answered, and the copies
left on lost workers. A restarted controller re-attaches a task to its job
through that record even while the worker is away (it does not send the job
elsewhere at once), fails it over when the worker has been away for
SCRIBEFLEET_REMOTE_WORKER_FAILOVER_S counted from when the first controller
saw it go, and cancels the copies (also those of tasks that ended while no
controller ran) when their worker answers again. Every
decision is logged on `scribefleet.remote` with a `remote_` or `capacity`
word, so `grep -E 'remote_|capacity'` on the controller's log tells a job's
remote life.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scribefleet.config import Settings
from scribefleet.engines.base import Engine, SlotEvent, SlotHandle, SlotSpec, SlotStatus, TaskRun
from scribefleet.engines.remote_http import WorkerClient, next_delay
from scribefleet.engines.remote_parts import Attempt, RemoteSlot, RemoteWorker, worker_urls
from scribefleet.engines.remote_record import JobRecord
from scribefleet.errors import (
    NotFound,
    RemoteFailed,
    RemoteWorkerCapacity,
    RemoteWorkerError,
    RemoteWorkerTimeout,
    RemoteWorkerUnauthorized,
    RemoteWorkerUnreachable,
    ScribefleetError,
)
from scribefleet.store.remote_jobs import RemoteJob

log = logging.getLogger("scribefleet.remote")

__all__ = ["REMOTE_DEVICE", "RemoteEngine", "worker_urls"]

REMOTE_DEVICE = "remote"
#: consecutive failed pings after which a worker is marked unreachable (one failure is a blip)
UNREACHABLE_AFTER = 3
WAITING_STAGE = "queued_remote"
KILL_WAIT_S = 10.0


class _Fail(Exception):
    """How an attempt ends badly: the error, and whether another attempt may succeed."""

    def __init__(self, error: ScribefleetError, retryable: bool = False) -> None:
        super().__init__(error.message)
        self.error, self.retryable = error, retryable


class RemoteEngine(Engine):
    """A local engine's slots plus one slot per place on each remote worker."""

    def __init__(self, settings: Settings, local: Engine, urls: Sequence[str], *, state_dir: Path | None = None) -> None:
        """`state_dir`: where the jobs on workers are recorded (store/remote_jobs.py); None records nothing."""
        self.settings, self.local = settings, local
        token = settings.remote_worker_token.get_secret_value() if settings.remote_worker_token else None
        self.workers = [RemoteWorker(i, WorkerClient(u, token)) for i, u in enumerate(urls)]
        self._remote: dict[str, RemoteSlot] = {}
        self._inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._attempts: dict[str, Attempt] = {}  # task id -> its attempt, for the job views
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.poll_s = settings.remote_worker_poll_s
        self.poll_max_s = max(self.poll_s, min(60.0, 8 * self.poll_s))
        self.record = JobRecord(state_dir)  # the jobs on workers, as a restarted controller needs them

    # -- views ---------------------------------------------------------------

    @property
    def slots(self) -> list[SlotHandle]:
        return [*self.local.slots, *list(self._remote.values())]

    def slot(self, name: str) -> SlotHandle:
        return self._remote[name] if name in self._remote else self.local.slot(name)

    def task_view(self, task_id: str) -> dict[str, Any] | None:
        attempt = self._attempts.get(task_id)
        return attempt.view() if attempt is not None else None

    def workers_view(self) -> list[dict[str, Any]]:
        return [w.view() for w in self.workers]

    def wait_error(self) -> dict[str, Any] | None:
        """Why remote jobs cannot start now: the error of the workers when none answers (a stretch of failures)."""
        if any(w.connected for w in self.workers):
            return None
        down = [w for w in self.workers if w.last_error and (w.unauthorized or w.failures >= UNREACHABLE_AFTER)]
        return down[0].last_error if down else None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        self.local.start()
        self.record.open(w.client.url for w in self.workers)
        if self._watcher is None:
            self._stop.clear()
            self._watcher = threading.Thread(target=self._watch, name="remote-watcher", daemon=True)
            self._watcher.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop watching and detach from remote jobs (the workers keep them; the next start re-attaches)."""
        self._stop.set()
        for h in self._remote.values():
            if h.attempt is not None:
                h.attempt.detached.set()
        for h in self._remote.values():
            if h.attempt is not None:
                h.attempt.finished.wait(timeout_s)
        if self._watcher is not None:
            self._watcher.join(timeout_s)
            self._watcher = None
        self.local.stop(timeout_s)
        for w in self.workers:
            w.client.close()
        self.record.close()

    def restart(self, name: str) -> bool:
        if name not in self._remote:
            return self.local.restart(name)
        h = self._remote[name]
        if h.status.is_alive:
            return True
        h.generation += 1
        h.status = SlotStatus.STARTING
        if h.worker is not None and h.worker.connected:
            self._inbox.put(("ready", name, h.generation))
        return True

    # -- work ----------------------------------------------------------------

    def assign(self, name: str, run: TaskRun) -> bool:
        if name not in self._remote:
            return self.local.assign(name, run)
        h = self._remote[name]
        if h.status is not SlotStatus.IDLE:
            raise RuntimeError(f"slot {name} is {h.status.value}, not idle")
        attempt = Attempt(str(run["task_id"]))
        attempt.worker = h.worker
        h.status, h.task_id, h.attempt = SlotStatus.BUSY, attempt.task_id, attempt
        self._attempts[attempt.task_id] = attempt
        args = (name, h.generation, attempt, dict(run))
        threading.Thread(target=self._work, args=args, name=f"slot-{name}", daemon=True).start()
        return True

    def kill(self, name: str) -> SlotEvent | None:
        if name not in self._remote:
            return self.local.kill(name)
        h = self._remote[name]
        if not h.status.is_alive:
            return None
        task_id, was = h.task_id, h.status
        if h.attempt is not None:
            h.attempt.canceled.set()  # its thread tells the worker, then ends
            if not h.attempt.finished.wait(KILL_WAIT_S):
                log.warning("remote_cancel: slot %s did not end its attempt within %.0f s", name, KILL_WAIT_S)
        h.generation += 1
        self._attempts.pop(str(task_id), None)
        h.status, h.task_id, h.attempt = SlotStatus.DEAD, None, None
        return SlotEvent(name, "died", task_id=task_id, exit_code=0, tasks_done=h.tasks_done, was=was.value)

    def silent_slots(self, after_s: float) -> list[SlotHandle]:
        return list(self.local.silent_slots(after_s))

    def next_silence_at(self, after_s: float) -> float | None:
        return self.local.next_silence_at(after_s)

    # -- events --------------------------------------------------------------

    def poll(self, timeout_s: float) -> list[SlotEvent]:
        """The local engine's events and the remote ones (those at most 0.1 s late)."""
        events = self._drain()
        events += self.local.poll(0.0 if events else min(timeout_s, 0.1))
        return events + self._drain()

    def _drain(self) -> list[SlotEvent]:
        events: list[SlotEvent] = []
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return events
            kind, rest = item[0], item[1:]
            if kind == "worker":
                events += self._on_worker(*rest)
            elif kind == "ready":
                name, generation = rest
                h = self._remote.get(name)
                if h is not None and h.generation == generation and h.status is SlotStatus.STARTING:
                    h.status, h.last_heard_at = SlotStatus.IDLE, time.monotonic()
                    events.append(SlotEvent(name, "ready", {"ev": "ready", "models": h.models}))
            elif (event := self._on_message(*rest)) is not None:
                events.append(event)

    def _on_message(self, name: str, generation: int, msg: dict[str, Any]) -> SlotEvent | None:
        h = self._remote.get(name)
        if h is None or generation != h.generation:
            return None  # from an attempt killed meanwhile
        ev = str(msg.get("ev"))
        h.last_heard_at = time.monotonic()
        if ev in ("done", "failed") and msg.get("task_id") == h.task_id:
            self._attempts.pop(str(h.task_id), None)  # a done task's result keeps its remote view
            h.status, h.task_id, h.attempt = SlotStatus.IDLE, None, None
            h.tasks_done += ev == "done"
            if h.worker is not None and not h.worker.connected and not h.worker.unauthorized:
                h.status = SlotStatus.STARTING  # ready again when the worker answers
        return SlotEvent(name, ev, msg, task_id=msg.get("task_id") or h.task_id)

    def _on_worker(self, index: int, connected: bool, caps: dict[str, Any]) -> list[SlotEvent]:
        """A worker's ping changed: its places follow (in the dispatcher's thread, the only one that changes slots).

        A worker that refuses our token keeps one place, so each job sent there fails at once
        with REMOTE_WORKER_UNAUTHORIZED instead of waiting for a worker that will never take it.
        """
        w = self.workers[index]
        mine = [h for h in self._remote.values() if h.worker is w]
        events: list[SlotEvent] = []
        if connected or w.unauthorized:
            places = max(0, int(caps.get("maxConcurrentJobs") or 0)) if connected else max(1, len(mine))
            for j in range(len(mine), places):
                h = RemoteSlot(SlotSpec(f"{w.name}-{j}", REMOTE_DEVICE), group=w.name, worker=w)  # type: ignore[arg-type]
                self._remote[h.name] = h
                mine.append(h)
            for h in mine[places:]:
                if h.status is not SlotStatus.BUSY:
                    del self._remote[h.name]  # fewer places now; a busy one goes once it is idle again
            for h in mine[:places]:
                h.models = list(caps.get("models") or [])
                if h.status in (SlotStatus.STARTING, SlotStatus.DEAD):
                    h.generation += 1
                    h.status, h.last_heard_at = SlotStatus.IDLE, time.monotonic()
                    events.append(SlotEvent(h.name, "ready", {"ev": "ready", "models": h.models}))
        else:
            for h in mine:
                if h.status is SlotStatus.IDLE:
                    h.status = SlotStatus.STARTING  # no new task goes to a worker that does not answer
        events.append(SlotEvent(w.name, "slots_changed", {"worker": w.client.url, "connected": connected}))
        return events

    # -- the watcher: pings every worker ---------------------------------------

    def _watch(self) -> None:
        delays = [0.0] * len(self.workers)
        due = [0.0] * len(self.workers)
        while not self._stop.is_set():
            now = time.monotonic()
            for w in self.workers:
                if now >= due[w.index]:
                    ok = self._ping(w)
                    delays[w.index] = self.poll_s if ok else next_delay(delays[w.index], self.poll_s, self.poll_max_s)
                    due[w.index] = time.monotonic() + delays[w.index]
            self._stop.wait(max(0.05, min(due) - time.monotonic()))

    def _ping(self, w: RemoteWorker) -> bool:
        was = w.connected
        try:
            caps = w.client.ping()
        except RemoteWorkerUnauthorized as err:
            w.failures += 1
            w.last_error, w.connected = err.to_dict(), False
            if was or not w.unauthorized:
                w.unauthorized = True
                log.error("remote_worker_unauthorized: %s [%s]: %s", w.client.url, err.code, err.message)
                self._inbox.put(("worker", w.index, False, {}))
            return False
        except RemoteWorkerError as err:
            w.failures += 1
            w.last_error = err.to_dict()
            log.warning("remote_ping_failed: %s (%d in a row) [%s]: %s", w.client.url, w.failures, err.code, err.message)
            if w.failures == UNREACHABLE_AFTER:
                log.error("remote_worker_unreachable: %s did not answer %d pings in a row; its jobs wait",
                          w.client.url, w.failures)  # fmt: skip
            if w.failures >= UNREACHABLE_AFTER and w.connected:
                w.connected = False
                self._inbox.put(("worker", w.index, False, {}))
            return False
        changed = not was or caps.get("maxConcurrentJobs") != w.capabilities.get("maxConcurrentJobs")
        w.connected, w.unauthorized, w.failures, w.last_error, w.capabilities, w.last_seen_at = True, False, 0, None, caps, time.time()
        self.record.cancel_orphans(w.client)
        if changed:
            log.info(
                "remote_worker_connected: %s, capacity %s jobs (%s active), gpu %s, models %s",
                w.client.url, caps.get("maxConcurrentJobs"), caps.get("activeJobs"), caps.get("gpuName") or caps.get("gpu"),
                caps.get("models"),
            )  # fmt: skip
            self._inbox.put(("worker", w.index, True, caps))
        return True

    def _fail_over(self, attempt: Attempt, w: RemoteWorker, away_since: float) -> None:
        """Give the attempt up (retryable) when its worker stays away (since `away_since`, epoch seconds) and
        another one answers."""
        away_s = time.time() - away_since
        if w.connected or away_s < self.settings.remote_worker_failover_s:
            return
        others = [o.client.url for o in self.workers if o is not w and o.connected and not o.unauthorized]
        if not others:
            return  # nowhere else to go: wait for it (it resumes the job when it returns)
        if attempt.worker_job_id is not None:
            self.record.orphaned(w.client.url, attempt.worker_job_id)
            attempt.handed_over = True
        log.warning("remote_failover: task %s, worker %s has not answered for %.0f s "
                    "(SCRIBEFLEET_REMOTE_WORKER_FAILOVER_S); the job is sent again to a worker that answers (%s)",
                    attempt.task_id, w.client.url, away_s, ", ".join(others))  # fmt: skip
        raise _Fail(RemoteWorkerUnreachable(
            f"worker {w.client.url} has not answered for {away_s:.0f} s; the job is sent again to another worker",
            worker=w.client.url, workerJobId=attempt.worker_job_id), retryable=True)

    # -- one task on a worker ------------------------------------------------------

    def _work(self, name: str, generation: int, attempt: Attempt, run: dict[str, Any]) -> None:
        task_id = attempt.task_id

        def send(msg: dict[str, Any]) -> None:
            self._inbox.put(("msg", name, generation, {"task_id": task_id, **msg}))

        try:
            result = self._run(attempt, run, send)
            if result is not None:
                send({"ev": "done", "result": result})
        except _Fail as fail:
            log.error("remote_failed: task %s [%s]: %s", task_id, fail.error.code, fail.error.message)
            send({"ev": "failed", **fail.error.to_dict(), "retryable": fail.retryable})
        except Exception as exc:  # noqa: BLE001 - a bug fails the task, not the engine
            log.exception("remote_failed: task %s: a bug in the remote engine", task_id)
            send({"ev": "failed", "code": "INTERNAL_ERROR", "message": f"{type(exc).__name__}: {exc}",
                  "details": {"traceback": traceback.format_exc().splitlines()[-15:]}, "retryable": False})  # fmt: skip
        finally:
            self._settle(attempt)
            attempt.finished.set()

    def _settle(self, attempt: Attempt) -> None:
        """The record of an attempt's job once the attempt ended: kept when detached (the next controller
        re-attaches) or handed over (an orphan), else forgotten (the job ended or was canceled there)."""
        w, job_id = attempt.worker, attempt.worker_job_id
        if w is None or job_id is None or attempt.detached.is_set() or attempt.handed_over:
            return
        self.record.forget(w.client.url, job_id)

    def _run(self, attempt: Attempt, run: dict[str, Any], send: Any) -> dict[str, Any] | None:
        spec, task_id = dict(run.get("spec") or {}), attempt.task_id
        key = f"{task_id}-{run.get('attempt', 1)}"
        job = self._reattach(attempt, key) or self._dispatch(attempt, spec, key, send)
        if job is None:
            return None
        attempt.worker_job_id, attempt.last_seen_at = str(job.get("workerJobId") or job.get("id")), time.time()
        if attempt.away_since is None:  # it answered: (re)recorded as followed; a record of a worker away stays so
            assert attempt.worker is not None
            self.record.started(attempt.worker.client.url, attempt.worker_job_id, task_id, key)
        job = self._follow(attempt, job, send)
        if job is None:
            return None
        return self._fetch(attempt, job, spec)

    def _reattach(self, attempt: Attempt, key: str) -> dict[str, Any] | None:
        """The job a worker already holds for this attempt (the controller was restarted meanwhile): the recorded
        one first, followed on its worker even while that one is away (`_recorded`), else any worker's."""
        recorded = self._recorded(attempt, key)
        if recorded is not None:
            return recorded
        for w in self.workers:
            try:
                job = w.client.find(key)
            except RemoteWorkerUnauthorized as err:
                raise _Fail(err) from None
            except (RemoteWorkerError, NotFound):
                continue
            if job is not None:
                return _reattached(attempt, w, job)
        return None

    def _recorded(self, attempt: Attempt, key: str) -> dict[str, Any] | None:
        """The job recorded for this attempt, on a worker that has it or does not answer (then followed there,
        away since the record says, so it fails over when it would have); None when it has it no more."""
        for job in self.record.of_attempt(key):
            w = next((w for w in self.workers if w.client.url == job.worker_url), None)
            if w is None:
                continue
            try:
                found = w.client.find(key)
            except RemoteWorkerUnauthorized as err:
                raise _Fail(err) from None
            except RemoteWorkerUnreachable:
                return self._follow_away(attempt, w, job)
            except RemoteWorkerError:
                continue
            if found is not None:
                return _reattached(attempt, w, found)
            self.record.forget(job.worker_url, job.worker_job_id)  # the worker lost it
        return None

    def _follow_away(self, attempt: Attempt, w: RemoteWorker, job: RemoteJob) -> dict[str, Any]:
        attempt.worker, attempt.away_since = w, job.away_since or time.time()
        if job.away_since is None:
            self.record.away(job.worker_url, job.worker_job_id, attempt.away_since)
        log.warning("remote_reattached: task %s to job %s on %s, which does not answer (away for %.0f s); "
                    "it is followed there until SCRIBEFLEET_REMOTE_WORKER_FAILOVER_S", attempt.task_id,
                    job.worker_job_id, w.client.url, time.time() - attempt.away_since)  # fmt: skip
        return {"id": job.worker_job_id, "status": "running"}

    def _dispatch(self, attempt: Attempt, spec: dict[str, Any], key: str, send: Any) -> dict[str, Any] | None:
        """POST the job; while the worker is full or away, wait in queued_remote (backoff, jitter) up to the timeout."""
        w = attempt.worker
        assert w is not None
        deadline = time.monotonic() + self.settings.remote_worker_timeout_s
        delay_s = 0.0
        last: ScribefleetError | None = None
        away_since: float | None = None  # when this stretch of failed calls began
        media = Path(str(spec.get("input_path")))
        while True:
            try:
                job = w.client.create(media, str(spec.get("display") or media.name), dict(spec.get("options") or {}), key)
                away_since = None
                log.info("remote_dispatched: task %s to %s as job %s (idempotency key %s)", attempt.task_id,
                         w.client.url, job.get("id"), key)  # fmt: skip
                return job
            except RemoteWorkerCapacity as err:
                last = err
                delay_s = max(float(err.details.get("retryAfterS") or 0), next_delay(delay_s, self.poll_s, self.poll_max_s))
                log.info("capacity: task %s waits for worker %s (full); next try in %.1f s", attempt.task_id,
                         w.client.url, delay_s)  # fmt: skip
            except RemoteWorkerUnreachable as err:
                last, attempt.last_error = err, err.to_dict()
                away_since = away_since if away_since is not None else time.time()
                self._fail_over(attempt, w, away_since)
                delay_s = next_delay(delay_s, self.poll_s, self.poll_max_s)
                log.warning("remote_dispatch_retry: task %s, worker %s unreachable; next try in %.1f s",
                            attempt.task_id, w.client.url, delay_s)  # fmt: skip
            except RemoteWorkerUnauthorized as err:
                raise _Fail(err) from None
            except RemoteWorkerError as err:
                raise _Fail(err) from None
            send({"ev": "progress", "stage": WAITING_STAGE, "percent": 0.0})
            if time.monotonic() + delay_s > deadline:
                limit = self.settings.remote_worker_timeout_s
                if isinstance(last, RemoteWorkerCapacity):
                    raise _Fail(RemoteWorkerCapacity(
                        f"waited {limit:g} s (REMOTE_WORKER_TIMEOUT_SECONDS) for worker capacity; "
                        "send fewer jobs at once or raise WORKER_MAX_CONCURRENT_JOBS", worker=w.client.url))
                raise _Fail(RemoteWorkerTimeout(
                    f"worker {w.client.url} did not take the job within {limit:g} s (REMOTE_WORKER_TIMEOUT_SECONDS): "
                    "it was unreachable", worker=w.client.url))  # fmt: skip
            if attempt.wait(delay_s):
                return None

    def _follow(self, attempt: Attempt, job: dict[str, Any], send: Any) -> dict[str, Any] | None:
        """Poll the worker's job until it ends (backoff with jitter while nothing moves); the final job JSON."""
        w, job_id = attempt.worker, str(attempt.worker_job_id)
        assert w is not None
        deadline = time.monotonic() + self.settings.remote_worker_timeout_s
        delay_s, last, failures = self.poll_s, None, 0
        away_since = attempt.away_since  # when this stretch of failed polls began (epoch s; recorded)
        while True:
            status = job.get("status")
            if status == "complete":
                return job
            if status == "failed":
                raise _Fail(RemoteFailed(
                    f"the worker's job failed: [{job.get('errorCode')}] {job.get('errorMessage')}",
                    workerCode=job.get("errorCode"), workerMessage=job.get("errorMessage"), workerJobId=job_id,
                    worker=w.client.url))  # fmt: skip
            if status in ("canceled", "skipped"):
                raise _Fail(RemoteFailed(
                    f"the worker ended job {job_id} as {status} ({job.get('errorCode')}); it is sent again",
                    workerCode=job.get("errorCode"), workerMessage=job.get("errorMessage"), workerJobId=job_id,
                    worker=w.client.url), retryable=True)  # fmt: skip
            progress = job.get("progress") or {}
            now = (progress.get("stage"), progress.get("stagePercent"), status)
            if now != last:
                last, delay_s = now, self.poll_s
                stage = progress.get("stage") or ("remote_queued" if status == "queued" else "remote_running")
                send({"ev": "progress", "stage": stage, "percent": float(progress.get("stagePercent") or 0.0)})
            else:
                delay_s = next_delay(delay_s, self.poll_s, self.poll_max_s)
            if time.monotonic() > deadline:
                self._tell_cancel(attempt, "timed out")
                raise _Fail(RemoteWorkerTimeout(
                    f"the remote job ran longer than {self.settings.remote_worker_timeout_s:g} s "
                    "(REMOTE_WORKER_TIMEOUT_SECONDS) and was canceled", worker=w.client.url, workerJobId=job_id))
            if attempt.wait(delay_s):
                if attempt.canceled.is_set():
                    self._tell_cancel(attempt, "canceled")
                return None
            try:
                job = w.client.job(job_id)
                if away_since is not None:  # back: a restarted controller must not count the stretch
                    self.record.away(w.client.url, job_id, None)
                attempt.last_seen_at, attempt.last_error, failures, away_since = time.time(), None, 0, None
                attempt.away_since = None
            except RemoteWorkerUnreachable as err:
                failures += 1
                attempt.last_error = err.to_dict() if failures >= UNREACHABLE_AFTER else attempt.last_error
                if away_since is None:
                    away_since = attempt.away_since = time.time()
                    self.record.away(w.client.url, job_id, away_since)
                self._fail_over(attempt, w, away_since)
                delay_s = next_delay(delay_s, self.poll_s, self.poll_max_s)
                log.warning("remote_poll_failed: task %s, job %s on %s (%d in a row): %s", attempt.task_id, job_id,
                            w.client.url, failures, err.message)  # fmt: skip
            except RemoteWorkerUnauthorized as err:
                raise _Fail(err) from None
            except NotFound as err:
                raise _Fail(RemoteFailed(f"{err.message}; it is sent again", worker=w.client.url, workerJobId=job_id),
                            retryable=True) from None  # fmt: skip

    def _tell_cancel(self, attempt: Attempt, why: str) -> None:
        w = attempt.worker
        if w is None or attempt.worker_job_id is None:
            return
        try:
            w.client.cancel(attempt.worker_job_id)
            log.info("remote_canceled: task %s, job %s on %s (%s)", attempt.task_id, attempt.worker_job_id, w.client.url, why)
        except NotFound:
            pass
        except ScribefleetError as err:
            log.warning("remote_cancel_failed: job %s on %s [%s]: %s; canceled when it answers", attempt.worker_job_id,
                        w.client.url, err.code, err.message)  # fmt: skip
            self.record.orphaned(w.client.url, attempt.worker_job_id)
            attempt.handed_over = True

    def _fetch(self, attempt: Attempt, job: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any] | None:
        """Download every output to the task's own paths (atomically); the task's result."""
        w, job_id = attempt.worker, str(attempt.worker_job_id)
        assert w is not None
        outputs = {fmt: str(p) for fmt, p in (spec.get("outputs") or {}).items()}
        deadline = time.monotonic() + self.settings.remote_worker_timeout_s
        delay_s = 0.0
        for fmt, dest in outputs.items():
            while True:
                try:
                    w.client.download(job_id, fmt, Path(dest))
                    break
                except RemoteWorkerUnreachable as err:
                    delay_s = next_delay(delay_s, self.poll_s, self.poll_max_s)
                    log.warning("remote_download_retry: task %s, %s output: %s", attempt.task_id, fmt, err.message)
                    if time.monotonic() > deadline:
                        raise _Fail(RemoteWorkerTimeout(f"could not download the {fmt} output of job {job_id}")) from None
                    if attempt.wait(delay_s):
                        return None
                except RemoteWorkerError as err:
                    raise _Fail(RemoteFailed(f"the {fmt} output of job {job_id} could not be downloaded: {err.message}",
                                             worker=w.client.url, workerJobId=job_id), retryable=True) from None
        log.info("remote_complete: task %s, job %s on %s, %d output(s)", attempt.task_id, job_id, w.client.url, len(outputs))
        return {
            "outputs": outputs,
            "duration_s": job.get("audioDurationS"),
            "language": job.get("language"),
            # what the worker's pipeline says of the transcript: as a local job's, in the job JSON
            "guards": job.get("guards") if isinstance(job.get("guards"), dict) else None,
            "warnings": [str(w) for w in job.get("warnings") or []],
            "remote": attempt.view(),
        }


def _reattached(attempt: Attempt, w: RemoteWorker, job: dict[str, Any]) -> dict[str, Any]:
    """`job` on worker `w` is the one this attempt follows again (found by its key after a restart)."""
    attempt.worker = w
    log.info("remote_reattached: task %s to job %s on %s (%s)", attempt.task_id, job.get("id"), w.client.url,
             job.get("status"))  # fmt: skip
    return job
