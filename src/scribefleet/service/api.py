"""The controller's own API under /api: uploads, jobs, batches (docs/api.md is the contract).

Routes that touch only the store are plain `def` (FastAPI runs them in its
thread pool; SQLite calls and a possible model download never block the event
loop for long); uploads and event streams are `async`, because they move a
request body or a response body chunk by chunk.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from scribefleet.errors import FileTooLarge, InvalidRequest, UsageError
from scribefleet.options import PublishOptions, TranscribeOptions
from scribefleet.service import jobs as J
from scribefleet.service import streams
from scribefleet.service.controller import Controller
from scribefleet.service.limits import MAX_OFFSET, list_item
from scribefleet.service.media import RangeFileResponse, media_response
from scribefleet.service.metrics import Metrics
from scribefleet.service.uploads import receive_multipart
from scribefleet.jobs.views import QUEUED_REMOTE
from scribefleet.store.models import TaskState

CANCEL_WAIT_S = 3.0
MAX_IDEMPOTENCY_KEY = 200  # characters of an Idempotency-Key header (as a remote worker's)
MEDIA_TYPES = {
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
    "json": "application/json",
    "txt": "text/plain",
    "tsv": "text/tab-separated-values",
}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: the upload routes read the body themselves (streamed); this tells OpenAPI what it is
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}
            }
        },
    }
}


class JobRequest(BaseModel):
    """Body of POST /api/jobs."""

    # a job needs an uploadId or a url (exactly one): checked by the route, 400 INVALID_OPTIONS otherwise
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    upload_id: Annotated[str, Field(min_length=1, max_length=64)] | SkipJsonSchema[None] = Field(None, alias="uploadId")
    options: TranscribeOptions = Field(default_factory=TranscribeOptions)
    batch_id: Annotated[str, Field(min_length=1, max_length=64)] | SkipJsonSchema[None] = Field(None, alias="batchId")
    #: a media URL instead of an uploadId (fetched by the controller's slots; internal addresses refused)
    url: Annotated[str, Field(min_length=1, max_length=8192)] | SkipJsonSchema[None] = None
    #: run on a remote worker (REMOTE_WORKER_MODE=optional); required mode sends every job there
    remote: bool | None = None
    #: also upload the outputs to S3 (the controller's AWS settings; no keys in requests)
    publish: PublishOptions | None = None


class BatchRequest(BaseModel):
    """Body of POST /api/batches."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)


#: a job's status as the API shows it, as SQL on the tasks table: a remote job waiting for a worker's place
#: (queued, or running in its `queued_remote` stage) is `queued_remote` (jobs/views.py), not queued or running
_REMOTE = "COALESCE(json_extract(spec, '$.remote'), 0) != 0"
_WAITING = f"{_REMOTE} AND (state = 'queued' OR (state = 'running' AND stage = '{QUEUED_REMOTE}'))"
_STATUS_SQL = {
    QUEUED_REMOTE: _WAITING,
    TaskState.QUEUED.value: f"state = 'queued' AND NOT ({_REMOTE})",
    TaskState.RUNNING.value: f"state = 'running' AND NOT ({_WAITING})",
}


def _status_where(status: str | None) -> tuple[str, list[Any]] | None:
    """The `status` filter of GET /api/jobs (comma-separated statuses as jobs show them) as SQL."""
    wanted = [s.strip() for s in (status or "").split(",") if s.strip()]
    if not wanted:
        return None
    known = [s.value for s in TaskState] + [QUEUED_REMOTE]
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise UsageError(f"unknown status in {status!r}; use {', '.join(known)} (comma-separated)", status=status)
    return " OR ".join(f"({_STATUS_SQL.get(s, 'state = ?')})" for s in wanted), [s for s in wanted if s not in _STATUS_SQL]


def _page(items: list[Any], limit: int, offset: int) -> dict[str, Any]:
    return {"items": items[offset : offset + limit], "total": len(items), "limit": limit, "offset": offset}


