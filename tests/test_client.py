"""ControllerClient: backoff schedule, retries, error codes over the wire, downloads.

The HTTP side is a real server on loopback (http.server in a thread) that
answers from a script, so each retry rule is seen from the server: how many
requests really arrived.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from scribefleet.client import Backoff, ControllerClient, backoff_delay, normalize_url
from scribefleet.errors import ControllerUnreachable, MediaUnreadable, ScribefleetError, Unauthorized, UsageError


# -- the backoff schedule (pure) ---------------------------------------------------------


def test_backoff_grows_exponentially_within_jitter_bounds_and_caps() -> None:
    rng = random.Random(7)
    for attempt in range(40):
        ceiling = min(30.0, 0.5 * 2**attempt)
        samples = [backoff_delay(attempt, base_s=0.5, max_s=30.0, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in samples), (attempt, min(samples), max(samples))
        assert max(samples) - min(samples) > ceiling / 4, "no jitter: every client would retry in lockstep"
    assert backoff_delay(1000, base_s=0.5, max_s=30.0) <= 30.0  # huge attempt numbers neither overflow nor exceed the cap


def test_backoff_schedule_doubles_and_resets() -> None:
    b = Backoff(1.0, 8.0, rng=random.Random(1))
    delays = [b.next() for _ in range(6)]
    ceilings = [1, 2, 4, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings)), delays
    b.reset()
    assert 0.5 <= b.next() <= 1.0


def test_normalize_url() -> None:
    assert normalize_url("127.0.0.1:8476/") == "http://127.0.0.1:8476"
    assert normalize_url(" https://x.example/ ") == "https://x.example"
    with pytest.raises(UsageError):
        normalize_url("ftp://x")
    with pytest.raises(UsageError):
        normalize_url("")


# -- a scripted server -----------------------------------------------------------------


class Script:
    """Answers per (method, path): a queue of (status, body); the last one repeats."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], list[tuple[int, Any]]] = {}
        self.requests: list[dict[str, Any]] = []

    def on(self, method: str, path: str, *answers: tuple[int, Any]) -> None:
        self.answers[(method, path)] = list(answers)

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r["method"] == method and r["path"] == path)


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?")[0]
            script.requests.append({"method": self.command, "path": path, "query": self.path.partition("?")[2],
                                    "headers": dict(self.headers), "body": body})
            queue = script.answers.get((self.command, path)) or [(404, {"error": {"code": "NOT_FOUND", "message": "no route", "details": {}}})]
            status, payload = queue.pop(0) if len(queue) > 1 else queue[0]
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if isinstance(payload, bytes) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[Script, str]]:
    script = Script()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield script, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _client(url: str, **kw: Any) -> ControllerClient:
    return ControllerClient(url, kw.pop("token", "s3cret-token"), timeout_s=5, backoff_base_s=0.01, backoff_max_s=0.05, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- retries -----------------------------------------------------------------------------


def test_503_and_429_are_retried_then_the_answer_returned(server: tuple[Script, str]) -> None:
    script, url = server
    job = {"id": "j1", "status": "running"}
    script.on("GET", "/api/jobs/j1", (503, {"error": {"code": "INTERNAL_ERROR", "message": "busy", "details": {}}}), (429, b"slow down"), (200, job))
    with _client(url) as client:
        assert client.job("j1") == job
    assert script.count("GET", "/api/jobs/j1") == 3
    assert script.requests[0]["headers"]["Authorization"] == "Bearer s3cret-token"


def test_a_500_is_not_repeated_for_job_creation_but_is_for_reads(server: tuple[Script, str]) -> None:
    script, url = server
    boom = (500, {"error": {"code": "INTERNAL_ERROR", "message": "boom", "details": {}}})
    script.on("POST", "/api/jobs", boom)
    script.on("GET", "/api/jobs/j2", boom, (200, {"id": "j2", "status": "queued"}))
    with _client(url, retries=3) as client:
        with pytest.raises(ScribefleetError) as info:
            client.create_job("u1", {"model": "tiny.en"}, "b1")
        assert info.value.code == "INTERNAL_ERROR" and info.value.http_status == 500
        assert client.job("j2")["status"] == "queued"
    assert script.count("POST", "/api/jobs") == 1, "a job creation that may have happened was sent again"
    assert json.loads(script.requests[0]["body"]) == {"uploadId": "u1", "options": {"model": "tiny.en"}, "batchId": "b1"}
    assert script.count("GET", "/api/jobs/j2") == 2


def test_retries_are_bounded_and_reads_give_up_with_the_servers_code(server: tuple[Script, str]) -> None:
    script, url = server
    script.on("GET", "/api/jobs/j3", (502, b"bad gateway"))
    with _client(url, retries=2) as client, pytest.raises(ScribefleetError) as info:
        client.job("j3")
    assert script.count("GET", "/api/jobs/j3") == 3
    assert info.value.http_status == 502 and "scribefleet serve" in info.value.message


def test_connection_refused_is_retried_until_the_controller_comes_up(tmp_path: Path) -> None:
    port = _free_port()
    script = Script()
    script.on("POST", "/api/batches", (201, {"id": "b9", "name": "x"}))

    def start_late() -> None:
        time.sleep(0.4)
        httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(script))
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    threading.Thread(target=start_late, daemon=True).start()
    client = ControllerClient(f"127.0.0.1:{port}", None, timeout_s=2, retries=8, backoff_base_s=0.1, backoff_max_s=0.4)
    with client:
        # creating a batch is never repeated after a 5xx, but a refused connection never reached anyone
        assert client.create_batch("x")["id"] == "b9"
    assert "Authorization" not in script.requests[0]["headers"]


