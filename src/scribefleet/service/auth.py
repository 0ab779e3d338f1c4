"""Who may call the controller: API tokens, browser sessions and their CSRF tokens.

Every request passes `AuthMiddleware` before any route (or a 404) sees it, so a
route added later is protected without doing anything. Only `PUBLIC_ROUTES`
and `PUBLIC_PREFIXES` answer without credentials: `GET /health`, the login
`POST /api/session`, the UI's login page `GET /ui/login` and its static files.

Credentials, checked in this order:

1. `Authorization: Bearer <token>`: one of the configured API tokens
   (`SCRIBEFLEET_API_TOKENS`, `SCRIBEFLEET_API_TOKEN_FILE`), compared with
   `hmac.compare_digest` against every token. A bearer header that is wrong is
   refused; the cookie is not tried instead. No CSRF token is needed: a
   browser never adds this header on its own.
2. The `scribefleet_session` cookie, set by `POST /api/session {"token"}`
   (HttpOnly, SameSite=Strict). A state-changing request (POST, PUT, PATCH,
   DELETE) with it must carry the session's CSRF token in `X-CSRF-Token`,
   else 403 CSRF_FAILED.

How the web UI uses this (service/ui.py, static/app.js): the login page posts
the token to `POST /api/session` and keeps the answered `csrfToken`; a page
served later learns it again from `GET /api/session` (or, server-side, from
`csrf_token_of(request)`), puts it in a `<meta>` tag, and the script sends it
as `X-CSRF-Token` on every POST/DELETE. `principal_of(request)` tells a route
how the request was authenticated. A browser that asks for an HTML page
without credentials is redirected to the login page (`LOGIN_PATH?next=...`)
instead of getting a JSON 401.

Wrong tokens are throttled per client address (`WrongTokenThrottle`): after
`SCRIBEFLEET_AUTH_FAIL_LIMIT` wrong bearer tokens or logins within
`SCRIBEFLEET_AUTH_FAIL_WINDOW_S`, every token from that address is refused
with 429 TOO_MANY_ATTEMPTS and `Retry-After` (right ones too, so the pause is
no oracle), for a window that doubles with each further pause; each pause is
logged with the address. Tokens shorter than `MIN_TOKEN_CHARS` are refused at
start-up.

Tokens and session ids are secrets: they are never logged, never put in an
event or an error, and sessions are kept by the sha256 of their id.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import math
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import SecretStr
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from scribefleet.config import Settings
from scribefleet.errors import CsrfFailed, ScribefleetError, TooManyAttempts, Unauthorized, UsageError

log = logging.getLogger("scribefleet.auth")

SESSION_COOKIE = "scribefleet_session"
CSRF_HEADER = "x-csrf-token"
LOGIN_PATH = "/ui/login"
#: (method, path) pairs that answer without credentials; everything else needs them
PUBLIC_ROUTES = frozenset(
    {("GET", "/health"), ("HEAD", "/health"), ("POST", "/api/session"), ("GET", LOGIN_PATH), ("HEAD", LOGIN_PATH)}
)
#: (method, path prefix) pairs that answer without credentials: the UI's CSS and script
PUBLIC_PREFIXES = (("GET", "/ui/static/"), ("HEAD", "/ui/static/"))
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: where a browser asking for a page without credentials still gets JSON, not a redirect
_API_PREFIXES = ("/api/", "/v1/", "/metrics", "/openapi.json")
_PRINCIPAL_KEY = "scribefleet.principal"
#: the shortest API token the controller accepts (`openssl rand -hex 24` gives 48 characters)
MIN_TOKEN_CHARS = 16
#: the longest pause of an address that keeps sending wrong tokens, seconds
MAX_PAUSE_S = 86400.0
#: addresses whose failures are remembered at once (the oldest are forgotten first)
MAX_TRACKED_ADDRESSES = 10000


def load_tokens(settings: Settings) -> list[SecretStr]:
    """The API tokens of SCRIBEFLEET_API_TOKENS (comma-separated) and SCRIBEFLEET_API_TOKEN_FILE."""
    tokens: list[str] = []
    if settings.api_tokens is not None:
        tokens += [t.strip() for t in settings.api_tokens.get_secret_value().split(",")]
    if settings.api_token_file is not None:
        try:
            lines = Path(settings.api_token_file).expanduser().read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(
                f"cannot read the API token file {settings.api_token_file} ({exc.strerror}); "
                "fix SCRIBEFLEET_API_TOKEN_FILE or its permissions",
                path=str(settings.api_token_file),
            ) from exc
        tokens += [line.strip() for line in lines if not line.strip().startswith("#")]
    return [SecretStr(t) for t in dict.fromkeys(tokens) if t]


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_auth_config(settings: Settings, host: str, tokens: list[SecretStr]) -> None:
    """Refuse to serve without authentication off loopback, or with authentication but no token."""
    if settings.auth_disabled:
        if not is_loopback(host):
            raise UsageError(
                f"SCRIBEFLEET_AUTH_DISABLED is only allowed on a loopback address, not {host}; "
                "listen on 127.0.0.1, or configure SCRIBEFLEET_API_TOKENS and turn authentication on"
            )
        return
    if not tokens:
        raise UsageError(
            "no API token is configured: set SCRIBEFLEET_API_TOKENS (comma-separated) or "
            "SCRIBEFLEET_API_TOKEN_FILE (one per line), e.g. SCRIBEFLEET_API_TOKENS=$(openssl rand -hex 24); "
            "for development on 127.0.0.1 only, SCRIBEFLEET_AUTH_DISABLED=true"
        )
    short = [i for i, t in enumerate(tokens, 1) if len(t.get_secret_value()) < MIN_TOKEN_CHARS]
    if short:
        raise UsageError(
            f"API token(s) number {', '.join(map(str, short))} are shorter than {MIN_TOKEN_CHARS} characters, "
            "which can be guessed; make new ones with 'openssl rand -hex 24'",
            tokens=short,
        )


class WrongTokenThrottle:
    """Wrong tokens per client address: `limit` within `window_s`, then a pause that doubles each time."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._failures: dict[str, deque[float]] = {}
        self._paused_until: dict[str, float] = {}
        self._pauses: dict[str, int] = {}
        self._lock = threading.Lock()

    def retry_after_s(self, address: str) -> int:
        """Seconds `address` must still wait (0: it may try)."""
        with self._lock:
            left = self._paused_until.get(address, 0.0) - time.monotonic()
        return math.ceil(left) if left > 0 else 0

    def failed(self, address: str) -> None:
        """Count one wrong token from `address`; the limit-th within the window starts a pause."""
        now = time.monotonic()
        with self._lock:
            failures = self._failures.setdefault(address, deque())
            failures.append(now)
            while failures and failures[0] <= now - self.window_s:
                failures.popleft()
            if len(failures) >= self.limit:
                failures.clear()
                pauses = self._pauses[address] = self._pauses.get(address, 0) + 1
                pause_s = min(MAX_PAUSE_S, self.window_s * 2 ** (pauses - 1))
                self._paused_until[address] = now + pause_s
                log.warning(
                    "throttling %s: %d wrong API tokens within %.0f s; its tokens are refused for %.0f s",
                    address, self.limit, self.window_s, pause_s,
                )  # fmt: skip
            if len(self._failures) > MAX_TRACKED_ADDRESSES:  # many addresses: forget the oldest, and ended pauses
                self._failures.pop(next(iter(self._failures)))
                for ended in [a for a, until in self._paused_until.items() if until <= now]:
                    self._paused_until.pop(ended)
                    self._pauses.pop(ended, None)


