"""A diarization that cannot run fails its job with the stage's own code, through the controller's API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scribefleet.service.app import create_app
from scribefleet.service.controller import Controller
from service.harness import AUTH, DATA, Service, service_settings, upload, wait_job

pytestmark = pytest.mark.anyio


def _service(base: Path, **settings: object) -> Iterator[Service]:
    config = service_settings(base, **settings)
    controller = Controller(config, base / "state", slots=1, device="cpu")
    controller.start()
    yield Service(controller, create_app(controller, config), config)
    controller.stop()


@pytest.fixture
def pyannote_without_model(tmp_path: Path) -> Iterator[Service]:
    yield from _service(tmp_path, diarization_backend="pyannote")


@pytest.fixture
def tiny_diarize_limit(tmp_path: Path) -> Iterator[Service]:
    pytest.importorskip("resemblyzer", reason="the diarization extra is not installed")
    yield from _service(tmp_path, diarize_timeout_s=0.001)


async def _diarized_job(service: Service) -> dict:
    async with service.client() as client:
        up = await upload(client, DATA / "en01.wav")
        resp = await client.post("/api/jobs", headers=AUTH, json={"uploadId": up["uploadId"], "options": {"diarize": True}})
        assert resp.status_code == 201, resp.text
        job = await wait_job(client, resp.json()["id"])
        job["history"] = (await client.get(f"/api/jobs/{job['id']}", headers=AUTH)).json().get("stages") or []
        return job


async def test_a_missing_pyannote_model_names_the_setting_and_the_token(pyannote_without_model: Service) -> None:
    job = await _diarized_job(pyannote_without_model)
    assert job["status"] == "failed" and job["lastErrorCode"] == "DIARIZATION_MODEL_MISSING"
    message = job["lastErrorMessage"]
    assert "SCRIBEFLEET_DIARIZATION_MODEL" in message and "SCRIBEFLEET_HF_TOKEN" in message
    stages = {s["stage"]: s["state"] for s in job["history"]}
    assert stages["transcribe"] == "done" and stages["diarize"] != "done", stages


async def test_a_diarization_past_its_own_limit_fails_with_its_code(tiny_diarize_limit: Service) -> None:
    job = await _diarized_job(tiny_diarize_limit)
    assert job["status"] == "failed" and job["lastErrorCode"] == "DIARIZATION_FAILED"
    assert "SCRIBEFLEET_DIARIZE_TIMEOUT_S" in job["lastErrorMessage"]
