"""Authentication: every route but the public few refuses a request without credentials; sessions need CSRF."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from scribefleet.errors import UsageError
from scribefleet.service.auth import PUBLIC_PREFIXES, PUBLIC_ROUTES, SESSION_COOKIE, check_auth_config, load_tokens
from service.harness import AUTH, TOKEN, Service, service_settings

pytestmark = pytest.mark.anyio

#: the only routes that may answer without credentials; adding one means changing this test on purpose
ALLOWED_PUBLIC = {
    ("GET", "/health"),
    ("POST", "/api/session"),
    ("GET", "/ui/login"),
    ("GET", "/ui/static/{name}"),
}


def app_routes(app: object) -> Iterator[tuple[str, str]]:
    """(method, path) of every route of the app, routers included (old and new FastAPI)."""
    for route in app.routes:  # type: ignore[attr-defined]
        if hasattr(route, "effective_route_contexts"):  # FastAPI >= 0.16x: included routers are lazy
            pairs = [(ctx.path, getattr(ctx.original_route, "methods", None)) for ctx in route.effective_route_contexts()]
        else:
            pairs = [(route.path, getattr(route, "methods", None))]
        for path, methods in pairs:
            for method in sorted(methods or {"GET"}):
                if method != "HEAD":
                    yield method, path


async def test_every_route_but_the_public_ones_needs_credentials(idle: Service) -> None:
    routes = sorted(set(app_routes(idle.app)))
    assert ("POST", "/api/jobs") in routes and ("POST", "/v1/audio/transcriptions") in routes and len(routes) > 20
    answered = []
    async with idle.client() as client:
        for method, path in routes:
            url = re.sub(r"\{[^}]+\}", "x", path)
            resp = await client.request(method, url)
            if resp.status_code != 401:
                answered.append((method, path))
                continue
            assert resp.json()["error"]["code"] == "UNAUTHORIZED"
            assert resp.headers["www-authenticate"].startswith("Bearer")
    assert set(answered) <= ALLOWED_PUBLIC, f"routes that answer without credentials: {set(answered) - ALLOWED_PUBLIC}"
    assert ("GET", "/health") in answered and ("POST", "/api/session") in answered


def test_the_public_list_is_the_allowed_one() -> None:
    public = {(m, p) for m, p in PUBLIC_ROUTES if m != "HEAD"} | {(m, p + "{name}") for m, p in PUBLIC_PREFIXES if m != "HEAD"}
    assert public == ALLOWED_PUBLIC


async def test_unknown_routes_and_docs_need_credentials_too(idle: Service) -> None:
    async with idle.client() as client:
        for path in ("/docs", "/openapi.json", "/no/such/route", "/metrics", "/api/runtime"):
            assert (await client.get(path)).status_code == 401, path
        assert (await client.get("/docs", headers=AUTH)).status_code == 200
        assert "/api/jobs" in (await client.get("/openapi.json", headers=AUTH)).json()["paths"]
        missing = await client.get("/no/such/route", headers=AUTH)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
        wrong = await client.delete("/api/jobs", headers=AUTH)
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_bearer_tokens(idle: Service) -> None:
    async with idle.client() as client:
        assert (await client.get("/api/jobs", headers=AUTH)).status_code == 200
        for header in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", "Bearer ", TOKEN):
            resp = await client.get("/api/jobs", headers={"Authorization": header})
            assert resp.status_code == 401, header
            assert TOKEN not in resp.text


async def test_a_browser_asking_for_a_page_goes_to_the_login_page(idle: Service) -> None:
    async with idle.client() as client:
        resp = await client.get("/ui/jobs/abc?x=1", headers={"Accept": "text/html"})
        assert resp.status_code == 303
        assert resp.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%2Fabc%3Fx%3D1"
        api = await client.get("/api/jobs", headers={"Accept": "text/html"})
        assert api.status_code == 401  # API routes answer JSON, never redirect


async def test_session_login_csrf_and_logout(idle: Service) -> None:
    async with idle.client() as client:
        bad = await client.post("/api/session", json={"token": "nope"})
        assert bad.status_code == 401 and SESSION_COOKIE not in bad.cookies
        login = await client.post("/api/session", json={"token": TOKEN})
        assert login.status_code == 200
        csrf = login.json()["csrfToken"]
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/" in cookie
        assert TOKEN not in cookie and csrf not in cookie
        # the cookie alone is enough to read
        me = await client.get("/api/session")
        assert me.json() == {"authenticated": True, "via": "session", "csrfToken": csrf, "expiresAt": login.json()["expiresAt"]}
        assert (await client.get("/api/jobs")).status_code == 200
        # ... but not to change state
        for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": csrf + "x"}):
            resp = await client.post("/api/batches", json={"name": "b"}, headers=headers)
            assert resp.status_code == 403 and resp.json()["error"]["code"] == "CSRF_FAILED", headers
        made = await client.post("/api/batches", json={"name": "b"}, headers={"X-CSRF-Token": csrf})
        assert made.status_code == 201
        assert (await client.delete("/api/session")).status_code == 403  # logout is a change too
        out = await client.delete("/api/session", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 204
        client.cookies.clear()
        client.cookies.set(SESSION_COOKIE, login.cookies[SESSION_COOKIE])  # replaying the old cookie
        assert (await client.get("/api/jobs")).status_code == 401


async def test_a_bearer_token_needs_no_csrf_even_with_a_cookie(idle: Service) -> None:
    async with idle.client() as client:
        await client.post("/api/session", json={"token": TOKEN})
        resp = await client.post("/api/batches", json={}, headers=AUTH)
        assert resp.status_code == 201
        me = await client.get("/api/session", headers=AUTH)
        assert me.json()["via"] == "token" and me.json()["csrfToken"] is None


async def test_expired_sessions_are_refused(tmp_path: Path) -> None:
    from scribefleet.service.app import create_app
    from scribefleet.service.controller import Controller

    settings = service_settings(tmp_path, session_ttl_s=0.001)
    controller = Controller(settings, tmp_path / "state")
    app = create_app(controller, settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.post("/api/session", json={"token": TOKEN})).status_code == 200
        assert (await client.get("/api/jobs")).status_code == 401
    controller.stop()


async def test_no_secret_reaches_logs_or_answers(idle: Service, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret_guess = TOKEN[:-1] + "Z"
    async with idle.client() as client:
        answers = [
            await client.post("/api/session", json={"token": secret_guess}),
            await client.post("/api/session", json={"token": 7}),
            await client.get("/api/jobs", headers={"Authorization": f"Bearer {secret_guess}"}),
            await client.post("/api/session", json={"token": TOKEN}),
        ]
    for resp in answers:
        assert TOKEN not in resp.text and secret_guess not in resp.text
    assert TOKEN not in caplog.text and secret_guess not in caplog.text


def test_auth_configuration_is_checked_before_serving(tmp_path: Path) -> None:
    tokens = [SecretStr("t" * 16)]
    check_auth_config(service_settings(tmp_path), "0.0.0.0", tokens)
    for short in ("t", "fifteen-chars-x"):
        with pytest.raises(UsageError, match="shorter than 16"):
            check_auth_config(service_settings(tmp_path), "127.0.0.1", [*tokens, SecretStr(short)])
    with pytest.raises(UsageError, match="no API token"):
        check_auth_config(service_settings(tmp_path, api_tokens=None), "127.0.0.1", [])
    off = service_settings(tmp_path, api_tokens=None, auth_disabled=True)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_auth_config(off, host, [])
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        with pytest.raises(UsageError, match="loopback"):
            check_auth_config(off, host, [])


def test_tokens_from_the_variable_and_the_file(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("# operators\nfile-token-1\n\n  file-token-2  \nenv-a\n")
    settings = service_settings(tmp_path, api_tokens=" env-a, env-b ,,", api_token_file=token_file)
    assert [t.get_secret_value() for t in load_tokens(settings)] == ["env-a", "env-b", "file-token-1", "file-token-2"]
    with pytest.raises(UsageError, match="cannot read the API token file"):
        load_tokens(service_settings(tmp_path, api_token_file=tmp_path / "missing"))


async def test_auth_disabled_lets_requests_through(tmp_path: Path) -> None:
    from scribefleet.service.app import create_app
    from scribefleet.service.controller import Controller

    settings = service_settings(tmp_path, api_tokens=None, auth_disabled=True)
    controller = Controller(settings, tmp_path / "state")
    app = create_app(controller, settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.post("/api/batches", json={})).status_code == 201
        assert (await client.get("/api/session")).json()["via"] == "disabled"
    controller.stop()


def test_api_tokens_never_travel_to_slots(tmp_path: Path) -> None:
    """A slot gets the settings over its socket with the secrets it needs revealed; API tokens are not among them."""
    settings = service_settings(tmp_path, api_tokens=f"{TOKEN},second-secret")
    init_message = str(settings.model_dump(mode="json", context={"reveal_secrets": True}))
    assert TOKEN not in init_message and "second-secret" not in init_message
    assert TOKEN not in repr(settings)
