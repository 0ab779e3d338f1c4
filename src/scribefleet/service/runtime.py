"""The controller about itself: /api/runtime, /health, /metrics, and the browser session routes.

`/api/runtime` is what an operator looks at first (seed 001): each slot with
its device, what it runs and which models it holds; the hardware facts of
`scribefleet doctor`; capacity and queue; the latest errors. `/health` is the
one route that needs no credentials and says nothing but that it is up.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from scribefleet import __version__
from scribefleet.service.auth import SESSION_COOKIE, Authenticator, principal_of, session_cookie_kwargs
from scribefleet.service.controller import Controller
from scribefleet.service.jobs import iso
from scribefleet.service.metrics import CONTENT_TYPE, Metrics
from scribefleet.jobs.redact import redact_all
from scribefleet.store.models import TaskState

RECENT_ERRORS = 20


class LoginRequest(BaseModel):
    """Body of POST /api/session."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=4096)


def runtime_json(controller: Controller) -> dict[str, Any]:
    """Slots, devices, capacity, queue and recent errors, as GET /api/runtime answers."""
    slots = controller.slot_views()
    counts = controller.store.counts()
    usable = [s for s in slots if s["status"] not in ("failed", "stopped")]
    busy = sum(s["busy"] for s in slots)
    queued_by_kind = Counter(t.kind for t in controller.store.tasks(states=[TaskState.QUEUED]))
    failed = sorted(controller.store.tasks(states=[TaskState.FAILED]), key=lambda t: t.finished_at or 0, reverse=True)
    errors: list[dict[str, Any]] = [
        {"slot": s["name"], **s["error"]} for s in slots if s["status"] == "failed" and s["error"]
    ]
    errors += [
        {"jobId": t.id, "filename": t.spec.get("display") or t.key, "code": t.error_code,
         "message": t.error_message, "at": iso(t.finished_at)}
        for t in failed[:RECENT_ERRORS]
    ]  # fmt: skip
    hardware = controller.hardware.model_dump(mode="json") if controller.hardware is not None else {}
    return {
        "slots": slots,
        "devices": hardware,
        "capacity": {"slots": len(usable), "busy": busy, "free": max(0, len(usable) - busy)},
        "queue": {
            "queued": counts[TaskState.QUEUED],
            "running": counts[TaskState.RUNNING],
            "byKind": dict(queued_by_kind),
        },
        "recentErrors": errors,
        "dispatcher": {"running": controller.dispatching},
        "remoteWorker": controller.remote_runtime(),
    }


def runtime_router(controller: Controller, metrics: Metrics, auth: Authenticator) -> APIRouter:
    """/api/runtime, /health, /metrics and /api/session."""
    router = APIRouter()

    @router.get("/api/runtime", tags=["runtime"])
    def runtime() -> dict[str, Any]:
        """Slots, devices, capacity, queue, recent errors; server paths cut to their last component."""
        return redact_all(runtime_json(controller), controller.settings, controller.state_dir)

    def health() -> dict[str, Any]:
        """Liveness; the only route without authentication (GET and HEAD)."""
        return {"status": "ok", "version": __version__}

    router.get("/health", tags=["runtime"], operation_id="health")(health)
    router.head("/health", tags=["runtime"], operation_id="health_head")(health)

    @router.get("/metrics", tags=["runtime"], response_class=Response)
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    _session_routes(router, auth)
    return router


def _session_routes(router: APIRouter, auth: Authenticator) -> None:
    @router.post("/api/session", tags=["session"])
    def login(body: LoginRequest, request: Request) -> JSONResponse:
        """Log a browser in with an API token: sets the session cookie, answers the CSRF token."""
        if not auth.disabled:
            auth.check_token(body.token, request.client.host if request.client else "")
        session_id, session = auth.sessions.create()
        response = JSONResponse({"csrfToken": session.csrf_token, "expiresAt": iso(session.expires_at)})
        response.set_cookie(value=session_id, **session_cookie_kwargs(request, auth.sessions.ttl_s))
        return response

    @router.get("/api/session", tags=["session"])
    def whoami(request: Request) -> dict[str, Any]:
        principal = principal_of(request)
        session = principal.session
        return {
            "authenticated": True,
            "via": principal.via,
            "csrfToken": session.csrf_token if session else None,
            "expiresAt": iso(session.expires_at) if session else None,
        }

    @router.delete("/api/session", status_code=204, tags=["session"])
    def logout(request: Request) -> Response:
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id:
            auth.sessions.delete(session_id)
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

