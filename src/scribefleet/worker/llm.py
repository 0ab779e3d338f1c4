"""The `llm` task kind: a prompt filled with a file's text, sent to an OpenAI-compatible chat endpoint.

A task (plans/specs.py `LlmSpec`) names an `input` (a whisper JSON transcript,
whose `text` is used, or any text file), a `prompt` with `{{text}}` (and
optionally `{{name}}`, the input's file name), and an `output`. The handler
POSTs `{model, messages: [system?, user], max_tokens?, temperature?}` to
`<endpoint>/v1/chat/completions` with httpx and writes the first choice's
answer to `output` atomically (temp file + rename).

Where the request goes, first match wins:

    endpoint   task `endpoint` > Settings.llm_slot_endpoints[slot] > Settings.llm_endpoint
    model      task `model`    > Settings.llm_model > the first id the endpoint lists at /v1/models
    api key    Settings.llm_api_key (a SecretStr; sent as a bearer header, never logged or reported)

So each GPU slot can talk to its own local server (seed 002 ran one Ollama
port per GPU) while plans never name ports. Ollama, vLLM and llama.cpp's
server all speak this protocol.

Input longer than Settings.llm_max_input_chars is cut at a word break before it
goes into the prompt, and the result's `warnings` say so: a silent cut (what
Ollama does with a prompt past its context) would make a summary of half a
transcript look like a summary of all of it.

httpx errors are translated here, where they enter: no connection, a refused
port or no answer in time -> LLM_UNREACHABLE (retryable); an HTTP error status
or a body with no answer -> LLM_FAILED (retryable only for 429/502/503/504),
with the server's own error text in the details.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from scribefleet.errors import InputNotFound, LlmFailed, LlmUnreachable, UsageError
from scribefleet.plans.specs import LlmSpec

if TYPE_CHECKING:
    import httpx

    from scribefleet.config import Settings
    from scribefleet.worker.context import TaskContext

log = logging.getLogger("scribefleet.llm")

_PLACEHOLDER = re.compile(r"\{\{\s*(text|name)\s*\}\}")
_RETRYABLE_STATUS = {429, 502, 503, 504}
ERROR_TEXT_CHARS = 500  # of a server's error body kept in details
CONNECT_TIMEOUT_S = 10.0


def chat_url(endpoint: str) -> str:
    """`…/v1/chat/completions` for a base URL, a URL ending in /v1, or the full URL itself."""
    base = endpoint.strip().rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if base.endswith("/v1"):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


def shown_url(url: str) -> str:
    """The URL without user:password@, for logs, events and error messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def read_input(path: Path) -> str:
    """The text of a whisper JSON transcript (its `text`, else its segments' texts), else the file's text."""
    try:
        raw = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError as exc:
        raise InputNotFound(f"llm input {path} does not exist - check the task's 'input' path", path=str(path)) from exc
    except IsADirectoryError as exc:
        raise InputNotFound(f"llm input {path} is a folder, not a file", path=str(path)) from exc
    if path.suffix.lower() != ".json":
        return raw
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return raw  # a .json that is not JSON: its text is still text
    if isinstance(data, dict):
        if isinstance(data.get("text"), str):
            return data["text"].strip()
        segments = data.get("segments")
        if isinstance(segments, list):
            return " ".join(str(s.get("text", "")).strip() for s in segments if isinstance(s, dict)).strip()
    return raw


def cut_text(text: str, max_chars: int) -> tuple[str, str | None]:
    """`text` cut to at most `max_chars` at a word break (0 = no limit), and a warning when it was cut."""
    if max_chars <= 0 or len(text) <= max_chars:
        return text, None
    head = text[:max_chars]
    space = head.rfind(" ")
    if space > max_chars // 2:
        head = head[:space]
    warning = (
        f"input cut from {len(text)} to {len(head)} characters (SCRIBEFLEET_LLM_MAX_INPUT_CHARS={max_chars}); "
        "the model saw only the start of it"
    )
    return head, warning


def fill_prompt(template: str, text: str, name: str) -> str:
    """The template with {{text}} and {{name}} replaced in one pass (text that holds "{{name}}" stays as is)."""
    return _PLACEHOLDER.sub(lambda m: text if m.group(1) == "text" else name, template)


def resolve_endpoint(spec: LlmSpec, slot_name: str, settings: Settings) -> str:
    """Task endpoint, else this slot's entry in llm_slot_endpoints, else llm_endpoint."""
    return spec.endpoint or settings.llm_slot_endpoints.get(slot_name) or settings.llm_endpoint


def _headers(settings: Settings) -> dict[str, str]:
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key is not None else ""
    return {"Authorization": f"Bearer {key}"} if key else {}


def _unreachable(url: str, exc: Exception, timeout_s: float, *, timed_out: bool) -> LlmUnreachable:
    if timed_out:
        why = f"no answer within {timeout_s:g} s"
        hint = "raise SCRIBEFLEET_LLM_TIMEOUT_S for slow models, or check the server is not stuck"
    else:
        why = f"cannot connect ({type(exc).__name__}: {exc})"
        hint = (
            "start the server or fix the endpoint (task 'endpoint', SCRIBEFLEET_LLM_SLOT_ENDPOINTS, "
            "SCRIBEFLEET_LLM_ENDPOINT)"
        )
    return LlmUnreachable(f"llm endpoint {shown_url(url)}: {why} - {hint}", endpoint=shown_url(url), reason=why)


