"""The Controller: one state folder's store, uploads, local slots and the dispatcher thread.

`scribefleet serve` builds one and starts it before the HTTP server; the API
reads and adds through `controller.store` (its own SQLite connection) while
the dispatcher, in a long-lived thread with a connection of its own, is the
only writer of task state. Slot processes die with the thread that started
them (PR_SET_PDEATHSIG), so the engine is created, started, restarted and
stopped in that thread only.

Start takes the state folder's dispatcher lock at once, so a second controller
(or a `transcribe` run) on the same folder is refused with STATE_LOCKED before
the server listens. Each dispatcher run begins by recovering the tasks a killed
controller left running; they go back to the queue and finish. Should the
dispatcher itself crash, it is restarted after a growing pause (1 s .. 30 s).

Uploads are deleted once no job needs them (`sweep_uploads`); a job's outputs
and result stay. One made for one job alone (the OpenAI routes: the client never
learns its id, so cannot delete it) goes as soon as that job ends, complete,
failed or canceled (on the dispatch event of its end); any other upload
`upload_retention_hours` after the last job made from it ended, and one no job
was made from after that long or an hour, whichever is longer (a timer thread,
every tenth of the retention, 1 s to 10 min). Kept, every night's recordings
stayed on the controller's disk for good. Start sweeps too, for what ended
while no controller watched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scribefleet.config import Settings
from scribefleet.dispatch.dispatcher import Dispatcher, request_cancel
from scribefleet.dispatch.lock import DispatcherLock
from scribefleet.dispatch.monitor import DispatchEvent
from scribefleet.dispatch.space import MARGIN_BYTES
from scribefleet.engines.base import Engine, SlotHandle, SlotSpec, SlotStatus
from scribefleet.engines.remote import RemoteEngine
from scribefleet.errors import NotFound, OutputWriteFailed, StateLocked, UsageError
from scribefleet.jobs.run import controller_dispatcher, slots_for
from scribefleet.service.uploads import UploadStore
from scribefleet.store.models import TaskState
from scribefleet.store.store import Store
from scribefleet.worker.hardware import Hardware, detect_hardware, gpu_memory_by_pid, plan_slots

log = logging.getLogger("scribefleet.controller")

RESTART_PAUSE_MAX_S = 30.0
#: the spec flag of a job that owns its upload: the upload is deleted once the job has ended
OWNS_UPLOAD = "owns_upload"
#: upload ids looked up in one query of a sweep
_SWEEP_CHUNK = 200
#: the least time an upload no job was made from is kept: its client makes the job right after uploading
ORPHAN_UPLOAD_MIN_S = 3600.0
#: how long the reason queued jobs wait (`queue_reason`) is reused before it is worked out again
QUEUE_REASON_TTL_S = 0.5


class Controller:
    """Owns a controller's state folder: store, uploads, the local engine and the dispatcher thread."""

    def __init__(
        self,
        settings: Settings,
        state_dir: Path,
        *,
        slots: int | None = None,
        device: str = "auto",
        listeners: list[Callable[[DispatchEvent], None]] | None = None,
    ) -> None:
        self.settings = settings
        self.state_dir = Path(state_dir).resolve()
        self.requested_slots, self.device = slots, device
        self.listeners = list(listeners or [])
        self.store = Store.open(self.state_dir)
        self.uploads = UploadStore(self.state_dir / "uploads", settings.max_file_mb * 1024 * 1024)
        self.jobs_dir = self.state_dir / "jobs"
        self.hardware: Hardware | None = None
        self.slot_specs: list[SlotSpec] = []
        self._lock = DispatcherLock(self.state_dir)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sweeper: threading.Thread | None = None
        #: held while a job is made from an upload and while a sweep decides and deletes: never a job of a deleted file
        self.uploads_guard = threading.Lock()
        self._engine: Engine | None = None
        self._dispatcher: Dispatcher | None = None
        self._guard = threading.Lock()
        self._stopped = False
        self._queue_reason: tuple[float, str] = (-QUEUE_REASON_TTL_S, "")  # (time.monotonic(), reason)

    # -- lifecycle -------------------------------------------------------------

    def plan(self) -> list[SlotSpec]:
        """Detect the hardware (cached) and plan the slots; done by start(), usable alone."""
        if self.hardware is None:
            self.hardware = detect_hardware(self.settings)
            if self.settings.engine == "local":
                self.slot_specs = plan_slots(self.hardware, self.device, self.requested_slots, self.settings)
            else:  # a cluster's slots are the engine's to find (or --slots of them)
                self.slot_specs = slots_for(self.settings, self.device, self.requested_slots)
        return self.slot_specs

    def start(self) -> None:
        """Plan slots, take the dispatcher lock (StateLocked if taken) and start the dispatcher thread."""
        self.plan()
        self._lock.acquire()
        self._stop.clear()
        self.sweep_uploads()
        self._thread = threading.Thread(target=self._supervise, name="scribefleet-dispatcher", daemon=True)
        self._thread.start()
        if self.settings.upload_retention_hours > 0:
            self._sweeper = threading.Thread(target=self._sweep_loop, name="scribefleet-uploads", daemon=True)
            self._sweeper.start()
        log.info(
            "controller started on %s with slots %s", self.state_dir,
            ", ".join(f"{s.name} ({s.device})" for s in self.slot_specs),
        )  # fmt: skip

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop the dispatcher and its slots (running tasks resume at the next start), close the store."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        with self._guard:
            if self._dispatcher is not None:
                self._dispatcher.stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("the dispatcher thread did not stop within %.0f s", timeout_s)
            self._thread = None
        if self._sweeper is not None:
            self._sweeper.join(timeout_s)
            self._sweeper = None
        self._lock.release()
        self.store.close()
        log.info("controller stopped")

    @property
    def dispatching(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._dispatcher is not None

    def _supervise(self) -> None:
        pause_s = 1.0
        while not self._stop.is_set():
            try:
                self._lock.acquire()  # released by the previous run's end
                self._run_once()
                pause_s = 1.0
            except StateLocked as err:
                log.error("dispatcher cannot start: %s", err.message)
            except OutputWriteFailed as err:  # the disk under the store: said plainly, no traceback, tried again
                log.error("the dispatcher stopped [%s]: %s; restarting it in %.0f s", err.code, err.message, pause_s)
            except Exception:  # noqa: BLE001 - a crashed dispatcher is restarted, never left dead
                log.exception("the dispatcher crashed; restarting it in %.0f s", pause_s)
            if self._stop.wait(pause_s):
                break
            pause_s = min(RESTART_PAUSE_MAX_S, pause_s * 2)

    def _run_once(self) -> None:
        store = Store.open(self.state_dir)  # the dispatcher's own connection
        engine, dispatcher = controller_dispatcher(store, self.settings, self.slot_specs, lock=self._lock,
                                                   listeners=[self._emit])  # fmt: skip
        with self._guard:
            self._engine, self._dispatcher = engine, dispatcher
            if self._stop.is_set():
                dispatcher.stop()
        try:
            dispatcher.run(burst=False)
        finally:
            engine.stop()
            with self._guard:
                self._dispatcher = None
            store.close()

    def _emit(self, event: DispatchEvent) -> None:
        task = event.task
        if task is not None and task.is_terminal and task.spec.get(OWNS_UPLOAD):
            self.sweep_uploads([str(task.spec.get("upload_id"))])
        for listener in self.listeners:
            listener(event)

    # -- uploads no job needs any more -----------------------------------------

    def _sweep_loop(self) -> None:
        every_s = min(600.0, max(1.0, self.settings.upload_retention_hours * 360))  # a tenth of the retention
        while not self._stop.wait(every_s):
            try:
                self.sweep_uploads()
            except Exception:  # noqa: BLE001 - the timer must outlive one bad round
                log.exception("the sweep of old uploads failed")

    def sweep_uploads(self, upload_ids: list[str] | None = None, *, now: float | None = None) -> list[str]:
        """Delete the uploads (of `upload_ids`, else every stored one) that no job needs any more (the rules
        are the module's); returns the ids deleted."""
        ids = self.uploads.ids() if upload_ids is None else [u for u in upload_ids if u]
        now = time.time() if now is None else now
        gone: list[str] = []
        for at in range(0, len(ids), _SWEEP_CHUNK):
            chunk = ids[at : at + _SWEEP_CHUNK]
            where = f"json_extract(spec, '$.upload_id') IN ({','.join('?' * len(chunk))})"
            with self.uploads_guard:
                # every job made from these uploads (one each, but for an upload a client reused in POST /api/jobs)
                tasks, _ = self.store.task_page(None, None, limit=_SWEEP_CHUNK * 1000, where=(where, list(chunk)))
                users: dict[str, list[Any]] = {}
                for t in tasks:
                    users.setdefault(str(t.spec.get("upload_id")), []).append(t)
                for upload_id in chunk:
                    why = self._upload_done(upload_id, users.get(upload_id, []), now)
                    if why and self.uploads.remove(upload_id):
                        log.info("upload %s deleted: %s", upload_id, why)
                        gone.append(upload_id)
        return gone

    def _upload_done(self, upload_id: str, jobs: list[Any], now: float) -> str | None:
        """Why the upload can go now (words for the log, naming its jobs), or None while it is kept."""
        if any(not t.is_terminal for t in jobs):
            return None
        names = ", ".join(t.id for t in jobs)
        if any(t.spec.get(OWNS_UPLOAD) for t in jobs):
            return f"the job it was made for has ended ({names})"
        keep_h = self.settings.upload_retention_hours
        if keep_h <= 0:
            return None
        if jobs:
            ended = max(t.finished_at or t.updated_at for t in jobs)
            if now - ended < keep_h * 3600:
                return None
            return (f"its job(s) {names} ended {(now - ended) / 3600:.1f} h ago "
                    f"(SCRIBEFLEET_UPLOAD_RETENTION_HOURS={keep_h:g})")  # fmt: skip
        try:
            made = self.uploads.get(upload_id).created_at
        except NotFound:
            return None
        if now - made < max(keep_h * 3600, ORPHAN_UPLOAD_MIN_S):
            return None
        return f"no job was made from it in the {(now - made) / 3600:.1f} h since it was uploaded"

    # -- what the API needs ----------------------------------------------------

    def cancel(self, target_id: str) -> None:
        """Cancel a job or batch: the running dispatcher applies it within cancel_poll_s."""
        request_cancel(self.store, target_id, self.settings)

    def slot_views(self) -> list[dict[str, Any]]:
        """Each slot as the engine sees it now (a snapshot; the dispatcher thread owns the engine)."""
        engine = self._engine
        handles = {h.name: h for h in engine.slots} if engine is not None else {}
        out = []
        # planned slots, and those an engine that sizes itself from its cluster (Ray) added; remote
        # workers' places are not slots of this controller (remote_runtime shows them)
        planned = {s.name for s in self.slot_specs}
        specs = self.slot_specs + [h.spec for name, h in handles.items() if name not in planned and h.device != "remote"]
        gpu_mb = _gpu_memory(specs, handles)
        for spec in specs:
            h = handles.get(spec.name)
            status = h.status.value if h is not None and self.dispatching else "stopped"
            out.append({
                "name": spec.name,
                "device": spec.device,
                "gpuIndex": spec.gpu_index,
                "node": h.node if h is not None else None,
                "status": status,
                "busy": status == SlotStatus.BUSY.value,
                "task": h.task_id if h is not None else None,
                "models": list(h.models) if h is not None else [],
                "tasksDone": h.tasks_done if h is not None else 0,
                "error": h.error if h is not None else None,
                "gpuMemoryMb": gpu_mb.get(spec.name),
            })  # fmt: skip
        return out

    def queue_reason(self) -> str:
        """Why a queued local job is not running yet, in words (the job's `message`; seed 002: say why it waits).

        The same for every queued job, so a list, a batch page or a batch's event stream of a thousand
        queued jobs asks the store once per QUEUE_REASON_TTL_S, not once per job.
        """
        at, reason = self._queue_reason
        if time.monotonic() - at < QUEUE_REASON_TTL_S:
            return reason
        reason = self._queue_reason_now()
        self._queue_reason = (time.monotonic(), reason)
        return reason

    def _queue_reason_now(self) -> str:
        engine = self._engine
        if engine is None or not self.dispatching:
            return "Waiting for the dispatcher to start (the controller is starting, restarting or stopping)"
        space = self._dispatcher.space_wait if self._dispatcher is not None else None
        if space is not None:
            return (f"Waiting for disk space: a job's write found the controller's disk full ({space.room()}); jobs "
                    f"start again when a running one ends or {MARGIN_BYTES >> 20} MB more are free")  # fmt: skip
        local = [h for h in engine.slots if h.device != "remote"]
        alive = [h for h in local if h.status.is_alive]
        busy = [h for h in alive if h.status is SlotStatus.BUSY]
        queued = self.store.counts()[TaskState.QUEUED]
        if not alive:
            return (f"Waiting for a slot: none of the {len(local)} local slot(s) is running "
                    "(GET /api/runtime has each slot's error; the controller log says why)")  # fmt: skip
        if len(busy) == len(alive):
            return f"Waiting for a free slot: {len(busy)} of {len(alive)} busy, {queued} job(s) queued"
        starting = [h.name for h in alive if h.status is SlotStatus.STARTING]
        if starting and not any(h.status is SlotStatus.IDLE for h in alive):
            return f"Waiting for a slot to start ({', '.join(starting)}: loading)"
        return f"Waiting to be dispatched: {len(alive) - len(busy)} of {len(alive)} slot(s) free"

    # -- remote workers (engines/remote.py) -------------------------------------

    @property
    def remote_mode(self) -> str:
        """off, optional or required; off when no REMOTE_WORKER_URL is set."""
        return self.settings.remote_worker_mode if self.settings.remote_worker_url else "off"

    def runs_remotely(self, asked: bool | None) -> bool:
        """Whether a new job runs on a remote worker: required -> always; optional -> when it asks."""
        mode = self.remote_mode
        if asked and mode == "off":
            raise UsageError(
                "this job asks to run on a remote worker, but the controller has none: "
                "set REMOTE_WORKER_URL and REMOTE_WORKER_MODE=optional (or required)",
                remote=True,
            )
        return mode == "required" or (mode == "optional" and bool(asked))

    def remote_view(self, task_id: str) -> dict[str, Any] | None:
        """The remote engine's live view of a remote job ({workerJobId, worker, lastSeenAt, gpu})."""
        engine = self._engine
        return engine.task_view(task_id) if isinstance(engine, RemoteEngine) else None

    def remote_wait_error(self) -> dict[str, Any] | None:
        """Why queued remote jobs wait beyond capacity: the workers' error when none answers."""
        engine = self._engine
        return engine.wait_error() if isinstance(engine, RemoteEngine) else None

    def remote_runtime(self) -> dict[str, Any] | None:
        """GET /api/runtime's remoteWorker: the first worker's state, and every worker under `workers`."""
        if self.remote_mode == "off":
            return None
        engine = self._engine
        workers = engine.workers_view() if isinstance(engine, RemoteEngine) else []
        first = workers[0] if workers else {"connected": False, "workerCapabilities": None}
        return {"mode": self.remote_mode, "connected": first["connected"],
                "workerCapabilities": first["workerCapabilities"], "workers": workers}  # fmt: skip

    def slot_is_gpu(self, name: str | None) -> bool:
        return any(s.name == name and s.device == "cuda" for s in self.slot_specs)


def _gpu_memory(specs: list[SlotSpec], handles: dict[str, SlotHandle]) -> dict[str, int]:
    """MiB of GPU memory each running GPU slot's process holds (NVML); slots it cannot tell are left out."""
    pids = {s.name: handles[s.name].pid for s in specs if s.device == "cuda" and s.name in handles}
    pids = {name: pid for name, pid in pids.items() if pid is not None}
    if not pids:
        return {}
    held = gpu_memory_by_pid(s.gpu_index for s in specs if s.device == "cuda" and s.gpu_index is not None)
    return {name: held[pid] for name, pid in pids.items() if held and pid in held}
