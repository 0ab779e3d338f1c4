"""The /api routes through httpx's ASGITransport, on a real controller with one CPU slot and tiny.en."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import srt

from helpers import TEXTS, wer
from scribefleet.cli.render import job_line
from scribefleet.jobs.views import TaskView
from scribefleet.service.app import create_app
from scribefleet.service.controller import Controller
from service.harness import AUTH, DATA, Service, service_settings, upload, wait_job

pytestmark = pytest.mark.anyio

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
JOB_KEYS = {
    "id", "batchId", "status", "executionMode", "filename", "progress", "worker", "lastErrorCode",
    "lastErrorMessage", "outputs", "options", "createdAt", "updatedAt",
}  # fmt: skip


async def test_a_job_from_upload_to_subtitles(running: Service, running_client: httpx.AsyncClient) -> None:
    client = running_client
    up = await upload(client, DATA / "en02.wav", "talk one.wav")
    made = await client.post("/api/jobs", headers=AUTH, json={"uploadId": up["uploadId"], "options": {"formats": "srt,json"}})
    assert made.status_code == 201, made.text
    job = made.json()
    assert JOB_KEYS <= set(job) and job["status"] in ("queued", "running") and job["executionMode"] == "local"
    assert job["filename"] == "talk one.wav" and job["options"]["formats"] == ["srt", "json"] and job["outputs"] == {}
    done = await wait_job(client, job["id"])
    assert done["status"] == "complete", done
    progress = done["progress"]
    assert (progress["stage"], progress["percent"], progress["stagePercent"], progress["etaS"]) == ("publish", 100.0, 100.0, 0)
    assert isinstance(progress["elapsedS"], int) and progress["elapsedS"] >= 0
    assert done["worker"]["slot"] == "cpu0" and done["worker"]["gpu"] is False and ISO.match(done["worker"]["lastSeenAt"])
    assert all(ISO.match(done[k]) for k in ("createdAt", "updatedAt", "startedAt", "finishedAt"))
    assert done["lastErrorCode"] is None and done["attempts"] == 1 and done["language"] == "en"
    assert done["outputs"] == {f: f"/api/jobs/{job['id']}/outputs/{f}" for f in ("srt", "json")}
    got = await client.get(done["outputs"]["srt"], headers=AUTH)
    assert got.status_code == 200 and got.headers["content-type"].startswith("application/x-subrip")
    assert got.headers["content-disposition"] == "attachment; filename*=utf-8''talk%20one.srt"
    cues = list(srt.parse(got.text))
    assert cues and wer(TEXTS["en02.wav"], " ".join(c.content for c in cues)) < 0.35
    transcript = (await client.get(done["outputs"]["json"], headers=AUTH)).json()
    assert transcript["segments"] and transcript["language"] == "en"
    missing = await client.get(f"/api/jobs/{job['id']}/outputs/vtt", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"


async def test_bad_media_fails_alone_with_its_code(running_client: httpx.AsyncClient) -> None:
    client = running_client
    resp = await client.post("/api/uploads", headers=AUTH, files={"file": ("notes.mp3", b"this is not audio" * 100)})
    made = await client.post("/api/jobs", headers=AUTH, json={"uploadId": resp.json()["uploadId"]})
    job = await wait_job(client, made.json()["id"])
    assert job["status"] == "failed" and job["lastErrorCode"] == "MEDIA_UNREADABLE" and job["lastErrorMessage"]
    # the upload is named by its name, never by where it lies on the server
    assert "notes.mp3" in job["lastErrorMessage"] and "/uploads/" not in job["lastErrorMessage"], job
    runtime = (await client.get("/api/runtime", headers=AUTH)).json()
    assert any(e.get("jobId") == job["id"] for e in runtime["recentErrors"]) and "/uploads/" not in json.dumps(runtime)
    early = await client.get(f"/api/jobs/{job['id']}/outputs/srt", headers=AUTH)
    assert early.status_code == 409 and early.json()["error"]["code"] == "JOB_NOT_COMPLETE"
    runtime = (await client.get("/api/runtime", headers=AUTH)).json()
    assert any(e.get("jobId") == job["id"] and e["code"] == "MEDIA_UNREADABLE" for e in runtime["recentErrors"])


async def test_job_requests_that_are_refused(running_client: httpx.AsyncClient) -> None:
    client = running_client
    up = await upload(client, DATA / "en01.wav")
    cases = [
        ({"url": "http://127.0.0.1:9/a.mp3"}, 403, "URL_NOT_ALLOWED"),
        ({"url": "http://169.254.169.254/latest/meta-data/"}, 403, "URL_NOT_ALLOWED"),
        ({"url": "file:///etc/passwd"}, 422, "URL_UNSUPPORTED"),
        ({"uploadId": up["uploadId"], "url": "https://example.org/a.mp3"}, 400, "INVALID_OPTIONS"),
        ({}, 400, "INVALID_OPTIONS"),
        ({"uploadId": "0123456789abcdef"}, 404, "NOT_FOUND"),
        ({"uploadId": "../../etc"}, 404, "NOT_FOUND"),
        ({"uploadId": up["uploadId"], "batchId": "nosuchbatch"}, 404, "NOT_FOUND"),
        ({"uploadId": up["uploadId"], "options": {"formats": "docx"}}, 400, "INVALID_OPTIONS"),
        ({"uploadId": up["uploadId"], "options": {"beam_size": 0}}, 400, "INVALID_OPTIONS"),
        ({"uploadId": up["uploadId"], "options": {"speakers": 2}}, 400, "INVALID_OPTIONS"),  # speakers without diarize
        # a folder of the server as enrollment clips: not an API client's to name
        ({"uploadId": up["uploadId"], "options": {"diarize": True, "speaker_names": "/etc"}}, 400, "INVALID_OPTIONS"),
        ({"uploadId": up["uploadId"], "options": {"language": "xx"}}, 400, "INVALID_OPTIONS"),
        ({"uploadId": up["uploadId"], "options": {"model": "no-such-model"}}, 404, "MODEL_NOT_FOUND"),
        ({"uploadId": up["uploadId"], "options": {"device": "cuda"}}, 400, "INVALID_OPTIONS"),
        ({"uploadId": up["uploadId"], "extra": 1}, 400, "INVALID_OPTIONS"),
    ]
    for body, status, code in cases:
        resp = await client.post("/api/jobs", headers=AUTH, json=body)
        assert (resp.status_code, resp.json()["error"]["code"]) == (status, code), body
        assert resp.json()["error"]["message"]
    garbage = await client.post("/api/jobs", headers={**AUTH, "Content-Type": "application/json"}, content=b"{nope")
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "INVALID_OPTIONS"
    assert (await client.get("/api/jobs/nosuchjob", headers=AUTH)).json()["error"]["code"] == "NOT_FOUND"


async def test_batches_listing_paging_and_logs(running_client: httpx.AsyncClient) -> None:
    client = running_client
    batch = (await client.post("/api/batches", headers=AUTH, json={"name": "week 12"})).json()
    assert batch["name"] == "week 12" and ISO.match(batch["createdAt"])
    ids = []
    for name in ("en03.wav", "en04.wav"):
        up = await upload(client, DATA / name)
        body = {"uploadId": up["uploadId"], "batchId": batch["id"], "options": {"formats": ["txt"]}}
        ids.append((await client.post("/api/jobs", headers=AUTH, json=body)).json()["id"])
    for job_id in ids:
        assert (await wait_job(client, job_id))["status"] == "complete"
    got = (await client.get(f"/api/batches/{batch['id']}", headers=AUTH)).json()
    assert got["counts"]["complete"] == 2 and sum(got["counts"].values()) == 2
    assert {j["id"] for j in got["jobs"]} == set(ids)
    page = (await client.get("/api/jobs", headers=AUTH, params={"batchId": batch["id"], "limit": 1})).json()
    assert page["total"] == 2 and page["limit"] == 1 and page["offset"] == 0 and [j["id"] for j in page["items"]] == [ids[1]]
    page2 = (await client.get("/api/jobs", headers=AUTH, params={"batchId": batch["id"], "limit": 1, "offset": 1})).json()
    assert [j["id"] for j in page2["items"]] == [ids[0]]
    by_state = (await client.get("/api/jobs", headers=AUTH, params={"status": "failed,canceled", "batchId": batch["id"]})).json()
    assert by_state["total"] == 0
    bad = await client.get("/api/jobs", headers=AUTH, params={"status": "done"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_OPTIONS"
    listed = (await client.get("/api/batches", headers=AUTH)).json()
    assert batch["id"] in [b["id"] for b in listed["items"]]
    lines = (await client.get(f"/api/jobs/{ids[0]}/logs", headers=AUTH)).text.splitlines()
    entries = [json.loads(line) for line in lines]
    types = [e.get("type") for e in entries if e["source"] == "event"]
    assert types[0] == "task_added" and "dispatched" in types and types[-1] == "completed"
    assert any(e["source"] == "log" and ids[0] in e["line"] for e in entries), "the slot's log lines about it"
    text = (await client.get(f"/api/jobs/{ids[0]}/logs", headers=AUTH, params={"format": "text"})).text
    assert "EVENT   completed" in text


async def test_runtime_and_metrics(running: Service, running_client: httpx.AsyncClient) -> None:
    runtime = (await running_client.get("/api/runtime", headers=AUTH)).json()
    assert set(runtime) >= {"slots", "devices", "capacity", "queue", "recentErrors", "remoteWorker"}
    assert runtime["remoteWorker"] is None and runtime["dispatcher"] == {"running": True}
    [slot] = runtime["slots"]
    assert slot["name"] == "cpu0" and slot["device"] == "cpu" and slot["gpuIndex"] is None
    assert isinstance(slot["busy"], bool) and "models" in slot and "task" in slot
    assert "gpuMemoryMb" in slot and slot["gpuMemoryMb"] is None  # a CPU slot holds no GPU memory
    assert runtime["capacity"]["slots"] == 1 and runtime["capacity"]["busy"] + runtime["capacity"]["free"] == 1
    assert set(runtime["queue"]) == {"queued", "running", "byKind"}
    assert runtime["devices"]["cpu_cores"] >= 1
    text = (await running_client.get("/metrics", headers=AUTH)).text
    for name in ("scribefleet_jobs{status=\"complete\"}", "scribefleet_slots 1.0", "scribefleet_slots_busy",
                 "scribefleet_queue_length", "scribefleet_job_duration_seconds_bucket"):  # fmt: skip
        assert name in text, name
    health = await running_client.get("/health")
    assert health.json()["status"] == "ok" and health.json()["version"]


async def test_cancel_a_queued_job_at_once(idle: Service) -> None:
    async with idle.client() as client:
        up = await upload(client, DATA / "en01.wav")
        job = (await client.post("/api/jobs", headers=AUTH, json={"uploadId": up["uploadId"]})).json()
        assert job["status"] == "queued"
        canceled = await client.post(f"/api/jobs/{job['id']}/cancel", headers=AUTH)
        assert canceled.status_code == 200
        assert canceled.json()["status"] == "canceled" and canceled.json()["lastErrorCode"] == "USER_CANCELED"
        again = await client.post(f"/api/jobs/{job['id']}/cancel", headers=AUTH)
        assert again.json()["status"] == "canceled"


async def test_cancel_a_running_job(running_client: httpx.AsyncClient) -> None:
    client = running_client
    up = await upload(client, DATA / "long_pauses.wav")
    body = {"uploadId": up["uploadId"], "options": {"batch_size": 1, "beam_size": 5, "formats": ["vtt"]}}
    job = (await client.post("/api/jobs", headers=AUTH, json=body)).json()
    await wait_job(client, job["id"], until=lambda j: j["status"] == "running")
    resp = await client.post(f"/api/jobs/{job['id']}/cancel", headers=AUTH)
    assert resp.json()["status"] == "canceled" and resp.json()["lastErrorCode"] == "USER_CANCELED"
    batch = (await client.post("/api/batches", headers=AUTH, json={})).json()
    queued = (await client.post("/api/jobs", headers=AUTH, json={**body, "batchId": batch["id"]})).json()
    after = (await client.post(f"/api/batches/{batch['id']}/cancel", headers=AUTH)).json()
    assert after["counts"]["canceled"] == 1 and after["jobs"][0]["id"] == queued["id"]


async def test_a_queued_job_says_why_it_is_not_running(live: str) -> None:
    async with httpx.AsyncClient(base_url=live, timeout=60) as client:
        long = await upload(client, DATA / "long_pauses.wav", name="hog.wav")
        body = {"uploadId": long["uploadId"], "options": {"batch_size": 1, "beam_size": 4, "formats": ["txt"]}}
        hog = (await client.post("/api/jobs", headers=AUTH, json=body)).json()
        await wait_job(client, hog["id"], until=lambda j: j["status"] == "running")
        up = await upload(client, DATA / "en01.wav")
        waiting = (await client.post("/api/jobs", headers=AUTH, json={"uploadId": up["uploadId"]})).json()
        # the one slot is busy with the hog: the job says so (the reason is worked out at most twice a second),
        # and `scribefleet status --controller` shows it
        busy = lambda j: (j["message"] or "").startswith("Waiting for a free")  # noqa: E731
        job = await wait_job(client, waiting["id"], until=busy, timeout_s=10)
        assert job["status"] == "queued" and job["message"] == "Waiting for a free slot: 1 of 1 busy, 1 job(s) queued"
        assert "queued - Waiting for a free slot: 1 of 1 busy" in job_line(TaskView.from_api(job))
        await client.post(f"/api/jobs/{hog['id']}/cancel", headers=AUTH)
        done = await wait_job(client, waiting["id"])
    assert done["status"] == "complete" and done["message"] is None
    assert "Waiting" not in job_line(TaskView.from_api(done))


@pytest.mark.gpu
async def test_a_job_on_a_gpu_slot_says_so(tmp_path: Path) -> None:
    ctranslate2 = pytest.importorskip("ctranslate2")
    if ctranslate2.get_cuda_device_count() == 0:
        pytest.skip("no CUDA GPU on this machine")
    settings = service_settings(tmp_path)
    controller = Controller(settings, tmp_path / "state", slots=1, device="cuda")
    controller.start()
    try:
        async with Service(controller, create_app(controller, settings), settings).client() as client:
            up = await upload(client, DATA / "en01.wav")
            body = {"uploadId": up["uploadId"], "options": {"device": "cuda", "formats": "txt"}}
            job = await wait_job(client, (await client.post("/api/jobs", headers=AUTH, json=body)).json()["id"])
            runtime = (await client.get("/api/runtime", headers=AUTH)).json()
        assert job["status"] == "complete" and job["worker"] == {**job["worker"], "slot": "gpu0", "gpu": True}
        assert runtime["slots"][0]["device"] == "cuda" and runtime["slots"][0]["gpuIndex"] is not None
    finally:
        controller.stop()
