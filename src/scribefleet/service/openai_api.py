"""OpenAI-compatible transcription: POST /v1/audio/transcriptions and /v1/audio/translations, GET /v1/models.

OpenAI's request (multipart: file, model, language, prompt, response_format,
temperature, timestamp_granularities[]) becomes an ordinary job: the upload is
streamed to disk under the size limit like any other, the job goes through
the same queue and slots (so it shows in /api/jobs and /api/runtime), and the
request waits until it ends. A request refused before its job exists (a bad
field, an unknown model) deletes its upload; the job's own upload is deleted
when the job ends, however it ends (the client never learns its id;
service/controller.py), its outputs and result stay. The official `openai` client works unchanged
(`OpenAI(base_url="http://host:8476/v1", api_key=<API token>)`): it sends
the token as a bearer header. A client that goes away cancels its job.

Answers follow OpenAI's shapes: `json` {"text"}, `verbose_json` {"task",
"language" (the full name, "english"), "duration", "text", "segments",
"words"?, "usage"}, and plain text for `text`, `srt` and `vtt`. Extension:
the form field `diarize=true` (or the model `gpt-4o-transcribe-diarize`),
with `speakers`, `min_speakers`, `max_speakers`, labels the speakers, and
verbose_json then carries `speaker` on each segment and word. `whisper-1`
and OpenAI's other model names mean the server's default model
(SCRIBEFLEET_API_DEFAULT_MODEL); any other value is one of the models the
server offers (`GET /v1/models`, pipeline/models.api_model_names). Every error
under /v1 has OpenAI's shape {"error": {"message", "type", "param", "code"}}
(`OpenAIErrorMiddleware`), `code` being scribefleet's stable code; the error
of a job that ended (canceled, or failed after its attempts) carries
`x-should-retry: false`, so OpenAI's clients do not send it again.
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scribefleet.errors import FileTooLarge, InvalidRequest, NotFound, ScribefleetError, UsageError
from scribefleet.options import TranscribeOptions
from scribefleet.pipeline.models import api_model_names
from scribefleet.service import jobs as J
from scribefleet.service.api import UPLOAD_BODY
from scribefleet.service.controller import Controller
from scribefleet.service.languages import language_name
from scribefleet.service.metrics import Metrics
from scribefleet.jobs.redact import redact_paths
from scribefleet.service.uploads import receive_multipart
from scribefleet.store.models import Task

DIARIZE_MODEL = "gpt-4o-transcribe-diarize"  # OpenAI's diarizing model: asks for speakers like `diarize=true`
OPENAI_MODELS = frozenset({"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", DIARIZE_MODEL})
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
        raise UsageError(
            f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, not {response_format!r}",
            param="response_format",
        )
    model = _one(fields, "model")
    granularities = fields.get("timestamp_granularities[]", []) + fields.get("timestamp_granularities", [])
    bad = sorted(set(granularities) - {"word", "segment"})
    if bad:
        raise UsageError(
            f"timestamp_granularities takes word and segment, not {', '.join(bad)}", param="timestamp_granularities"
        )
    temperature = _one(fields, "temperature")
    try:
        options = TranscribeOptions(
            **_speaker_fields(fields, model),
            model=default_model if model is None or model in OPENAI_MODELS else model,
            language=None if task == "translate" else _one(fields, "language"),
            task=task,
            formats=("json", response_format) if response_format in ("srt", "vtt") else ("json",),
            initial_prompt=_one(fields, "prompt"),
            temperature=float(temperature) if temperature is not None else None,
            word_timestamps="word" in granularities,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        param = {"initial_prompt": "prompt"}.get(str(first["loc"][0]) if first["loc"] else "", "")
        param = param or (str(first["loc"][0]) if first["loc"] else "")
        raise UsageError(f"invalid transcription request: {param or 'request'}: {first['msg']}", param=param) from exc
    except ValueError as exc:
        raise UsageError(f"invalid transcription request: {exc}".splitlines()[0], param="temperature") from exc
    return options, response_format


def _speaker_fields(fields: dict[str, list[str]], model: str | None) -> dict[str, Any]:
    """The diarization extension of the form: `diarize` (or OpenAI's diarizing model name) and the speaker counts."""
    flag = (_one(fields, "diarize") or "").lower()
    if flag not in ("", "true", "false", "1", "0", "yes", "no", "on", "off"):
        raise UsageError(f"diarize takes true or false, not {flag[:20]!r}", param="diarize")
    out: dict[str, Any] = {"diarize": flag in ("true", "1", "yes", "on") or model == DIARIZE_MODEL}
    for name in ("speakers", "min_speakers", "max_speakers"):
        value = _one(fields, name)
        if value is not None:
            if not value.isdigit():
                raise UsageError(f"{name} takes a whole number of speakers, not {value[:20]!r}", param=name)
            out[name] = int(value)
    return out


def _verbose(transcript: dict[str, Any], task: str, words: bool) -> dict[str, Any]:
    """OpenAI's verbose_json; a diarized transcript adds the extension field `speaker` to each segment and word."""
    segments = [
        {**{k: seg[k] for k in _SEGMENT_KEYS if k in seg}, **({"speaker": seg["speaker"]} if "speaker" in seg else {})}
        for seg in transcript.get("segments", [])
    ]
    out = {
        "task": task,
        "language": language_name(transcript.get("language")),
        "duration": transcript.get("duration"),
        "text": transcript.get("text", ""),
        "segments": segments,
        "usage": {"type": "duration", "seconds": transcript.get("duration")},
    }
    if words:
        out["words"] = [
            {"word": w["word"], "start": w["start"], "end": w["end"], **({"speaker": w["speaker"]} if "speaker" in w else {})}
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


def model_list(controller: Controller) -> list[dict[str, Any]]:
    """The models of GET /v1/models, OpenAI's shape: OpenAI's names (the default model) and the server's own."""
    names = [*sorted(OPENAI_MODELS), *api_model_names(controller.settings)]
    return [{"id": n, "object": "model", "created": 0, "owned_by": "scribefleet"} for n in dict.fromkeys(names)]


def openai_router(controller: Controller, metrics: Metrics) -> APIRouter:
    """The /v1/audio and /v1/models routes."""
    router = APIRouter(prefix="/v1", tags=["openai"])

    @router.get("/models")
    def list_models() -> dict[str, Any]:
        """The models a request may name (OpenAI's list shape)."""
        return {"object": "list", "data": model_list(controller)}

    @router.get("/models/{model}")
    def get_model(model: str) -> dict[str, Any]:
        """One model of GET /v1/models."""
        found = next((m for m in model_list(controller) if m["id"] == model), None)
        if found is None:
            raise NotFound(f"this server offers no model called {model[:100]!r}; GET /v1/models lists them", model=model[:100])
        return found

    async def run(request: Request, task_kind: str) -> Response:
        try:
            fields, upload = await receive_multipart(request.headers.get("content-type"), request.stream(), controller.uploads)
        except (FileTooLarge, InvalidRequest) as err:
            metrics.upload("too_large" if isinstance(err, FileTooLarge) else "invalid")
            raise
        metrics.upload("stored", upload.size_bytes)
        try:
            options, response_format = _options(fields, task_kind, controller.settings.api_default_model)
            created = await run_in_threadpool(
                lambda: J.create_job(controller, upload.upload_id, options, None, owns_upload=True)
            )
        except ScribefleetError:
            controller.uploads.discard(upload)  # refused: no job reads it, and the client never learns its id
            raise
        task = await _wait(controller, created.id, request)
        if task is None:  # canceled: its upload goes when the cancel has ended it (Controller._emit)
            return Response(status_code=499)
        # the dispatcher's thread deletes it too as the job ends; done here as well, so the answer comes after
        await run_in_threadpool(controller.sweep_uploads, [upload.upload_id])
        if not task.is_complete:
            raise ScribefleetError.from_code(
                task.error_code or "TASK_FAILED",
                redact_paths(task.error_message, controller.settings, controller.state_dir) or f"the job ended {task.state.value}",
                jobId=task.id,
            )
        return _answer(task, response_format, options)

    @router.post("/audio/transcriptions", openapi_extra=UPLOAD_BODY)
    async def transcriptions(request: Request) -> Response:
        """Transcribe an audio file (OpenAI's request and answer shapes)."""
        return await run(request, "transcribe")

    @router.post("/audio/translations", openapi_extra=UPLOAD_BODY)
    async def translations(request: Request) -> Response:
        """Translate an audio file into English text (OpenAI's request and answer shapes)."""
        return await run(request, "translate")

    return router


def _openai_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def _param(error: dict[str, Any]) -> str | None:
    details = error.get("details") or {}
    if details.get("param"):
        return str(details["param"])
    if error.get("code") == "MODEL_NOT_FOUND":
        return "model"
    return None


def _job_ended(body: bytes) -> bool:
    """Whether an error answer is that of a job that ran and ended badly (its details name the job).

    OpenAI's clients repeat a request answered 409, 429 or 5xx (twice by default) unless the answer
    says `x-should-retry: false`. A job that ended canceled (USER_CANCELED, 409) or failed after the
    dispatcher's own attempts would be sent, and transcribed, again: an operator's cancel undone.
    """
    try:
        return bool(json.loads(body)["error"]["details"].get("jobId"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


def openai_error_body(body: bytes, status: int) -> bytes:
    """scribefleet's {"error": {"code", "message", "details"}} as OpenAI's {"error": {"message", "type", "param", "code"}}."""
    try:
        error = json.loads(body)["error"]
        message, code = error["message"], error["code"]
    except (ValueError, KeyError, TypeError):
        message, code, error = body.decode("utf-8", errors="replace")[:500], None, {}
    shaped = {"message": message, "type": _openai_type(status), "param": _param(error), "code": code}
    return json.dumps({"error": shaped}).encode()


class OpenAIErrorMiddleware:
    """Every error answer under /v1 in OpenAI's shape (what OpenAI's clients parse)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def reshape(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            raw = b"".join(chunks)
            body = openai_error_body(raw, start["status"])
            headers = [(k, v) for k, v in start["headers"] if k.lower() not in (b"content-length", b"content-type")]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            if _job_ended(raw):
                headers.append((b"x-should-retry", b"false"))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, reshape)