def _error_text(response: httpx.Response) -> str:
    """The server's own words: {"error": {"message"}}, {"error": "..."}, {"detail": ...} or the raw body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:ERROR_TEXT_CHARS].strip()
    if isinstance(body, dict):
        err = body.get("error", body.get("detail"))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return str(err)[:ERROR_TEXT_CHARS]
    return json.dumps(body)[:ERROR_TEXT_CHARS]


def _send(method: str, url: str, settings: Settings, body: dict[str, Any] | None = None) -> Any:
    """One request; the parsed JSON body. Raises LlmUnreachable / LlmFailed, never an httpx error."""
    import httpx  # here, not at the top: slots that never run an llm task do not pay for it

    timeout = httpx.Timeout(settings.llm_timeout_s, connect=min(CONNECT_TIMEOUT_S, settings.llm_timeout_s))
    try:
        with httpx.Client(timeout=timeout, headers=_headers(settings)) as client:
            response = client.request(method, url, json=body)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        shown = shown_url(url)
        raise UsageError(f"llm endpoint {shown!r} is not a usable http(s) URL ({exc})", endpoint=shown) from exc
    except httpx.HTTPError as exc:  # connect errors, timeouts, a server that closed the connection
        raise _unreachable(url, exc, settings.llm_timeout_s, timed_out=isinstance(exc, httpx.TimeoutException)) from exc
    if response.status_code >= 400:
        text = _error_text(response)
        err = LlmFailed(
            f"llm endpoint {shown_url(url)} answered HTTP {response.status_code}: {text}",
            endpoint=shown_url(url), status=response.status_code, error=text,
        )  # fmt: skip
        err.retryable = response.status_code in _RETRYABLE_STATUS  # type: ignore[misc]
        raise err
    try:
        return response.json()
    except ValueError as exc:
        raise LlmFailed(
            f"llm endpoint {shown_url(url)} answered with a body that is not JSON - is it an OpenAI-compatible server?",
            endpoint=shown_url(url), status=response.status_code, body=response.text[:ERROR_TEXT_CHARS],
        ) from exc  # fmt: skip


def pick_model(spec: LlmSpec, url: str, settings: Settings) -> str:
    """Task model, else llm_model, else the first model the endpoint lists at /v1/models."""
    if spec.model or settings.llm_model:
        return spec.model or settings.llm_model or ""
    models_url = url.removesuffix("/chat/completions") + "/models"
    listing = _send("GET", models_url, settings)
    data = listing.get("data") if isinstance(listing, dict) else None
    ids = [m["id"] for m in data or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]
    if not ids:
        raise LlmFailed(
            f"no model named for this llm task and {shown_url(models_url)} lists none - set the task's 'model' "
            "or SCRIBEFLEET_LLM_MODEL",
            endpoint=shown_url(models_url),
        )
    return ids[0]


def _answer(body: Any, url: str) -> tuple[str, str | None]:
    """(content, finish_reason) of the first choice; LlmFailed when there is none."""
    choices = body.get("choices") if isinstance(body, dict) else None
    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = first.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise LlmFailed(
            f"llm endpoint {shown_url(url)} answered without choices[0].message.content",
            endpoint=shown_url(url), body=json.dumps(body)[:ERROR_TEXT_CHARS],
        )  # fmt: skip
    return content, first.get("finish_reason")


def _messages(spec: LlmSpec, user: str) -> list[dict[str, str]]:
    system = [{"role": "system", "content": spec.system}] if spec.system else []
    return [*system, {"role": "user", "content": user}]


def _note(ctx: TaskContext, line: str) -> None:
    """One line in the task's log (what `scribefleet logs ID` shows)."""
    ctx.log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(ctx.log_path, "a", encoding="utf-8") as fh:
        fh.write(line.rstrip("\n") + "\n")


def run_llm(spec_data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Handler of the `llm` kind: fill the prompt, ask the endpoint, write the answer to `output`."""
    try:
        spec = LlmSpec.model_validate(spec_data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise UsageError(f"invalid llm task: {where}: {first['msg']}", task_id=ctx.task_id) from exc
    settings, started = ctx.settings, time.monotonic()
    source = Path(spec.input)
    text, warning = cut_text(read_input(source), settings.llm_max_input_chars)
    warnings = [warning] if warning else []
    url = chat_url(resolve_endpoint(spec, ctx.slot_name, settings))
    model = pick_model(spec, url, settings)
    request: dict[str, Any] = {"model": model, "messages": _messages(spec, fill_prompt(spec.prompt, text, source.name))}
    if spec.max_tokens is not None:
        request["max_tokens"] = spec.max_tokens
    if spec.temperature is not None:
        request["temperature"] = spec.temperature
    if warning:
        log.warning("task %s: %s", ctx.task_id, warning)
    log.info(
        "task %s: asking %s (model %s) about %s, %d characters", ctx.task_id, shown_url(url), model, source.name, len(text)
    )
    _note(ctx, f"POST {shown_url(url)} model={model} input={source} input_chars={len(text)}")
    ctx.progress("llm", 0.0, {"endpoint": shown_url(url), "model": model})
    body = _send("POST", url, settings, request)
    content, finish = _answer(body, url)
    if finish == "length":
        warnings.append(f"the answer was cut at max_tokens ({spec.max_tokens or 'the server default'})")
    if not content.strip():
        warnings.append("the model returned an empty answer")
    from scribefleet.fsio import atomic_write_bytes

    atomic_write_bytes(spec.output, (content if content.endswith("\n") else content + "\n").encode("utf-8"))
    elapsed_s = round(time.monotonic() - started, 3)
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    _note(ctx, f"answer: {len(content)} characters in {elapsed_s} s -> {spec.output}; usage {json.dumps(usage)}")
    for line in warnings:
        _note(ctx, f"warning: {line}")
    ctx.progress("llm", 1.0, None)
    return {
        "output": spec.output, "model": str(body.get("model") or model), "usage": usage, "elapsed_s": elapsed_s,
        "endpoint": shown_url(url), "input_chars": len(text), "warnings": warnings,
    }  # fmt: skip
