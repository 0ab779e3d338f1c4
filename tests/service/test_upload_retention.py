"""A controller deletes uploads no job needs any more: SCRIBEFLEET_UPLOAD_RETENTION_HOURS after their jobs end.

Kept for good, a night of 48 two-hour WAVs left ~11 GB on the controller's disk, and every night more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx
import pytest

from scribefleet.service.app import create_app
from scribefleet.service.controller import Controller
from service.harness import AUTH, DATA, TOKEN, Service, service_settings, upload, wait_job

pytestmark = pytest.mark.anyio
HOUR = 3600.0


async def _canceled_job(client: httpx.AsyncClient, upload_id: str) -> dict:
    """A job of this upload, ended at once: canceled while queued (an idle controller runs nothing)."""
    job = (await client.post("/api/jobs", headers=AUTH, json={"uploadId": upload_id})).json()
    canceled = await client.post(f"/api/jobs/{job['id']}/cancel", headers=AUTH)
    assert canceled.json()["status"] == "canceled", canceled.text
    return canceled.json()


async def test_an_upload_goes_a_retention_after_its_last_job_ended_and_zero_keeps_it(tmp_path: Path) -> None:
    for hours in (168.0, 0.0):
        settings = service_settings(tmp_path / str(hours), upload_retention_hours=hours)
        controller = Controller(settings, tmp_path / str(hours) / "state", slots=1, device="cpu")
        try:
            async with Service(controller, create_app(controller, settings), settings).client() as client:
                used = (await upload(client, DATA / "en01.wav"))["uploadId"]
                reused = (await upload(client, DATA / "en02.wav"))["uploadId"]
                first = await _canceled_job(client, used)
                await _canceled_job(client, reused)
                await asyncio.sleep(0.05)
                late = await _canceled_job(client, reused)  # the same upload used again, later
                ended = [controller.store.task(j["id"]).finished_at for j in (first, late)]  # type: ignore[union-attr]
                if hours == 0:  # kept for good, however old
                    assert controller.sweep_uploads(now=ended[1] + 10 * 365 * 24 * HOUR) == []
                    assert set(controller.uploads.ids()) == {used, reused}
                    continue
                assert controller.sweep_uploads(now=ended[0] + 167 * HOUR) == []
                # a week after its job ended; the one used again a week after its *last* job ended
                assert controller.sweep_uploads(now=ended[0] + 168 * HOUR) == [used]
                assert controller.sweep_uploads(now=ended[1] + 168 * HOUR) == [reused]
                assert controller.uploads.ids() == []
                gone = await client.post("/api/jobs", headers=AUTH, json={"uploadId": reused})
                assert gone.status_code == 404 and gone.json()["error"]["code"] == "NOT_FOUND", gone.text
        finally:
            controller.stop()


async def test_a_running_controller_deletes_ended_jobs_uploads_and_keeps_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scribefleet")
    # 1.8 s of retention: the controller's timer looks every second
    settings = service_settings(tmp_path, upload_retention_hours=0.0005)
    controller = Controller(settings, tmp_path / "state", slots=1, device="cpu")
    controller.start()
    try:
        async with Service(controller, create_app(controller, settings), settings).client() as client:
            long, short, orphan = [(await upload(client, DATA / n))["uploadId"] for n in
                                   ("long_pauses.wav", "en01.wav", "en02.wav")]  # fmt: skip
            options = {"formats": ["txt", "json"]}  # json: the job page's player follows its timed lines
            jobs = [(await client.post("/api/jobs", headers=AUTH, json={"uploadId": u, "options": options})).json()
                    for u in (long, short)]  # fmt: skip
            # while their jobs run or wait, their files stay however late it is; an upload no job was
            # made from goes after the retention or an hour, whichever is longer
            assert controller.sweep_uploads(now=time.time() + 30 * 60) == []
            assert controller.sweep_uploads(now=time.time() + 2 * HOUR) == [orphan]
            assert [j["status"] for j in jobs] != ["complete", "complete"]
            assert set(controller.uploads.ids()) == {long, short}
            done = [await wait_job(client, j["id"]) for j in jobs]
            assert [d["status"] for d in done] == ["complete", "complete"], done
            fresh = (await upload(client, DATA / "en03.wav"))["uploadId"]  # a new upload outlives the timer
            deadline = time.monotonic() + 60
            while set(controller.uploads.ids()) != {fresh}:
                assert time.monotonic() < deadline, controller.uploads.ids()
                await asyncio.sleep(0.2)
            # the job's outputs stay; its media says why it is gone, on the API and the UI's page
            assert (await client.get(done[1]["outputs"]["txt"], headers=AUTH)).status_code == 200
            media = await client.get(f"/api/jobs/{done[1]['id']}/media", headers=AUTH)
            assert media.status_code == 404 and media.json()["error"]["details"]["reason"] == "deleted", media.text
            assert "SCRIBEFLEET_UPLOAD_RETENTION_HOURS" in media.json()["error"]["message"]
            await client.post("/api/session", json={"token": TOKEN})
            page = await client.get(f"/ui/jobs/{done[1]['id']}")
            assert "Nothing to play: the uploaded media of job" in page.text, page.text[-2000:]
        assert f"upload {short} deleted: its job(s) {done[1]['id']} ended" in caplog.text, caplog.text[-3000:]
    finally:
        controller.stop()
