"""The remote worker service (`scribefleet worker`): seed 001's /v1 protocol over a worker's own store.

A worker is a GPU server's own little controller: a `Controller` over the
worker's state folder (its store, uploads, local slots and dispatcher thread),
so every job it admitted survives its restart. Finished jobs keep their
outputs (their uploaded file is deleted once they end: `sweep_uploads`); a job that was running when the worker died is recovered by the
dispatcher at the next start and resumes from its checkpoints.

Routes (docs/remote-workers.md):

    GET  /health                          public; liveness only (HEAD too)
    GET  /v1/ping                         capacity and device facts (public with WORKER_PING_PUBLIC; HEAD too)
    POST /v1/jobs                         multipart: `file` (streamed, WORKER_MAX_FILE_MB enforced
                                          chunk by chunk), `options` (JSON of TranscribeOptions);
                                          header Idempotency-Key
    GET  /v1/jobs?idempotencyKey=K        the job made with that key, if any (re-attaching)
    GET  /v1/jobs/{id}                    status, progress {stage, percent}, error code and message
    GET  /v1/jobs/{id}/outputs/{format}   one output of a complete job
    POST /v1/jobs/{id}/cancel             cancel it

The worker, not its caller, decides capacity. Admission is one critical
section (`WorkerService.admit`): the same Idempotency-Key finds the job it
made before; else, when the jobs not yet ended (queued or running here) are
already WORKER_MAX_CONCURRENT_JOBS, the answer is 429 REMOTE_WORKER_CAPACITY
with Retry-After; else the job is recorded. Full is also answered before the
body is read, so a full worker does not take a 2 GB upload first.

Connections go one way: the worker never calls its controller. A job nobody
has asked about for `worker_abandon_s` (its controller is gone) is canceled,
so the GPU does not work for nobody; a restart gives every open job a fresh
window.

Every request but the public ones needs `Authorization: Bearer WORKER_TOKEN`
(at least 16 characters), compared in constant time, wrong ones throttled per
client address as on the controller; the token is never logged.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import SecretStr, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from scribefleet import __version__
from scribefleet.config import Settings
from scribefleet.errors import (
    FileTooLarge,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RemoteWorkerCapacity,
    ScribefleetError,
    TooManyAttempts,
    Unauthorized,
    UsageError,
)
from scribefleet.jobs.create import add_transcribe_task
from scribefleet.jobs.views import iso, task_view
from scribefleet.options import TranscribeOptions
from scribefleet.pipeline.models import resolve_model
from scribefleet.service.auth import MIN_TOKEN_CHARS, WrongTokenThrottle
from scribefleet.service.controller import Controller
from scribefleet.service.jobs import output_file
from scribefleet.service.media import RangeFileResponse
from scribefleet.service.uploads import Upload, receive_multipart
from scribefleet.store.models import Task, TaskState
from scribefleet.store.store import Store, new_id

log = logging.getLogger("scribefleet.worker_service")

DEFAULT_PORT = 8477
RETRY_AFTER_S = 5
CANCEL_WAIT_S = 3.0
BATCH_KEY = "worker"
MAX_IDEMPOTENCY_KEY = 200
#: (method, path) pairs answered without the token; /v1/ping joins them with WORKER_PING_PUBLIC
PUBLIC_ROUTES = frozenset({("GET", "/health"), ("HEAD", "/health")})
PING_ROUTES = frozenset({("GET", "/v1/ping"), ("HEAD", "/v1/ping")})


class WorkerService:
    """A worker's state folder: its Controller (store, slots, dispatcher), admission, and the abandon timer."""

    def __init__(self, settings: Settings, state_dir: Path, *, slots: int | None = None, device: str = "auto") -> None:
        self.settings = settings
        self.controller = Controller(settings, state_dir, slots=slots, device=device)
        self.max_jobs = settings.worker_max_concurrent_jobs
        self._admission = threading.Lock()
        self._asked: dict[str, float] = {}  # task id -> time.monotonic() of the last request about it
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self._batch_id: str | None = None

    @property
    def store(self) -> Store:
        return self.controller.store

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start the dispatcher (StateLocked when another process holds the folder) and the abandon timer."""
        self.controller.start()
        now = time.monotonic()
        for task in self.open_jobs():
            self._asked[task.id] = now  # a restart gives every open job's controller a fresh window
        self._reaper = threading.Thread(target=self._reap_loop, name="worker-reaper", daemon=True)
        self._reaper.start()
        log.info(
            "worker started on %s: max %d concurrent job(s), default model %s, max file %d MB, %d open job(s)",
            self.controller.state_dir, self.max_jobs, self.settings.worker_model, self.settings.max_file_mb,
            len(self._asked),
        )  # fmt: skip

    def stop(self) -> None:
        self._stop.set()
        self.controller.stop()

    # -- jobs ------------------------------------------------------------------

    def batch_id(self) -> str:
        if self._batch_id is None:
            self._batch_id = self.store.ensure_batch(BATCH_KEY, BATCH_KEY, {}, None)
        return self._batch_id

    def open_jobs(self) -> list[Task]:
        return self.store.tasks(states=[TaskState.QUEUED, TaskState.RUNNING])

    def active_jobs(self) -> int:
        """Jobs admitted and not ended (queued or running here): what WORKER_MAX_CONCURRENT_JOBS bounds."""
        counts = self.store.counts()
        return counts[TaskState.QUEUED] + counts[TaskState.RUNNING]

    def find(self, idempotency_key: str | None) -> Task | None:
        """The job made earlier with this Idempotency-Key, if any."""
        if not idempotency_key:
            return None
        key = _idem_key(idempotency_key)
        return next((t for t in self.store.tasks(self.batch_id()) if t.key == key), None)

    def job(self, job_id: str) -> Task:
        task = self.store.task(job_id)
        if task is None:
            raise NotFound(f"this worker has no job {job_id!r}", jobId=job_id)
        self._asked[task.id] = time.monotonic()
        return task

    def check_capacity(self) -> None:
        """429 REMOTE_WORKER_CAPACITY when the worker is full (said before the body is read, and again at admission)."""
        active = self.active_jobs()
        if active >= self.max_jobs:
            log.info("capacity: refused a job, %d of %d place(s) taken", active, self.max_jobs)
            raise RemoteWorkerCapacity(
                f"the worker is full ({active} of {self.max_jobs} jobs, WORKER_MAX_CONCURRENT_JOBS); "
                f"try again in {RETRY_AFTER_S} s",
                activeJobs=active, maxConcurrentJobs=self.max_jobs, retryAfterS=RETRY_AFTER_S,
            )  # fmt: skip

    def options_of(self, fields: dict[str, list[str]]) -> TranscribeOptions:
        """The job's options from the form's `options` field (JSON); WORKER_MODEL when it names no model."""
        raw = (fields.get("options") or ["{}"])[-1]
        try:
            data = json.loads(raw or "{}")
        except ValueError as exc:
            raise UsageError(f"the options field is not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise UsageError("the options field must be a JSON object of transcription options")
        data.setdefault("model", self.settings.worker_model)
        try:
            return TranscribeOptions.model_validate(data)
        except ValidationError as exc:
            errors = [{"loc": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()]
            raise UsageError(f"invalid options: {'; '.join(e['loc'] + ': ' + e['message'] for e in errors)}",
                             errors=errors) from None  # fmt: skip

    def admit(self, upload: Upload, options: TranscribeOptions, idempotency_key: str | None) -> tuple[Task, bool]:
        """Record a job, atomically: (the job, True) when new; (the earlier job, False) for a known key."""
        resolved = resolve_model(options.model, self.settings)  # MODEL_NOT_FOUND now, not in a slot later
        with self._admission:
            earlier = self.find(idempotency_key)
            if earlier is not None:
                self.controller.uploads.discard(upload)
                log.info("job %s found again by its idempotency key; nothing new created", earlier.id)
                return earlier, False
            try:
                self.check_capacity()
            except RemoteWorkerCapacity:
                self.controller.uploads.discard(upload)
                raise
            key = new_id()
            out_dir = self.controller.jobs_dir / key
            stem = Path(upload.filename).stem or "upload"
            task_id, _ = add_transcribe_task(
                self.store, self.batch_id(), _idem_key(idempotency_key) if idempotency_key else f"{key}/{upload.filename}",
                input_path=upload.path, display=upload.filename, digest=upload.sha256,
                outputs={fmt: out_dir / f"{stem}.{fmt}" for fmt in options.formats}, options=options,
                resolved=resolved, settings=self.settings, extra={"upload_id": upload.upload_id},
            )  # fmt: skip
            self._asked[task_id] = time.monotonic()
            task = self.job(task_id)
        log.info(
            "job %s admitted (%s, %.1f MB, model %s, %d of %d place(s) taken)",
            task.id, upload.filename, upload.size_bytes / 1e6, resolved.model_id, self.active_jobs(), self.max_jobs,
        )  # fmt: skip
        return task, True

    def cancel(self, job_id: str) -> Task:
        task = self.job(job_id)
        if not task.is_terminal:
            log.info("job %s: cancel requested by the controller", job_id)
            self.controller.cancel(job_id)
            deadline = time.monotonic() + CANCEL_WAIT_S
            while time.monotonic() < deadline and not (task := self.job(job_id)).is_terminal:
                time.sleep(0.05)
        return task

    def ping(self) -> dict[str, Any]:
        slots = self.controller.slot_views()
        hardware = self.controller.hardware
        gpus = [g.name for g in hardware.gpus] if hardware is not None else []
        gpu = any(s["device"] == "cuda" for s in slots)
        models = sorted({m for s in slots for m in s["models"]})
        return {
            "activeJobs": self.active_jobs(),
            "maxConcurrentJobs": self.max_jobs,
            "gpu": gpu,
            "gpuName": gpus[0] if gpu and gpus else None,
            "models": models,
            "defaultModel": self.settings.worker_model,
            "maxFileMB": self.settings.max_file_mb,
            "slots": len(slots),
            "version": __version__,
        }

    # -- abandoned jobs --------------------------------------------------------

    def reap(self) -> list[str]:
        """Cancel the open jobs nobody has asked about for worker_abandon_s; returns their ids."""
        now, limit_s, gone = time.monotonic(), self.settings.worker_abandon_s, []
        for task in self.open_jobs():
            asked = self._asked.setdefault(task.id, now)
            if now - asked > limit_s:
                log.warning("job %s abandoned: no request about it for %.0f s (worker_abandon_s); canceling it",
                            task.id, now - asked)  # fmt: skip
                self.controller.cancel(task.id)
                gone.append(task.id)
        return gone

    def sweep_uploads(self) -> list[str]:
        """Delete the uploaded files of the jobs that have ended; returns their upload ids.

        A job needs its file only until it ends (its outputs and checkpoints stay; a job sent
        again comes with its file): kept, a night of 48 two-hour recordings left ~11 GB of
        WAVs on the GPU server, and every night more. Uploads still arriving have no job yet
        and are left alone."""
        stored = set(self.controller.uploads.ids()) - {t.spec.get("upload_id") for t in self.open_jobs()}
        if not stored:  # the usual round: only the files of open jobs are there
            return []
        ended = [task.spec.get("upload_id") for task in self.store.tasks(batch_id=self.batch_id()) if task.is_terminal]
        gone = sorted(stored.intersection(ended))
        for upload_id in gone:
            self.controller.uploads.remove(upload_id)
        if gone:
            log.info("deleted the uploaded files of %d ended job(s)", len(gone))
        return gone

    def _reap_loop(self) -> None:
        every_s = max(0.2, min(5.0, self.settings.worker_abandon_s / 4))
        while not self._stop.wait(every_s):
            try:
                self.reap()
                self.sweep_uploads()
            except Exception:  # noqa: BLE001 - the timer must outlive one bad round
                log.exception("the abandoned-job check failed")


def _idem_key(idempotency_key: str) -> str:
    return f"idem/{idempotency_key}"


def worker_job_json(task: Task) -> dict[str, Any]:
    """A worker job as GET /v1/jobs/{id} answers it (seed 001's fields)."""
    view = task_view(task)
    complete = task.is_complete
    result = task.result or {}
    return {
        "id": task.id,
        "workerJobId": task.id,
        "status": view.status,
        "progress": {"stage": view.stage, "percent": view.percent, "stagePercent": view.stage_percent},
        "errorCode": task.error_code,
        "errorMessage": task.error_message,
        "errorDetails": task.error_details if task.is_terminal else None,
        "filename": view.name,
        "model": task.spec.get("model_id"),
        "formats": list(view.formats),
        "outputs": {f: f"/v1/jobs/{task.id}/outputs/{f}" for f in view.formats} if complete else {},
        "attempts": task.attempts,
        "audioDurationS": result.get("duration_s"),
        "language": result.get("language"),
        "guards": result.get("guards"),
        "warnings": list(result.get("warnings") or []),
        "createdAt": iso(task.created_at),
        "updatedAt": iso(task.updated_at),
    }


class WorkerAuth:
    """ASGI middleware: every request but the public ones carries `Authorization: Bearer WORKER_TOKEN`.

    Wrong tokens are throttled per client address as on the controller (a worker listens on 0.0.0.0 of
    a rented server): after SCRIBEFLEET_AUTH_FAIL_LIMIT within SCRIBEFLEET_AUTH_FAIL_WINDOW_S, every
    token from that address is answered 429 TOO_MANY_ATTEMPTS with Retry-After until the pause ends.
    """

    def __init__(self, app: ASGIApp, token: SecretStr, ping_public: bool, throttle: WrongTokenThrottle) -> None:
        self.app = app
        self.token = token.get_secret_value().encode()
        self.public = PUBLIC_ROUTES | (PING_ROUTES if ping_public else frozenset())
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["method"], scope["path"]) not in self.public:
            address = str((scope.get("client") or ("unknown",))[0])
            wait_s = self.throttle.retry_after_s(address)
            if wait_s:
                paused = TooManyAttempts(f"too many wrong worker tokens from {address}; try again in {wait_s} s",
                                         retry_after_s=wait_s)  # fmt: skip
                await _error(paused, headers={"Retry-After": str(wait_s)})(scope, receive, send)
                return
            header = dict(scope.get("headers") or []).get(b"authorization", b"")
            scheme, _, value = header.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), self.token):
                self.throttle.failed(address)
                err = Unauthorized("missing or wrong worker token: send Authorization: Bearer WORKER_TOKEN")
                response = JSONResponse({"error": err.to_dict()}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error(err: ScribefleetError, status: int | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    if isinstance(err, RemoteWorkerCapacity):
        headers = {"Retry-After": str(err.details.get("retryAfterS", RETRY_AFTER_S))}
    return JSONResponse({"error": err.to_dict()}, status_code=status or err.http_status, headers=headers)


def _handlers() -> dict[Any, Any]:
    def validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [{"loc": ".".join(map(str, e.get("loc", ()))), "message": e.get("msg", "")} for e in exc.errors()]
        return _error(UsageError(f"invalid request: {'; '.join(e['loc'] + ': ' + e['message'] for e in errors[:5])}",
                                 errors=errors))  # fmt: skip

    def http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return _error(NotFound("no such route; docs/remote-workers.md lists the worker's routes"))
        if exc.status_code == 405:
            return _error(MethodNotAllowed("this route does not take that HTTP method"))
        return _error(InvalidRequest(str(exc.detail)), status=exc.status_code)

    def ours(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ScribefleetError)
        if exc.http_status >= 500:
            log.error("request failed [%s]: %s", exc.code, exc.message)
        return _error(exc)

    def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(ScribefleetError("internal error; the worker's log has the details"))

    return {RequestValidationError: validation, StarletteHTTPException: http, ScribefleetError: ours, Exception: unexpected}


def create_worker_app(service: WorkerService) -> FastAPI:
    """The worker's app over a (started or not) WorkerService; the token is WORKER_TOKEN (required)."""
    settings = service.settings
    if settings.worker_token is None or not settings.worker_token.get_secret_value().strip():
        raise UsageError("a worker needs a token: set WORKER_TOKEN (the controller sends it as REMOTE_WORKER_TOKEN)")
    if len(settings.worker_token.get_secret_value().strip()) < MIN_TOKEN_CHARS:
        raise UsageError(f"WORKER_TOKEN is shorter than {MIN_TOKEN_CHARS} characters, which can be guessed; "
                         "make one with 'openssl rand -hex 32'")  # fmt: skip
    app = FastAPI(title="scribefleet worker", version=__version__, redoc_url=None, swagger_ui_oauth2_redirect_url=None,
                  description="A remote GPU worker (seed 001 protocol): docs/remote-workers.md.")  # fmt: skip
    app.state.worker = service
    for exc_class, handler in _handlers().items():
        app.add_exception_handler(exc_class, handler)
    throttle = WrongTokenThrottle(settings.auth_fail_limit, settings.auth_fail_window_s)
    app.add_middleware(WorkerAuth, token=settings.worker_token, ping_public=settings.worker_ping_public, throttle=throttle)

    @app.get("/health", tags=["worker"])
    def health() -> dict[str, Any]:
        """Liveness only (GET and HEAD, as the controller's: load balancers probe with either)."""
        return {"status": "ok", "version": __version__}

    app.head("/health", tags=["worker"], operation_id="health_head")(health)

    @app.get("/v1/ping", tags=["worker"])
    def ping() -> dict[str, Any]:
        return service.ping()

    app.head("/v1/ping", tags=["worker"], operation_id="ping_head")(ping)

    @app.post("/v1/jobs", status_code=201, tags=["worker"])
    async def create_job(
        request: Request, idempotency_key: Annotated[str | None, Header(max_length=MAX_IDEMPOTENCY_KEY)] = None
    ) -> JSONResponse:
        """Admit a job: the media streamed in, or 429 when full; a known Idempotency-Key answers its job (200)."""
        earlier = service.find(idempotency_key)
        if earlier is not None:
            service.job(earlier.id)
            return JSONResponse(worker_job_json(earlier), status_code=200)
        service.check_capacity()  # before taking the body
        try:
            fields, upload = await receive_multipart(request.headers.get("content-type"), request.stream(),
                                                     service.controller.uploads)  # fmt: skip
        except FileTooLarge as err:
            log.warning("job refused while streaming [%s]: %s", err.code, err.message)
            raise
        try:
            options = service.options_of(fields)
            task, created = await run_in_threadpool(service.admit, upload, options, idempotency_key)
        except ScribefleetError:  # refused (bad options, unknown model, full): no job will read the file
            service.controller.uploads.discard(upload)
            raise
        return JSONResponse(worker_job_json(task), status_code=201 if created else 200)

    @app.get("/v1/jobs", tags=["worker"])
    def find_job(idempotency_key: Annotated[str, Query(alias="idempotencyKey", max_length=MAX_IDEMPOTENCY_KEY)]) -> dict[str, Any]:
        """The job made with this Idempotency-Key (none or one): how a restarted controller finds its jobs again."""
        task = service.find(idempotency_key)
        return {"items": [worker_job_json(service.job(task.id))] if task is not None else []}

    @app.get("/v1/jobs/{job_id}", tags=["worker"])
    def get_job(job_id: str) -> dict[str, Any]:
        return worker_job_json(service.job(job_id))

    @app.get("/v1/jobs/{job_id}/outputs/{fmt}", tags=["worker"], response_class=FileResponse)
    def get_output(job_id: str, fmt: str) -> FileResponse:
        path = output_file(service.job(job_id), fmt)
        return RangeFileResponse(path, media_type="application/octet-stream", filename=path.name)

    @app.post("/v1/jobs/{job_id}/cancel", tags=["worker"])
    def cancel_job(job_id: str) -> dict[str, Any]:
        return worker_job_json(service.cancel(job_id))

    return app