def test_unreachable_after_retries_names_the_url_and_the_next_step() -> None:
    port = _free_port()
    started = time.monotonic()
    with ControllerClient(f"http://127.0.0.1:{port}", "tok-never-shown", retries=2, backoff_base_s=0.05, backoff_max_s=0.1) as client:
        with pytest.raises(ControllerUnreachable) as info:
            client.job("x")
    err = info.value
    assert err.retryable and err.code == "CONTROLLER_UNREACHABLE"
    assert f"127.0.0.1:{port}" in err.message and "scribefleet serve" in err.message and "3 attempt" in err.message
    assert "tok-never-shown" not in err.message + json.dumps(err.details)
    assert time.monotonic() - started >= 0.05  # it did wait between attempts


# -- error bodies ------------------------------------------------------------------------


def test_error_codes_survive_the_wire(server: tuple[Script, str]) -> None:
    script, url = server
    script.on("POST", "/api/jobs", (422, {"error": {"code": "MEDIA_UNREADABLE", "message": "not audio", "details": {"code": "x", "message": "y"}}}))
    script.on("GET", "/api/jobs/new", (418, {"error": {"code": "SOMETHING_NEWER", "message": "from the future", "details": {}}}))
    with _client(url) as client:
        with pytest.raises(MediaUnreadable) as info:
            client.create_job("u", {})
        assert info.value.message == "not audio" and info.value.details == {"code": "x", "message": "y"}
        with pytest.raises(ScribefleetError) as newer:
            client.job("new")
        assert newer.value.code == "SOMETHING_NEWER" and newer.value.http_status == 418


def test_unauthorized_with_and_without_a_body(server: tuple[Script, str]) -> None:
    script, url = server
    script.on("GET", "/api/jobs/a", (401, {"error": {"code": "UNAUTHORIZED", "message": "bad token", "details": {}}}))
    script.on("GET", "/api/jobs/b", (403, b"<html>forbidden</html>"))
    with _client(url, token="wrong-token") as client:
        with pytest.raises(Unauthorized, match="bad token") as server_said:
            client.job("a")
        assert "SCRIBEFLEET_TOKEN" in server_said.value.message  # the CLI's next step is added to the server's words
        with pytest.raises(Unauthorized) as info:
            client.job("b")
        assert "SCRIBEFLEET_TOKEN" in info.value.message and "wrong-token" not in info.value.message
    assert script.count("GET", "/api/jobs/a") == 1, "an auth failure is not retried"


# -- uploads, downloads, listing ----------------------------------------------------------


def test_upload_streams_the_file_with_its_name(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    media = tmp_path / "rapport café.wav"
    media.write_bytes(b"RIFF" + bytes(range(256)) * 40)
    script.on("POST", "/api/uploads", (201, {"uploadId": "u7", "filename": media.name, "sizeBytes": media.stat().st_size}))
    with _client(url) as client:
        assert client.upload(media)["uploadId"] == "u7"
    req = script.requests[0]
    assert req["headers"]["Content-Type"].startswith("multipart/form-data")
    assert media.read_bytes() in req["body"] and b'name="file"' in req["body"]


def test_download_is_atomic_and_an_error_leaves_nothing(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    script.on("GET", "/api/jobs/j/outputs/srt", (200, b"1\n00:00:00,000 --> 00:00:01,000\nhello\n"))
    script.on("GET", "/api/jobs/j/outputs/vtt", (409, {"error": {"code": "JOB_NOT_COMPLETE", "message": "still running", "details": {}}}))
    with _client(url) as client:
        client.download("j", "srt", tmp_path / "sub" / "a.srt")
        assert (tmp_path / "sub" / "a.srt").read_bytes().endswith(b"hello\n")
        with pytest.raises(ScribefleetError) as info:
            client.download("j", "vtt", tmp_path / "sub" / "a.vtt")
    assert info.value.code == "JOB_NOT_COMPLETE"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.srt"], "a failed download left a file"


def test_job_listing_follows_pages(server: tuple[Script, str]) -> None:
    script, url = server
    script.on("GET", "/api/jobs",
              (200, {"items": [{"id": "a"}, {"id": "b"}], "total": 3, "limit": 2, "offset": 0}),
              (200, {"items": [{"id": "c"}], "total": 3, "limit": 2, "offset": 2}))
    with _client(url) as client:
        assert [j["id"] for j in client.jobs(batch_id="b1", page_size=2)] == ["a", "b", "c"]
    queries = [r["query"] for r in script.requests]
    assert "batchId=b1" in queries[0] and "offset=2" in queries[1]


def test_batch_cancel_and_logs_routes(server: tuple[Script, str]) -> None:
    script, url = server
    script.on("POST", "/api/batches/b1/cancel", (200, {"id": "b1", "jobs": [{"id": "j", "status": "canceled"}]}))
    script.on("GET", "/api/jobs/j/logs", (200, b"2026-11-23T13:37:29.123Z event completed\n"))
    with _client(url) as client:
        assert client.cancel_batch("b1")["jobs"][0]["status"] == "canceled"
        assert "completed" in client.logs("j")
    assert script.requests[-1]["query"] == "format=text"


def test_ids_cannot_walk_to_other_routes(server: tuple[Script, str]) -> None:
    script, url = server
    with _client(url) as client, pytest.raises(ScribefleetError):
        client.job("../uploads")
    assert script.requests[0]["path"] == "/api/jobs/..%2Fuploads"


def test_a_controller_url_scheme_has_no_case() -> None:
    assert normalize_url("HTTP://127.0.0.1:8476/") == "HTTP://127.0.0.1:8476"
    assert normalize_url("Https://x.example") == "Https://x.example"
