"""The controller's ASGI app: routes, authentication, and one shape for every error.

`create_app(controller, settings)` assembles it: `AuthMiddleware` in front of
everything (service/auth.py), the /api routes (api.py), runtime, health,
metrics and session routes (runtime.py), the OpenAI-compatible /v1/audio
routes (openai_api.py) and the web UI (ui.py). The app does not start or
stop the controller: `scribefleet serve` (cli/serve.py) and tests do.

Every error leaves as `{"error": {"code", "message", "details"}}` with the
HTTP status of its code: a ScribefleetError as it is, a request that fails
validation as INVALID_OPTIONS (400, each field in details.errors, never the
values, which may be secrets), an unknown route as NOT_FOUND, a wrong method
as METHOD_NOT_ALLOWED (with `Allow`), any other HTTP error as INVALID_REQUEST,
and a bug as INTERNAL_ERROR (500, its traceback in the log only; the
connection stays open). Under /v1 the same errors take OpenAI's shape
(openai_api.py). Around the routes, outermost first: the /v1 error shape, the
last-resort handler, authentication, the JSON body limit, HEAD as GET
(service/guards.py).
service/schema.py documents every error status in the OpenAPI schema.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from scribefleet import __version__
from scribefleet.config import Settings
from scribefleet.errors import InvalidRequest, MethodNotAllowed, NotFound, ScribefleetError, UsageError
from scribefleet.jobs.redact import redact_all
from scribefleet.service import ui
from scribefleet.service.api import api_router
from scribefleet.service.handler_api import handler_router
from scribefleet.service.auth import AuthMiddleware, Authenticator, SessionStore, WrongTokenThrottle, error_headers, load_tokens
from scribefleet.service.controller import Controller
from scribefleet.service.metrics import Metrics
from scribefleet.service.guards import BodyLimitMiddleware, CatchAllMiddleware, HeadMiddleware
from scribefleet.service.openai_api import OpenAIErrorMiddleware, openai_router
from scribefleet.service.runtime import runtime_router
from scribefleet.service.schema import document_errors

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
#: routes that stream their multipart bodies to disk under the file size limit instead of the JSON one
UPLOAD_PATHS = frozenset({"/api/uploads", "/v1/audio/transcriptions", "/v1/audio/translations"})

log = logging.getLogger("scribefleet.service")


def error_response(
    err: ScribefleetError, status: int | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    headers = {**error_headers(err), **(headers or {})}
    return JSONResponse({"error": err.to_dict()}, status_code=status or err.http_status, headers=headers)


def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    summary = "; ".join(f"{e['loc']}: {e['message']}" for e in errors[:5])
    return error_response(UsageError(f"invalid request: {summary}", errors=errors))


def _allowed_methods(request: Request) -> str:
    """Every method some route of this path takes (Starlette's 405 names only the first such route's);
    HEAD wherever GET is, but on event streams (HeadMiddleware)."""
    routes = request.app.router.routes
    allowed = [m for m in HTTP_METHODS if any(r.matches({**request.scope, "method": m})[0] is Match.FULL for r in routes)]
    if "GET" in allowed and "HEAD" not in allowed and not request.url.path.endswith("/events"):
        allowed.insert(allowed.index("GET") + 1, "HEAD")
    return ", ".join(allowed)


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return error_response(NotFound("no such route; docs/api.md (or /docs) lists them"))
    if exc.status_code == 405:
        allow = _allowed_methods(request) or (exc.headers or {}).get("Allow", "")
        return error_response(
            MethodNotAllowed(f"this route takes {allow or 'other methods'}, not this one; see /docs", allow=allow),
            headers={**(exc.headers or {}), "Allow": allow},
        )
    return error_response(InvalidRequest(str(exc.detail)), status=exc.status_code, headers=exc.headers)


def _scribefleet_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ScribefleetError)
    if exc.http_status >= 500:
        log.error("request failed [%s]: %s", exc.code, exc.message)  # the operator's log keeps the paths
    controller = getattr(request.app.state, "controller", None)
    if controller is None or exc.http_status < 500:
        return error_response(exc)  # a client's own words (a model path it sent) are echoed as sent, cut or not
    # the server's own failure (a full store names its file): the client is told of a file by its name
    body = redact_all(exc.to_dict(), controller.settings, controller.state_dir)
    return JSONResponse({"error": body}, status_code=exc.http_status, headers=error_headers(exc))


def create_app(
    controller: Controller, settings: Settings, *, tokens: list[SecretStr] | None = None, stop_on_shutdown: bool = False
) -> FastAPI:
    """The controller's app over a (started or not) controller.

    `stop_on_shutdown`: the server's shutdown stops the controller (serve uses it: uvicorn ends
    the process with the signal that stopped it, so code after `uvicorn.run` may never run).
    """
    authenticator = Authenticator(
        load_tokens(settings) if tokens is None else tokens,
        SessionStore(settings.session_ttl_s),
        disabled=settings.auth_disabled,
        throttle=WrongTokenThrottle(settings.auth_fail_limit, settings.auth_fail_window_s),
    )
    metrics = Metrics(controller)
    controller.listeners.append(metrics.on_dispatch)
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if stop_on_shutdown:
            await run_in_threadpool(controller.stop)

    app = FastAPI(
        lifespan=lifespan,
        title="scribefleet controller",
        version=__version__,
        description="Transcription jobs on every device you have. The contract: docs/api.md.",
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,  # no OAuth2 here: the page would be an undocumented route
    )
    app.state.controller, app.state.metrics, app.state.authenticator = controller, metrics, authenticator
    handlers: dict[Any, Any] = {
        RequestValidationError: _validation_error,
        StarletteHTTPException: _http_error,
        ScribefleetError: _scribefleet_error,
    }
    for exc_class, handler in handlers.items():
        app.add_exception_handler(exc_class, handler)
    app.add_middleware(HeadMiddleware, router=app.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_json_kb * 1024, upload_paths=UPLOAD_PATHS)
    app.add_middleware(AuthMiddleware, authenticator=authenticator)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(OpenAIErrorMiddleware)
    app.include_router(api_router(controller, metrics))
    app.include_router(handler_router(controller))
    app.include_router(runtime_router(controller, metrics, authenticator))
    app.include_router(openai_router(controller, metrics))
    include_ui(app)
    document_errors(app)
    return app


def include_ui(app: FastAPI) -> None:
    """Mount the web UI's pages (service/ui.py: pages under /ui, login at /ui/login, docs/ui.md)."""
    app.include_router(ui.router)
