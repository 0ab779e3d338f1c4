"""Seed 003's handler through the controller: /api/handler/run, /runsync, /status/{id}.

Media from a loopback HTTP server, S3 from moto's server on loopback checking keys (the controller has no
AWS settings: only the request's keys can publish), and a check that those keys reach no file of the
state folder in clear, no job JSON, event or log line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import srt

pytest.importorskip("yt_dlp")
pytest.importorskip("moto.server")
pytest.importorskip("cryptography")

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


def seed_input(url: str, s3, request_id: str, secret: str | None = None) -> dict:
    return {"input": {"youtube_url": url, "request_id": request_id, "s3_bucket": "subs",
                      "s3_key_prefix": "transcriptions/", "s3_endpoint_url": s3.url,
                      "aws_access_key": s3.access_key, "aws_secret_key": secret or s3.secret_key}}


async def test_the_seeds_job_runs_async_and_sync_and_its_keys_stay_sealed(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    settings = service_settings(tmp_path, url_allowlist=["127.0.0.1"])
    state = tmp_path / "state"
    controller = Controller(settings, state, slots=1, device="cpu")
    controller.start()
    try:
        with MediaServer() as media, moto_s3("subs", check_keys=True) as s3:
            url = media.add("/v/fox.wav", (DATA / "en01.wav").read_bytes(), "audio/wav")
            async with Service(controller, create_app(controller, settings), settings).client() as client:
                made = await client.post("/api/handler/run", headers=AUTH, json=seed_input(url, s3, "req-1"))
                assert made.status_code == 201, made.text
                job_id = made.json()["id"]
                assert made.json()["request_id"] == "req-1" and made.json()["status"] in ("starting", "running")
                assert [p.suffix for p in (state / "sealed").iterdir() if p.name != ".key"] == [".sealed"]
                await wait_job(client, job_id)
                done = (await client.get(f"/api/handler/status/{job_id}", headers=AUTH)).json()
                assert done == {"id": job_id, "status": "done", "request_id": "req-1",
                                "srt_path": "s3://subs/transcriptions/req-1.srt", "srt_key": "transcriptions/req-1.srt",
                                "srt_bucket": "subs"}  # fmt: skip
                body = s3.client.get_object(Bucket="subs", Key="transcriptions/req-1.srt")["Body"].read().decode()
                assert wer(TEXTS["en01.wav"], " ".join(c.content for c in srt.parse(body))) <= 0.3
                assert [p.name for p in (state / "sealed").iterdir()] == [".key"]  # published: the keys are gone

                # runsync waits; wrong keys fail the publish with our code, in the seed's error shape
                wrong = "wrong-secret-" + "z" * 20
                failed = await client.post("/api/handler/runsync", headers=AUTH,
                                           json=seed_input(url, s3, "req-2", secret=wrong))  # fmt: skip
                assert failed.status_code == 201, failed.text
                answer = failed.json()
                assert answer["status"] == "error" and answer["request_id"] == "req-2"
                assert answer["error"].startswith("PUBLISH_FAILED: ") and wrong not in failed.text
                assert [p.name for p in (state / "sealed").iterdir()] == [".key"]  # ended: the keys are gone

                # the keys are nowhere in clear: job JSON, events and logs over the API, any file of the state
                for jid in (job_id, answer["id"]):
                    seen = [(await client.get(f"/api/jobs/{jid}{tail}", headers=AUTH)).text
                            for tail in ("", "/logs", "/logs?format=text")]  # fmt: skip
                    assert not any(s3.secret_key in text or wrong in text for text in seen)
                for path in [*state.rglob("*"), *(tmp_path / "cache").rglob("*")]:
                    if path.is_file():
                        data = path.read_bytes()
                        assert s3.secret_key.encode() not in data and wrong.encode() not in data, path

                # what the seed's contract refuses comes back in its error shape, with the HTTP status
                inside = await client.post("/api/handler/run", headers=AUTH,
                                           json=seed_input(url.replace("127.0.0.1", "localhost"), s3, "req-3"))
                assert inside.status_code == 201  # localhost is 127.0.0.1, which the allowlist names
                other = await client.post("/api/handler/run", headers=AUTH,
                                          json=seed_input(url.replace("127.0.0.1", "127.0.0.2"), s3, "req-4"))
                assert other.status_code == 403 and other.json()["error"].startswith("URL_NOT_ALLOWED: ")
                assert other.json()["request_id"] == "req-4" and other.json()["status"] == "error"
                no_bucket = seed_input(url, s3, "req-5")
                del no_bucket["input"]["s3_bucket"]
                bad = await client.post("/api/handler/run", headers=AUTH, json=no_bucket)
                assert bad.status_code == 400 and bad.json()["error"].startswith("INVALID_OPTIONS: ")
                assert s3.secret_key not in bad.text
                unknown = await client.post("/api/handler/run", headers=AUTH, json={"input": {"x": 1}})
                assert unknown.status_code == 400
                plain = await client.get(f"/api/handler/status/{inside.json()['id']}", headers=AUTH)
                assert plain.json()["request_id"] == "req-3"
                assert (await client.get("/api/handler/status/nope", headers=AUTH)).status_code == 404
                unauth = await client.post("/api/handler/run", json=seed_input(url, s3, "req-6"))
                assert unauth.status_code == 401
    finally:
        controller.stop()