async def _wait_terminal(controller: Controller, task_ids: list[str], timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        tasks = [controller.store.task(t) for t in task_ids]
        if all(t is None or t.is_terminal for t in tasks):
            return
        await asyncio.sleep(0.05)


def api_router(controller: Controller, metrics: Metrics) -> APIRouter:
    """The /api routes over one controller."""
    router = APIRouter(prefix="/api")
    _upload_routes(router, controller, metrics)
    _job_routes(router, controller)
    _job_view_routes(router, controller)
    _batch_routes(router, controller)
    return router


def _upload_routes(router: APIRouter, controller: Controller, metrics: Metrics) -> None:
    @router.post("/uploads", status_code=201, openapi_extra=UPLOAD_BODY, tags=["uploads"])
    async def upload(request: Request) -> dict[str, Any]:
        """Store one media file (multipart field `file`), streamed to disk under the size limit."""
        try:
            _, stored = await receive_multipart(request.headers.get("content-type"), request.stream(), controller.uploads)
        except FileTooLarge:
            metrics.upload("too_large")
            raise
        except InvalidRequest:
            metrics.upload("invalid")
            raise
        metrics.upload("stored", stored.size_bytes)
        return stored.to_json()


def _job_routes(router: APIRouter, controller: Controller) -> None:
    @router.post("/jobs", status_code=201, tags=["jobs"])
    def create_job(
        body: JobRequest, response: Response,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=MAX_IDEMPOTENCY_KEY)] = None,
    ) -> dict[str, Any]:
        """Queue a transcription of an upload or of a media URL; a known Idempotency-Key answers the job(s)
        its first request made (200), nothing new."""
        if body.url is not None and body.upload_id:
            raise UsageError("a job takes an uploadId or a url, not both")
        if body.url is None and not body.upload_id:
            raise UsageError("a job needs an uploadId (from POST /api/uploads) or a media url")
        tag = J.idempotent(idempotency_key)
        tasks = J.find_idempotent(controller, tag, body.batch_id)
        if tasks:
            response.status_code = 200
        elif body.url is not None:
            tasks = J.create_url_jobs(controller, body.url, body.options, body.batch_id, publish=body.publish, tag=tag)
        else:
            assert body.upload_id is not None
            tasks = [J.create_job(controller, body.upload_id, body.options, body.batch_id, publish=body.publish,
                                  remote=body.remote, tag=tag)]  # fmt: skip
        first = J.job_json(tasks[0], controller)
        if len(tasks) > 1:  # a playlist: the first entry's job, and every entry's
            first["jobs"] = [list_item(J.job_json(t, controller)) for t in tasks]
        return first

    @router.get("/jobs", tags=["jobs"])
    def list_jobs(
        status: str | None = None,
        batch_id: Annotated[str | None, Query(alias="batchId")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    ) -> dict[str, Any]:
        """Jobs, newest first, filtered by status (comma-separated) and batch; big options are left out."""
        tasks, total = controller.store.task_page(batch_id, None, limit=limit, offset=offset, where=_status_where(status))
        items = [list_item(J.job_json(t, controller)) for t in tasks]
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    @router.get("/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: str) -> dict[str, Any]:
        return J.job_json(J.get_task(controller, job_id), controller, stages=True)

    @router.post("/jobs/{job_id}/cancel", tags=["jobs"])
    async def cancel_job(job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job; a finished one is answered as it is."""
        task = J.get_task(controller, job_id)
        if not task.is_terminal:
            controller.cancel(job_id)
            await _wait_terminal(controller, [job_id], CANCEL_WAIT_S)
        return J.job_json(J.get_task(controller, job_id), controller)


def _job_view_routes(router: APIRouter, controller: Controller) -> None:
    @router.get("/jobs/{job_id}/outputs/{fmt}", tags=["jobs"], response_class=FileResponse)
    def get_output(job_id: str, fmt: str) -> FileResponse:
        """Download one output of a complete job."""
        task = J.get_task(controller, job_id)
        path = J.output_file(task, fmt)
        name = f"{J.download_stem(task)}.{fmt}"
        return RangeFileResponse(path, media_type=MEDIA_TYPES.get(fmt, "application/octet-stream"), filename=name)

    @router.get("/jobs/{job_id}/media", tags=["jobs"], response_class=FileResponse)
    def get_media(job_id: str) -> FileResponse:
        """The uploaded media of a job, for playing (Range requests answer 206); a URL job keeps none (404)."""
        return media_response(J.get_task(controller, job_id), controller.uploads)

    @router.get("/jobs/{job_id}/events", tags=["jobs"], response_class=StreamingResponse)
    async def job_events(job_id: str, last_event_id: Annotated[str | None, Header()] = None) -> StreamingResponse:
        """Server-sent events: job, progress, history, end."""
        after = streams.parse_last_event_id(last_event_id)
        stream = await streams.job_stream(controller, job_id, after)
        return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)

    @router.get("/jobs/{job_id}/logs", tags=["jobs"])
    def job_logs(job_id: str, format: str = "jsonl") -> Response:  # noqa: A002 - the query parameter's name
        """The job's events and log lines, as JSON lines or text."""
        task = J.get_task(controller, job_id)
        entries = streams.job_history(controller, task)
        if format == "text":
            return PlainTextResponse(streams.history_text(entries))
        if format != "jsonl":
            raise UsageError(f"format must be jsonl or text, not {format!r}")
        body = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
        return Response(body, media_type="application/x-ndjson")


def _batch_routes(router: APIRouter, controller: Controller) -> None:
    @router.post("/batches", status_code=201, tags=["batches"])
    def create_batch(body: BatchRequest | None = None) -> dict[str, Any]:
        batch = J.create_batch(controller, body.name if body else None)
        return {"id": batch.id, "name": batch.spec.get("name"), "createdAt": J.iso(batch.created_at)}

    @router.get("/batches", tags=["batches"])
    def list_batches(
        limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0
    ) -> dict[str, Any]:
        """Batches made with POST /api/batches, newest first."""
        batches = [b for b in controller.store.batches() if b.kind == J.BATCH_KIND and not b.spec.get("single")][::-1]
        page = _page(batches, limit, offset)
        page["items"] = [J.batch_json(b, controller, jobs=False) for b in page["items"]]
        return page

    @router.get("/batches/{batch_id}", tags=["batches"])
    def get_batch(batch_id: str, jobs: bool = True) -> dict[str, Any]:
        """A batch, its counts and progress, and (unless `jobs=false`: a page that lists them itself) every job."""
        return J.batch_json(J.get_batch(controller, batch_id), controller, list_jobs=jobs)

    @router.post("/batches/{batch_id}/cancel", tags=["batches"])
    async def cancel_batch(batch_id: str) -> dict[str, Any]:
        J.get_batch(controller, batch_id)
        open_ids = [t.id for t in controller.store.tasks(batch_id) if not t.is_terminal]
        if open_ids:
            controller.cancel(batch_id)
            await _wait_terminal(controller, open_ids, CANCEL_WAIT_S)
        return J.batch_json(J.get_batch(controller, batch_id), controller)

    @router.get("/batches/{batch_id}/events", tags=["batches"], response_class=StreamingResponse)
    async def batch_events(batch_id: str) -> StreamingResponse:
        stream = await streams.batch_stream(controller, batch_id)
        return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)
