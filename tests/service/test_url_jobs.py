"""POST /api/jobs {"url"}: a controller fetching media URLs, and refusing its own network unless allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import srt

pytest.importorskip("yt_dlp")

from helpers import TEXTS, wer  # noqa: E402
from media_server import MediaServer  # noqa: E402
from s3_server import moto_s3  # noqa: E402
from scribefleet.service.app import create_app  # noqa: E402
from scribefleet.service.controller import Controller  # noqa: E402
from service.harness import AUTH, DATA, Service, service_settings, wait_job  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_url_job_on_an_allowlisted_loopback_server(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, url_allowlist=["127.0.0.1/32"])
    controller = Controller(settings, tmp_path / "state", slots=1, device="cpu")
    controller.start()
    try:
        with MediaServer() as media:
            url = media.add("/talks/fox.wav", (DATA / "en01.wav").read_bytes(), "audio/wav")
            async with Service(controller, create_app(controller, settings), settings).client() as client:
                made = await client.post("/api/jobs", headers=AUTH, json={"url": url, "options": {"formats": "srt"}})
                assert made.status_code == 201, made.text
                assert made.json()["filename"] == "fox.wav"
                done = await wait_job(client, made.json()["id"])
                assert done["status"] == "complete", done
                cues = list(srt.parse((await client.get(done["outputs"]["srt"], headers=AUTH)).text))
                assert wer(TEXTS["en01.wav"], " ".join(c.content for c in cues)) <= 0.3
                # an address the allowlist does not name (127.0.0.2 is loopback too) is refused before any request
                media.requests.clear()
                refused = await client.post("/api/jobs", headers=AUTH, json={"url": url.replace("127.0.0.1", "127.0.0.2")})
                assert refused.status_code == 403 and refused.json()["error"]["code"] == "URL_NOT_ALLOWED"
                assert media.requests == []
                gone = await client.post("/api/jobs", headers=AUTH, json={"url": media.url + "/gone.wav"})
                failed = await wait_job(client, gone.json()["id"])
                assert failed["status"] == "failed" and failed["lastErrorCode"] == "DOWNLOAD_FAILED"
                # a playlist (a page with two media) is one job per entry, in one batch
                media.add("/talks/two.wav", (DATA / "en02.wav").read_bytes(), "audio/wav")
                page = media.add("/talks.html", b'<html><head><title>Talks</title></head><body><audio src="/talks/fox.wav">'
                                 b'</audio><audio src="/talks/two.wav"></audio></body></html>', "text/html")
                both = await client.post("/api/jobs", headers=AUTH, json={"url": page, "options": {"formats": "txt"}})
                assert both.status_code == 201, both.text
                jobs = both.json()["jobs"]
                assert len(jobs) == 2 and both.json()["id"] == jobs[0]["id"] and len({j["batchId"] for j in jobs}) == 1
                texts = []
                for job in jobs:
                    done = await wait_job(client, job["id"])
                    assert done["status"] == "complete", done
                    texts.append((await client.get(done["outputs"]["txt"], headers=AUTH)).text)
                assert wer(TEXTS["en01.wav"], texts[0]) <= 0.3 and wer(TEXTS["en02.wav"], texts[1]) <= 0.3
    finally:
        controller.stop()


async def test_a_job_publishes_to_s3_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("moto.server")
    from service.harness import upload

    # the controller's own AWS settings (its slots inherit them); requests never carry keys
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    settings = service_settings(tmp_path, url_allowlist=["127.0.0.1"])  # moto listens on loopback
    controller = Controller(settings, tmp_path / "state", slots=1, device="cpu")
    controller.start()
    try:
        with moto_s3("api-out") as s3:
            async with Service(controller, create_app(controller, settings), settings).client() as client:
                up = await upload(client, DATA / "en03.wav", "meeting.wav")
                body = {"uploadId": up["uploadId"], "options": {"formats": "srt"},
                        "publish": {"target": "s3://api-out/jobs/", "endpoint_url": s3.url, "region": "us-east-1"}}
                made = await client.post("/api/jobs", headers=AUTH, json=body)
                assert made.status_code == 201, made.text
                done = await wait_job(client, made.json()["id"])
                assert done["status"] == "complete", done
                assert controller.store.task(done["id"]).result["published"] == {"srt": "s3://api-out/jobs/meeting.srt"}
                text = s3.client.get_object(Bucket="api-out", Key="jobs/meeting.srt")["Body"].read().decode()
                assert wer(TEXTS["en03.wav"], " ".join(c.content for c in srt.parse(text))) <= 0.35
                bad = await client.post("/api/jobs", headers=AUTH, json={**body, "publish": {"target": "https://x/"}})
                assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_OPTIONS"
                # an S3 endpoint on the controller's own network, not on the allowlist, is refused
                inside = {**body, "publish": {**body["publish"], "endpoint_url": "http://169.254.169.254/"}}
                refused = await client.post("/api/jobs", headers=AUTH, json=inside)
                assert refused.status_code == 403 and refused.json()["error"]["code"] == "URL_NOT_ALLOWED"
    finally:
        controller.stop()


#: URLs that do not parse: each made the controller answer 500 (urllib's bare ValueError in the URL guard), or
#: made a job that failed INTERNAL_ERROR three times in a slot (requests refusing a space in the host)
MALFORMED_URLS = ["http://[::1/x.wav", "https://example.com:99999/x.wav", "https://exa mple.com/x.wav",
                  "https://example.com/a\nb.wav"]


async def test_a_malformed_url_is_refused_before_any_job(idle: Service) -> None:
    async with idle.client() as client:
        for url in MALFORMED_URLS:
            refused = await client.post("/api/jobs", headers=AUTH, json={"url": url})
            assert refused.status_code == 422, (url, refused.text)
            assert refused.json()["error"]["code"] == "URL_UNSUPPORTED" and "well-formed" in refused.json()["error"]["message"]
            seed = {"input": {"youtube_url": url, "request_id": "r1", "s3_bucket": "transcripts"}}
            refused = await client.post("/api/handler/run", headers=AUTH, json=seed)
            assert refused.status_code == 400 and refused.json()["error"].startswith("INVALID_OPTIONS: "), refused.text
        for endpoint in ("http://[::1", "http://minio:0x50"):  # S3 endpoints that do not parse: 400 too, not 500
            seed = {"input": {"youtube_url": "https://example.com/a.wav", "request_id": "r1", "s3_bucket": "b",
                              "s3_endpoint_url": endpoint}}
            refused = await client.post("/api/handler/run", headers=AUTH, json=seed)
            assert refused.status_code == 400 and refused.json()["error"].startswith("INVALID_OPTIONS: "), refused.text
            publish = {"target": "s3://b/p/", "endpoint_url": endpoint}
            refused = await client.post("/api/jobs", headers=AUTH, json={"url": "https://example.com/a.wav",
                                                                      "publish": publish})
            assert refused.status_code == 400 and refused.json()["error"]["code"] == "INVALID_OPTIONS", refused.text
        # a bucket name botocore refuses only at the upload, after the whole transcription, is refused now
        seed = {"input": {"youtube_url": "https://example.com/a.wav", "request_id": "r1", "s3_bucket": "bad bucket!"}}
        refused = await client.post("/api/handler/run", headers=AUTH, json=seed)
        assert refused.status_code == 400 and "bucket name" in refused.json()["error"], refused.text
        assert (await client.get("/api/jobs", headers=AUTH)).json()["total"] == 0
