"""Seed 003's handler through the controller: `/api/handler/run`, `/runsync` and `/status/{id}` (RunPod's shape).

`POST /api/handler/run` takes the seed's input JSON unchanged and answers at
once with the job's id and `"status": "starting"` (`?wait_s=N` waits up to N
seconds for the end first); `/runsync` waits (up to `wait_s`, default
RUNSYNC_WAIT_S) and answers the seed's output JSON; `GET /api/handler/status/{id}`
answers it whenever asked: `starting`, `running`, then `done` with `srt_path`
or `error` with our code. Each answer also carries the job's `id`, which the
rest of the API (`/api/jobs/{id}`, its events and logs) knows too.

A request the seed's contract refuses (no URL, a bad request id, an internal
address) is answered in the seed's error shape with the error's HTTP status,
so a client of the seed reads `status` as it always did. Reading and answering
the JSON is `jobs.seed003`, the same code as the serverless worker's.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from scribefleet.errors import ScribefleetError
from scribefleet.jobs.seed003 import error_of, request_id_of
from scribefleet.service import jobs as J
from scribefleet.service.controller import Controller

RUNSYNC_WAIT_S = 300.0
WAIT_MAX_S = 3600.0
_POLL_S = 0.2
_Text = Annotated[str, Field(max_length=8192)]


class SeedInput(BaseModel):
    """Seed 003's `input` object (a plain media URL works in `youtube_url`)."""

    model_config = ConfigDict(extra="forbid")

    youtube_url: _Text | None = None
    request_id: _Text | None = None
    s3_bucket: _Text | None = None
    s3_key_prefix: _Text | None = None
    s3_endpoint_url: _Text | None = None
    aws_access_key: _Text | None = None
    aws_secret_key: _Text | None = None
    s3_region: _Text | None = None
    model: _Text | None = None
    language: _Text | None = None


class SeedJob(BaseModel):
    """Body of POST /api/handler/run and /runsync: seed 003's job JSON."""

    model_config = ConfigDict(extra="forbid")

    input: SeedInput


def handler_router(controller: Controller) -> APIRouter:
    """The /api/handler routes over one controller."""
    router = APIRouter(prefix="/api/handler", tags=["handler"])

    async def run(body: SeedJob, wait_s: float) -> JSONResponse:
        payload = {"input": body.input.model_dump(exclude_none=True)}
        try:
            task = await run_in_threadpool(J.create_seed_job, controller, payload)
        except ScribefleetError as err:
            return JSONResponse(error_of(request_id_of(payload), err), status_code=err.http_status)
        return JSONResponse(await _answer(controller, task.id, wait_s), status_code=201)

    @router.post("/run", status_code=201)
    async def run_async(body: SeedJob, wait_s: Annotated[float, Query(ge=0, le=WAIT_MAX_S)] = 0.0) -> JSONResponse:
        """Queue seed 003's job; answer its id at once (or after up to `wait_s` seconds, its end)."""
        return await run(body, wait_s)

    @router.post("/runsync", status_code=201)
    async def run_sync(body: SeedJob,
                       wait_s: Annotated[float, Query(ge=0, le=WAIT_MAX_S)] = RUNSYNC_WAIT_S) -> JSONResponse:
        """Queue seed 003's job and answer its output JSON when it ends (or its status after `wait_s`)."""
        return await run(body, wait_s)

    @router.get("/status/{job_id}")
    def status(job_id: str) -> dict[str, Any]:
        """Seed 003's output JSON of a job made by /run: starting, running, done or error."""
        return J.seed_status(J.get_task(controller, job_id), controller)

    return router


async def _answer(controller: Controller, job_id: str, wait_s: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        answer = await run_in_threadpool(lambda: J.seed_status(J.get_task(controller, job_id), controller))
        if answer["status"] in ("done", "error") or loop.time() >= deadline:
            return answer
        await asyncio.sleep(_POLL_S)
