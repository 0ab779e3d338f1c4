"""The remote worker service in process: token on every route, atomic admission, idempotency, its own store."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import TEXTS, wer
from scribefleet.errors import UsageError
from scribefleet.service.worker_app import WorkerService, create_worker_app
from service.harness import DATA, WAIT_S, service_settings
from service.test_auth import app_routes

pytestmark = pytest.mark.anyio

WTOKEN = "worker-token-0123456789"
WAUTH = {"Authorization": f"Bearer {WTOKEN}"}
OPTIONS = json.dumps({"model": "tiny.en", "formats": ["srt", "txt"], "device": "cpu"})


def _service(base: Path, **overrides: Any) -> WorkerService:
    settings = service_settings(base, worker_token=WTOKEN, worker_model="tiny.en", **overrides)
    return WorkerService(settings, base / "worker", slots=1, device="cpu")


def _client(service: WorkerService) -> httpx.AsyncClient:
    app = create_worker_app(service)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker")


@pytest.fixture
def idle_worker(tmp_path: Path) -> Iterator[WorkerService]:
    """A worker whose dispatcher never starts: admitted jobs stay queued."""
    service = _service(tmp_path, worker_max_concurrent_jobs=2, max_file_mb=1, auth_fail_limit=1000)
    yield service
    service.stop()


async def _post(client: httpx.AsyncClient, name: str = "en01.wav", key: str | None = None,
                options: str = OPTIONS) -> httpx.Response:
    headers = {**WAUTH, **({"Idempotency-Key": key} if key else {})}
    with (DATA / name).open("rb") as fh:
        return await client.post("/v1/jobs", headers=headers, files={"file": (name, fh, "audio/wav")},
                                 data={"options": options})


async def _wait(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        job = (await client.get(f"/v1/jobs/{job_id}", headers=WAUTH)).json()
        if job["status"] in ("complete", "failed", "canceled"):
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.1)


async def test_every_route_but_health_needs_the_token(idle_worker: WorkerService) -> None:
    async with _client(idle_worker) as client:
        app = client._transport.app  # type: ignore[attr-defined]
        routes = sorted(set(app_routes(app)))
        assert {("POST", "/v1/jobs"), ("GET", "/v1/ping"), ("POST", "/v1/jobs/{job_id}/cancel")} <= set(routes)
        answered = []
        for method, path in routes + [("GET", "/no/such/route")]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": WTOKEN}):
                resp = await client.request(method, re.sub(r"\{[^}]+\}", "x", path), headers=headers)
                if resp.status_code != 401:
                    answered.append((method, path))
                    continue
                assert resp.json()["error"]["code"] == "UNAUTHORIZED" and resp.headers["www-authenticate"] == "Bearer"
        assert set(answered) == {("GET", "/health")}
        # a load balancer's HEAD probe: the controller answered it, the worker said 405
        head = await client.head("/health")
        assert head.status_code == 200 and head.content == b""
        assert (await client.head("/v1/ping", headers=WAUTH)).status_code == 200
        assert (await client.head("/v1/ping")).status_code == 401
        ping = await client.get("/v1/ping", headers=WAUTH)
        assert ping.status_code == 200
        body = ping.json()
        assert {"activeJobs", "maxConcurrentJobs", "gpu", "gpuName", "models", "maxFileMB", "version"} <= set(body)
        assert (body["activeJobs"], body["maxConcurrentJobs"], body["maxFileMB"], body["gpu"]) == (0, 2, 1, False)


async def test_ping_public_when_configured(tmp_path: Path) -> None:
    service = _service(tmp_path, worker_ping_public=True)
    try:
        async with _client(service) as client:
            assert (await client.get("/v1/ping")).status_code == 200
            assert (await client.head("/v1/ping")).status_code == 200
            assert (await client.get("/v1/jobs/x")).status_code == 401
    finally:
        service.stop()


def test_no_token_no_worker(tmp_path: Path) -> None:
    settings = service_settings(tmp_path)
    with pytest.raises(UsageError, match="WORKER_TOKEN"):
        create_worker_app(WorkerService(settings, tmp_path / "w"))
    short = service_settings(tmp_path, worker_token="hunter2")  # a worker listens on 0.0.0.0: a guessable token is refused
    with pytest.raises(UsageError, match="shorter than 16 characters"):
        create_worker_app(WorkerService(short, tmp_path / "w2"))


async def test_admission_is_bounded_and_idempotent(idle_worker: WorkerService) -> None:
    async with _client(idle_worker) as client:
        first = await _post(client, key="job-a")
        assert first.status_code == 201, first.text
        again = await _post(client, key="job-a")
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        second = await _post(client, key="job-b")
        assert second.status_code == 201
        full = await _post(client, key="job-c")
        assert full.status_code == 429 and full.json()["error"]["code"] == "REMOTE_WORKER_CAPACITY"
        assert int(full.headers["retry-after"]) > 0
        # a full worker still answers a known key with its job
        assert (await _post(client, key="job-b")).json()["id"] == second.json()["id"]
        assert (await client.get("/v1/ping", headers=WAUTH)).json()["activeJobs"] == 2
        # 10 concurrent attempts at the place a cancel frees: exactly one gets it
        canceled = await client.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=WAUTH)
        assert canceled.json()["status"] == "canceled" and canceled.json()["errorCode"] == "USER_CANCELED"
        answers = await asyncio.gather(*[_post(client, key=f"race-{i}") for i in range(10)])
        assert sorted(r.status_code for r in answers) == [201] + [429] * 9
    tasks = idle_worker.store.tasks()
    assert len(tasks) == 3 and len({t.key for t in tasks}) == 3
    uploads = [p for p in idle_worker.controller.uploads.root.iterdir() if p.is_dir()]
    assert len(uploads) == 3, "refused and repeated uploads are deleted"


async def test_too_large_is_refused_while_streaming(idle_worker: WorkerService) -> None:
    sent = 0
    chunk = b"\0" * 65536

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        head = b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        yield head
        for _ in range(20 * 16):  # 20 MB against a 1 MB limit
            sent += len(chunk)
            yield chunk
        yield b"\r\n--B--\r\n"

    async with _client(idle_worker) as client:
        resp = await client.post("/v1/jobs", headers={**WAUTH, "Content-Type": "multipart/form-data; boundary=B"},
                                 content=body())
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "FILE_TOO_LARGE"
    assert sent < 4 * 1024 * 1024, f"the worker read {sent} bytes of a body refused at 1 MB"
    assert idle_worker.store.tasks() == []


async def test_bad_options_and_unknown_jobs(idle_worker: WorkerService) -> None:
    async with _client(idle_worker) as client:
        bad = await _post(client, options='{"formats": ["doc"]}')
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_OPTIONS"
        unknown_model = await _post(client, options='{"model": "no-such-model"}')
        assert unknown_model.status_code == 404 and unknown_model.json()["error"]["code"] == "MODEL_NOT_FOUND"
        missing = await client.get("/v1/jobs/nope", headers=WAUTH)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    assert idle_worker.store.tasks() == []
    assert list(idle_worker.controller.uploads.root.iterdir()) == [], "a refused job's media is not kept"


async def test_abandoned_jobs_are_canceled(idle_worker: WorkerService) -> None:
    async with _client(idle_worker) as client:
        job = (await _post(client, key="k")).json()
        assert idle_worker.reap() == []
        idle_worker._asked[job["id"]] -= idle_worker.settings.worker_abandon_s + 1  # nobody asked for that long
        assert idle_worker.reap() == [job["id"]]
        assert (await _wait(client, job["id"]))["status"] == "canceled"


async def test_the_file_of_a_job_that_ended_is_deleted_and_no_other(idle_worker: WorkerService) -> None:
    """A worker kept every uploaded file for good: a night of recordings stayed on the GPU server's disk."""
    uploads = idle_worker.controller.uploads
    arriving = uploads.new_writer("arriving.wav")  # a file still streaming in: no job has it yet
    arriving.write(b"RIFF")
    try:
        async with _client(idle_worker) as client:
            ended, waiting = [(await _post(client, key=key)).json()["id"] for key in ("ends", "waits")]
            ended_upload, waiting_upload = (idle_worker.job(i).spec["upload_id"] for i in (ended, waiting))
            assert idle_worker.sweep_uploads() == []  # both jobs are open
            assert (await client.post(f"/v1/jobs/{ended}/cancel", headers=WAUTH)).json()["status"] == "canceled"
            assert idle_worker.sweep_uploads() == [ended_upload]
            assert {p.name for p in uploads.root.iterdir() if p.is_dir()} == {waiting_upload, arriving.upload_id}
            assert not (uploads.root / f"{ended_upload}.json").exists()
            assert (await client.get(f"/v1/jobs/{ended}", headers=WAUTH)).json()["status"] == "canceled"
            assert (await _post(client, key="ends")).json()["id"] == ended  # its key still finds it
    finally:
        arriving.abort()


async def test_a_job_runs_and_a_restarted_worker_still_knows_it(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service.start()
    try:
        async with _client(service) as client:
            created = await _post(client, name="en02.wav", key="restart-1", options=json.dumps({"formats": ["txt"]}))
            assert created.status_code == 201, created.text
            job = await _wait(client, created.json()["id"])
            assert job["status"] == "complete", job
            assert job["model"] == "tiny.en", "WORKER_MODEL is the model of a job that names none"
            text = (await client.get(job["outputs"]["txt"], headers=WAUTH)).text
            assert wer(TEXTS["en02.wav"], text) < 0.3
            for bad in ("bytes=abc", "bytes=5-2"):  # ignored (the whole file), not a plain-text 400
                ranged = await client.get(job["outputs"]["txt"], headers={**WAUTH, "Range": bad})
                assert ranged.status_code == 200 and ranged.text == text, ranged.text
    finally:
        service.stop()
    again = _service(tmp_path)
    try:
        async with _client(again) as client:
            known = await _post(client, name="en02.wav", key="restart-1")
            assert known.status_code == 200 and known.json()["id"] == job["id"]
            assert (await client.get(job["outputs"]["txt"], headers=WAUTH)).text == text
    finally:
        again.stop()
