"""The controller's OpenAPI schema, with every error status each route really answers.

FastAPI documents only the success answer of a route (and a 422 validation
body the controller never sends: it answers 400 INVALID_OPTIONS). This adds,
per operation, the statuses its checks can answer, each with the error body
it carries: `{"error": {"code", "message", "details"}}`, or OpenAI's
`{"error": {"message", "type", "param", "code"}}` under /v1. The fuzzing test
(tests/service/test_schema.py) holds the app to this schema.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from scribefleet.service.auth import PUBLIC_ROUTES

ERROR_BODY = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}},
        }
    },
}
OPENAI_ERROR_BODY = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
#: seed 003's error answer, which /api/handler/run and /runsync give for a request its contract refuses
SEED_ERROR_BODY = {
    "type": "object",
    "required": ["status", "request_id", "error"],
    "properties": {"status": {"const": "error"}, "request_id": {"type": ["string", "null"]}, "error": {"type": "string"}},
}
SEED_ERROR_STATUSES = {"400", "403", "404", "422"}
DESCRIPTIONS = {
    400: "Invalid options or request (INVALID_OPTIONS, INVALID_REQUEST)",
    401: "No or wrong credentials (UNAUTHORIZED)",
    403: "A cookie-authenticated change without the session's CSRF token (CSRF_FAILED)",
    404: "No such job, batch, upload, output or model (NOT_FOUND, MODEL_NOT_FOUND)",
    409: "The job is not complete yet (JOB_NOT_COMPLETE)",
    413: "The body is over its limit (REQUEST_TOO_LARGE, FILE_TOO_LARGE)",
    422: "A media URL instead of an upload (URL_NOT_SUPPORTED)",
    429: "Too many wrong tokens from this address; see Retry-After (TOO_MANY_ATTEMPTS)",
    "default": "The job failed: its error code and message (docs/errors.md)",
}
#: statuses particular to one operation, beyond those every route of its kind answers
EXTRA: dict[tuple[str, str], tuple[int | str, ...]] = {
    ("post", "/api/session"): (401, 429),
    ("post", "/api/jobs"): (404, 422),
    ("get", "/api/jobs/{job_id}/outputs/{fmt}"): (409,),
    ("post", "/api/handler/run"): (404, 422),
    ("post", "/api/handler/runsync"): (404, 422),
    ("post", "/v1/audio/transcriptions"): (404, "default"),
    ("post", "/v1/audio/translations"): (404, "default"),
}


def _statuses(method: str, path: str, op: dict[str, Any]) -> list[int | str]:
    statuses: list[int | str] = [400]
    if (method.upper(), path) not in PUBLIC_ROUTES:
        statuses += [401, 429]
    if "{" in path:
        statuses.append(404)
    if method in ("post", "put", "patch", "delete"):
        statuses += [403, 413]
    return sorted(set(statuses + list(EXTRA.get((method, path), ()))), key=str)


def openapi_with_errors(app: FastAPI) -> dict[str, Any]:
    """The app's schema with its error answers documented (cached on the app like FastAPI's own)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    components["Error"], components["OpenAIError"] = ERROR_BODY, OPENAI_ERROR_BODY
    components["SeedError"] = SEED_ERROR_BODY
    for path, operations in schema.get("paths", {}).items():
        body_ref = "#/components/schemas/" + ("OpenAIError" if path.startswith("/v1/") else "Error")
        for method, op in operations.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            for status in _statuses(method, path, op):
                answer: dict[str, Any] = {
                    "description": DESCRIPTIONS[status],
                    "content": {"application/json": {"schema": {"$ref": body_ref}}},
                }
                if path.startswith("/api/handler/") and method == "post" and str(status) in SEED_ERROR_STATUSES:
                    seed = {"anyOf": [{"$ref": body_ref}, {"$ref": "#/components/schemas/SeedError"}]}
                    answer["content"] = {"application/json": {"schema": seed}}
                if status == 429:
                    answer["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "required": True}}
                responses[str(status)] = answer
    app.openapi_schema = schema
    return schema


def document_errors(app: FastAPI) -> None:
    """Serve `openapi_with_errors` as the app's /openapi.json."""
    app.openapi = lambda: openapi_with_errors(app)  # type: ignore[method-assign]
