"""ASGI guards around the controller's app: bounded request bodies, and no crash that drops a connection.

`BodyLimitMiddleware` reads every request body that is not an upload before
any route sees it, refusing it with 413 REQUEST_TOO_LARGE as soon as its
`Content-Length` or the bytes read so far pass the limit, so a huge body is
never read whole. A body within the limit is handed on as it came. Upload
routes stream their bodies to disk under their own limit (service/uploads.py)
and are let through untouched.

`restrict_new_files` is the file side: `scribefleet serve` applies the umask
setting (default 077) to its process before it creates anything, so the state
folder, store, logs, uploads and outputs are 0700/0600, and so are those of
the slots, which inherit the umask.

`HeadMiddleware` answers HEAD wherever GET is answered (RFC 9110: a server
that takes GET takes HEAD): the request runs as a GET and only its status and
headers leave. Event streams (`.../events`) never end, so HEAD there stays 405.

`CatchAllMiddleware` turns an exception no handler took into the standard 500
INTERNAL_ERROR body, traceback in the log only. Starlette's own last-resort
handler re-raises after answering, and uvicorn then closes the keep-alive
connection, so the client's next request would fail too; here the exception
ends with the answer.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scribefleet.config import Settings
from scribefleet.errors import RequestTooLarge, ScribefleetError

log = logging.getLogger("scribefleet.service")

def restrict_new_files(settings: Settings, state_dir: Path) -> None:
    """Apply SCRIBEFLEET_UMASK to this process (and so to its slots), and create the state folder under it."""
    os.umask(settings.umask_bits)
    state_dir.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(state_dir.stat().st_mode)
    if mode & settings.umask_bits:
        log.warning(
            "the state folder %s is mode %o: others may read its uploads and transcripts; "
            "'chmod %o %s' restricts it as SCRIBEFLEET_UMASK=%s would",
            state_dir, mode, 0o777 & ~settings.umask_bits, state_dir, settings.umask,
        )  # fmt: skip


BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def send_error(send: Send, err: ScribefleetError, headers: dict[str, str] | None = None) -> None:
    """Answer `err` as `{"error": {...}}` with its status."""
    body = json.dumps({"error": err.to_dict()}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": err.http_status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuse non-upload request bodies over `max_bytes` (413) before reading them whole."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_paths: frozenset[str]) -> None:
        self.app, self.max_bytes, self.upload_paths = app, max_bytes, upload_paths

    def _too_large(self) -> RequestTooLarge:
        limit_kb = self.max_bytes // 1024
        return RequestTooLarge(
            f"the request body is larger than the {limit_kb} KiB limit of JSON bodies (SCRIBEFLEET_MAX_JSON_KB); "
            "media goes to POST /api/uploads",
            limit_kb=limit_kb,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS or scope["path"] in self.upload_paths:
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await send_error(send, self._too_large(), {"connection": "close"})
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_error(send, self._too_large(), {"connection": "close"})
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class HeadMiddleware:
    """HEAD on a route that takes GET (and not HEAD itself) runs as that GET, its body left out."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app, self.router = app, router

    def _as_get(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] != "HEAD" or scope["path"].endswith("/events"):
            return False
        routes = self.router.routes
        if any(r.matches(scope)[0] is Match.FULL for r in routes):
            return False  # the route takes HEAD itself (/health)
        return any(r.matches({**scope, "method": "GET"})[0] is Match.FULL for r in routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._as_get(scope):
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.start":
                await send(message)
            elif message["type"] == "http.response.body":
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                if message.get("more_body", False):
                    raise _HeadDone  # a file of 2 GB is not read to be thrown away

        try:
            await self.app({**scope, "method": "GET"}, receive, headers_only)
        except _HeadDone:
            pass


class _HeadDone(Exception):
    """The answer to a HEAD has left: the GET's body is not wanted."""


class CatchAllMiddleware:
    """Any exception no handler took becomes 500 INTERNAL_ERROR, and the connection stays usable."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:  # noqa: BLE001 - the last resort: answered, logged, never re-raised
            log.error("%s %s failed", scope.get("method"), scope.get("path"), exc_info=exc)
            if not started:
                await send_error(send, ScribefleetError("internal error; the controller's log has the details"))
