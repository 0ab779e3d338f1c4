"""GET /api/jobs/{id}/media: the job's own upload with Range support, the same credentials, nothing else served."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scribefleet.service.app import create_app
from scribefleet.service.controller import Controller
from service.harness import AUTH, DATA, Service, service_settings, upload, wait_job

pytestmark = pytest.mark.anyio


@pytest.fixture
def queued(tmp_path: Path) -> Iterator[Service]:
    """A controller whose dispatcher is not running: jobs stay queued, their media is served all the same."""
    settings = service_settings(tmp_path, url_allowlist=["127.0.0.1/32"])
    controller = Controller(settings, tmp_path / "state", slots=1, device="cpu")
    yield Service(controller, create_app(controller, settings), settings)
    controller.stop()


async def _job(client: httpx.AsyncClient, path: Path, name: str | None = None) -> tuple[str, dict]:
    up = await upload(client, path, name)
    resp = await client.post("/api/jobs", headers=AUTH, json={"uploadId": up["uploadId"]})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"], up


async def test_the_upload_is_served_whole_and_by_ranges(queued: Service) -> None:
    data = (DATA / "dialogue.flac").read_bytes()
    async with queued.client() as client:
        job_id, _ = await _job(client, DATA / "dialogue.flac")
        whole = await client.get(f"/api/jobs/{job_id}/media", headers=AUTH)
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["content-type"] == "audio/flac" and whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["x-content-type-options"] == "nosniff" and "sandbox" in whole.headers["content-security-policy"]
        part = await client.get(f"/api/jobs/{job_id}/media", headers={**AUTH, "Range": "bytes=100-1099"})
        assert part.status_code == 206 and part.content == data[100:1100]
        assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
        tail = await client.get(f"/api/jobs/{job_id}/media", headers={**AUTH, "Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == data[-10:]
        past = await client.get(f"/api/jobs/{job_id}/media", headers={**AUTH, "Range": f"bytes={len(data) + 5}-"})
        assert past.status_code == 416


async def test_the_media_needs_the_same_credentials_as_the_job(queued: Service) -> None:
    async with queued.client() as client:
        job_id, _ = await _job(client, DATA / "en01.wav")
        assert (await client.get(f"/api/jobs/{job_id}/media")).status_code == 401
        wrong = {"Authorization": "Bearer not-the-token-0123456789"}
        assert (await client.get(f"/api/jobs/{job_id}/media", headers=wrong)).status_code == 401
        # a browser session (cookie) plays it like the page it shows
        login = await client.post("/api/session", json={"token": AUTH["Authorization"].split()[1]})
        assert login.status_code == 200
        assert (await client.get(f"/api/jobs/{job_id}/media", headers={"Range": "bytes=0-0"})).status_code == 206


async def test_an_uploaded_page_is_never_served_as_a_page(queued: Service, tmp_path: Path) -> None:
    page = tmp_path / "x.html"
    page.write_text("<script>document.title = 'pwned'</script>")
    async with queued.client() as client:
        job_id, _ = await _job(client, page)
        resp = await client.get(f"/api/jobs/{job_id}/media", headers=AUTH)
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/octet-stream"
        assert resp.headers["x-content-type-options"] == "nosniff"


async def test_nothing_outside_the_jobs_upload_is_served(queued: Service, tmp_path: Path) -> None:
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"RIFF not yours")
    async with queued.client() as client:
        job_id, up = await _job(client, DATA / "en01.wav", "talk.wav")
        stored = queued.controller.uploads.get(up["uploadId"]).path
        # the spec's own input path is never what is served: pointed elsewhere, the upload is still what plays
        task = queued.controller.store.task(job_id)
        queued.controller.store.revise_task(job_id, {**task.spec, "input_path": str(secret)}, content_key=task.content_key)
        served = await client.get(f"/api/jobs/{job_id}/media", headers=AUTH)
        assert served.status_code == 200 and served.content == (DATA / "en01.wav").read_bytes()
        # a link planted where the upload was: its target is outside the upload folder
        stored.unlink()
        os.symlink(secret, stored)
        resp = await client.get(f"/api/jobs/{job_id}/media", headers=AUTH)
        assert resp.status_code == 404 and b"not yours" not in resp.content
        assert resp.json()["error"]["code"] == "NOT_FOUND"
        stored.unlink()  # the upload is gone
        gone = await client.get(f"/api/jobs/{job_id}/media", headers=AUTH)
        assert gone.status_code == 404 and "upload" in gone.json()["error"]["message"]
        for bad in ("..%2F..%2Fetc%2Fpasswd", "nope", "%2E%2E"):
            assert (await client.get(f"/api/jobs/{bad}/media", headers=AUTH)).status_code == 404


async def test_a_url_job_keeps_no_media_and_says_so(queued: Service) -> None:
    async with queued.client() as client:
        resp = await client.post("/api/jobs", headers=AUTH, json={"url": "http://127.0.0.1:9/talk.wav"})
        assert resp.status_code == 201, resp.text
        media = await client.get(f"/api/jobs/{resp.json()['id']}/media", headers=AUTH)
    assert media.status_code == 404
    err = media.json()["error"]
    assert err["code"] == "NOT_FOUND" and "download is deleted" in err["message"]
    assert err["details"]["reason"] == "url_job"


async def test_a_malformed_range_is_ignored_not_a_plain_text_400(live: str) -> None:
    data = (DATA / "en01.wav").read_bytes()
    async with httpx.AsyncClient(base_url=live, timeout=60) as client:
        job_id, _ = await _job(client, DATA / "en01.wav", "ranges.wav")
        job = await wait_job(client, job_id)
        srt_bytes = (await client.get(job["outputs"]["srt"], headers=AUTH)).content
        for bad in ("bytes=abc", "bytes=5-2", "items=0-5", "bytes", "bytes=-"):
            # RFC 9110 14.2: a Range the server cannot use is ignored; Starlette answered 400 in plain text
            media = await client.get(f"/api/jobs/{job_id}/media", headers={**AUTH, "Range": bad})
            assert media.status_code == 200 and media.content == data, (bad, media.status_code, media.text[:100])
            output = await client.get(job["outputs"]["srt"], headers={**AUTH, "Range": bad})
            assert output.status_code == 200 and output.content == srt_bytes, (bad, output.text[:100])
        part = await client.get(f"/api/jobs/{job_id}/media", headers={**AUTH, "Range": "bytes=0-3"})
        assert part.status_code == 206 and part.content == b"RIFF"