@dataclass(frozen=True)
class Session:
    """A browser's login: its CSRF token and when it ends (epoch seconds)."""

    csrf_token: str
    expires_at: float


@dataclass(frozen=True)
class Principal:
    """How a request was authenticated."""

    via: Literal["token", "session", "disabled", "public"]
    session: Session | None = None


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """Browser sessions in memory, by the sha256 of their id (a restart logs browsers out)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self) -> tuple[str, Session]:
        """A new session; returns its id (the cookie value) and the session."""
        session_id = secrets.token_urlsafe(32)
        session = Session(csrf_token=secrets.token_urlsafe(32), expires_at=time.time() + self.ttl_s)
        with self._lock:
            now = time.time()
            for key in [k for k, s in self._sessions.items() if s.expires_at <= now]:
                del self._sessions[key]
            self._sessions[_digest(session_id)] = session
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            session = self._sessions.get(_digest(session_id))
            if session is not None and session.expires_at <= time.time():
                del self._sessions[_digest(session_id)]
                return None
            return session

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(_digest(session_id), None)


class Authenticator:
    """Decides whether one request may pass: tokens, sessions, CSRF, public routes."""

    def __init__(
        self,
        tokens: list[SecretStr],
        sessions: SessionStore,
        *,
        disabled: bool = False,
        throttle: WrongTokenThrottle | None = None,
    ) -> None:
        self._tokens = [t.get_secret_value().encode() for t in tokens]
        self.sessions = sessions
        self.disabled = disabled
        self.throttle = throttle or WrongTokenThrottle(10, 300.0)

    def token_ok(self, presented: str) -> bool:
        """Constant-time comparison against every configured token (no early exit)."""
        given = presented.encode()
        found = False
        for token in self._tokens:
            found |= hmac.compare_digest(given, token)
        return found

    def check_token(self, presented: str, address: str) -> None:
        """Refuse a token from a paused address (TooManyAttempts) or a wrong one (Unauthorized, counted)."""
        wait_s = self.throttle.retry_after_s(address)
        if wait_s:
            raise TooManyAttempts(
                f"too many wrong API tokens from your address; try again in {wait_s} s", retry_after_s=wait_s
            )
        if not self.token_ok(presented):
            self.throttle.failed(address)
            raise Unauthorized("the bearer token is not one of the controller's API tokens")

    @staticmethod
    def is_public(method: str, path: str) -> bool:
        return (method, path) in PUBLIC_ROUTES or any(
            method == m and path.startswith(prefix) for m, prefix in PUBLIC_PREFIXES
        )

    def authenticate(self, conn: HTTPConnection, method: str) -> Principal:
        """The request's principal; raises Unauthorized or CsrfFailed."""
        header = conn.headers.get("authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            given = value.strip() if scheme.lower() == "bearer" else ""
            if self.disabled:
                if given and self.token_ok(given):
                    return Principal("token")
            elif given:
                self.check_token(given, conn.client.host if conn.client else "")
                return Principal("token")
            else:
                raise Unauthorized("the Authorization header must be 'Bearer <token>' with an API token")
        session_id = conn.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(session_id) if session_id else None
        if session is not None:
            if method in STATE_CHANGING:
                given = conn.headers.get(CSRF_HEADER, "")
                if not hmac.compare_digest(given.encode(), session.csrf_token.encode()):
                    raise CsrfFailed(
                        "this request changes state and is authenticated by the session cookie, so it must "
                        "carry the session's CSRF token in the X-CSRF-Token header (see GET /api/session)"
                    )
            return Principal("session", session)
        if self.disabled:
            return Principal("disabled")
        raise Unauthorized(
            "authentication required: send 'Authorization: Bearer <token>' with one of the controller's "
            "API tokens, or log in with POST /api/session"
        )


def principal_of(request: Request) -> Principal:
    """How the middleware authenticated this request."""
    return request.scope.get(_PRINCIPAL_KEY) or Principal("public")


def csrf_token_of(request: Request) -> str | None:
    """The CSRF token of the request's session (for a page to embed), None without a session."""
    session = principal_of(request).session
    return session.csrf_token if session is not None else None


def error_body(err: ScribefleetError) -> bytes:
    return json.dumps({"error": err.to_dict()}).encode()


def error_headers(err: ScribefleetError) -> dict[str, str]:
    """Headers an error answer carries besides its body: Retry-After, WWW-Authenticate."""
    headers = {}
    if isinstance(err, TooManyAttempts):
        headers["retry-after"] = str(err.details.get("retry_after_s", 1))
    if isinstance(err, Unauthorized):
        headers["www-authenticate"] = 'Bearer realm="scribefleet"'
    return headers


class AuthMiddleware:
    """Pure ASGI middleware: every HTTP request is authenticated before routing."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.auth = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        method = scope.get("method", "GET")
        try:
            scope[_PRINCIPAL_KEY] = self.auth.authenticate(conn, method)
        except ScribefleetError as err:
            if not self.auth.is_public(method, conn.url.path):
                await self._refuse(scope, conn, method, err, send)
                return
            scope[_PRINCIPAL_KEY] = Principal("public")  # stale credentials do not lock anyone out of login
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, conn: HTTPConnection, method: str, err: ScribefleetError, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        path = conn.url.path
        wants_page = "text/html" in conn.headers.get("accept", "") and method in ("GET", "HEAD")
        if isinstance(err, Unauthorized) and wants_page and not path.startswith(_API_PREFIXES):
            target = path + (f"?{conn.url.query}" if conn.url.query else "")
            headers: list[tuple[bytes, bytes]] = [(b"location", f"{LOGIN_PATH}?next={quote(target, safe='')}".encode())]
            await _send(send, 303, headers, b"")
            return
        body = error_body(err)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.encode(), v.encode()) for k, v in error_headers(err).items()]
        await _send(send, err.http_status, headers, body)


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def session_cookie_kwargs(request: Request, ttl_s: float) -> dict[str, Any]:
    """Attributes of the session cookie: HttpOnly, SameSite=Strict, Secure over HTTPS."""
    return {
        "key": SESSION_COOKIE,
        "max_age": int(ttl_s),
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/",
    }
