"""OpenAI-compatible transcription: POST /v1/audio/transcriptions and /v1/audio/translations.

OpenAI's request (multipart: file, model, language, prompt, response_format,
temperature, timestamp_granularities[]) becomes an ordinary job: the upload is
streamed to disk under the size limit like any other, the job goes through
the same queue and slots (so it shows in /api/jobs and /api/runtime), and the
request waits until it ends. The official `openai` client works unchanged
(`OpenAI(base_url="http://host:8476/v1", api_key=<API token>)`): it sends
the token as a bearer header. A client that goes away cancels its job.

Answers follow OpenAI's shapes: `json` {"text"}, `verbose_json` {"task",
"language", "duration", "text", "segments", "words"?, "usage"}, and plain
text for `text`, `srt` and `vtt`. `whisper-1` and OpenAI's other model names
mean the server's default model (SCRIBEFLEET_API_DEFAULT_MODEL); any other
value is a scribefleet model name.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError

from scribefleet.errors import FileTooLarge, InvalidRequest, ScribefleetError, UsageError
from scribefleet.options import TranscribeOptions
from scribefleet.service import jobs as J
from scribefleet.service.api import UPLOAD_BODY
from scribefleet.service.controller import Controller
from scribefleet.service.metrics import Metrics
from scribefleet.service.uploads import receive_multipart
from scribefleet.store.models import Task

OPENAI_MODELS = frozenset({"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe-diarize"})
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
WAIT_POLL_S = 0.2
_SEGMENT_KEYS = ("id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob", "compression_ratio", "no_speech_prob")


def _one(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[-1].strip() if values and values[-1].strip() else None


def _options(fields: dict[str, list[str]], task: str, default_model: str) -> tuple[TranscribeOptions, str]:
    """TranscribeOptions and the response format of an OpenAI form."""
    response_format = _one(fields, "response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise UsageError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, not {response_format!r}")
    model = _one(fields, "model")
    granularities = fields.get("timestamp_granularities[]", []) + fields.get("timestamp_granularities", [])
    bad = sorted(set(granularities) - {"word", "segment"})
    if bad:
        raise UsageError(f"timestamp_granularities takes word and segment, not {', '.join(bad)}")
    temperature = _one(fields, "temperature")
    try:
        options = TranscribeOptions(
            model=default_model if model is None or model in OPENAI_MODELS else model,
            language=None if task == "translate" else _one(fields, "language"),
            task=task,
            formats=("json", response_format) if response_format in ("srt", "vtt") else ("json",),
            initial_prompt=_one(fields, "prompt"),
            temperature=float(temperature) if temperature is not None else None,
            word_timestamps="word" in granularities,
        )
    except (ValidationError, ValueError) as exc:
        raise UsageError(f"invalid transcription request: {exc}".splitlines()[0]) from exc
    return options, response_format


def _verbose(transcript: dict[str, Any], task: str, words: bool) -> dict[str, Any]:
    segments = [{k: seg[k] for k in _SEGMENT_KEYS if k in seg} for seg in transcript.get("segments", [])]
    out = {
        "task": task,
        "language": transcript.get("language"),
        "duration": transcript.get("duration"),
        "text": transcript.get("text", ""),
        "segments": segments,
        "usage": {"type": "duration", "seconds": transcript.get("duration")},
    }
    if words:
        out["words"] = [
            {"word": w["word"], "start": w["start"], "end": w["end"]}
            for seg in transcript.get("segments", []) for w in seg.get("words", [])
        ]  # fmt: skip
    return out


def _answer(task: Task, response_format: str, options: TranscribeOptions) -> Response:
    outputs = (task.result or {}).get("outputs") or task.spec["outputs"]
    transcript = json.loads(Path(outputs["json"]).read_text(encoding="utf-8"))
    if response_format == "json":
        return JSONResponse({"text": transcript.get("text", "")})
    if response_format == "verbose_json":
        return JSONResponse(_verbose(transcript, options.task, options.word_timestamps))
    if response_format == "text":
        return PlainTextResponse(transcript.get("text", "") + "\n")
    return PlainTextResponse(Path(outputs[response_format]).read_text(encoding="utf-8"))


async def _wait(controller: Controller, task_id: str, request: Request) -> Task | None:
    """The job once terminal; None (and the job canceled) when the client went away first."""
    while True:
        task = controller.store.task(task_id)
        if task is None or task.is_terminal:
            return task
        if await request.is_disconnected():
            controller.cancel(task_id)
            return None
        await asyncio.sleep(WAIT_POLL_S)


def openai_router(controller: Controller, metrics: Metrics) -> APIRouter:
    """The /v1/audio routes."""
    router = APIRouter(prefix="/v1/audio", tags=["openai"])

    async def run(request: Request, task_kind: str) -> Response:
        try:
            fields, upload = await receive_multipart(request.headers.get("content-type"), request.stream(), controller.uploads)
        except (FileTooLarge, InvalidRequest) as err:
            metrics.upload("too_large" if isinstance(err, FileTooLarge) else "invalid")
            raise
        metrics.upload("stored", upload.size_bytes)
        options, response_format = _options(fields, task_kind, controller.settings.api_default_model)
        created = await run_in_threadpool(J.create_job, controller, upload.upload_id, options, None)
        task = await _wait(controller, created.id, request)
        if task is None:
            return Response(status_code=499)
        if not task.is_complete:
            raise ScribefleetError.from_code(
                task.error_code or "TASK_FAILED", task.error_message or f"the job ended {task.state.value}", jobId=task.id
            )
        return _answer(task, response_format, options)

    @router.post("/transcriptions", openapi_extra=UPLOAD_BODY)
    async def transcriptions(request: Request) -> Response:
        """Transcribe an audio file (OpenAI's request and answer shapes)."""
        return await run(request, "transcribe")

    @router.post("/translations", openapi_extra=UPLOAD_BODY)
    async def translations(request: Request) -> Response:
        """Translate an audio file into English text (OpenAI's request and answer shapes)."""
        return await run(request, "translate")

    return router
