"""`scribefleet serve` as a process: refusals at start, and kill -9 mid-batch with nothing lost."""

from __future__ import annotations

import os
import signal
import time
import wave
from pathlib import Path

import httpx
import pytest

from scribefleet.store.models import TaskState
from scribefleet.store.store import Store
from service.harness import AUTH, DATA, TOKEN, WAIT_S, ServeProcess, serve_env

pytestmark = pytest.mark.slow

INPUTS = ("en10.wav", "long_pauses.wav", "en11.wav", "en12.wav", "en03.wav")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _poll(client: httpx.Client, url: str, until: object, timeout_s: float = WAIT_S) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(url).json()
        if until(body):  # type: ignore[operator]
            return body
        assert time.monotonic() < deadline, f"never got there: {body}"
        time.sleep(0.1)


def test_refuses_to_start_without_a_safe_auth_setup(tmp_path: Path) -> None:
    no_tokens = serve_env(tmp_path)
    del no_tokens["SCRIBEFLEET_API_TOKENS"]
    first = ServeProcess(tmp_path / "a", no_tokens).start()
    assert first.wait_exit() == 2 and "no API token" in first.output()
    open_wide = ServeProcess(tmp_path / "b", {**no_tokens, "SCRIBEFLEET_AUTH_DISABLED": "true"}, ["--host", "0.0.0.0"])
    assert open_wide.start().wait_exit() == 2 and "loopback" in open_wide.output()
    assert not (tmp_path / "b" / "store.sqlite").exists(), "nothing started"
    short = ServeProcess(tmp_path / "c", {**no_tokens, "SCRIBEFLEET_API_TOKENS": "guessable-15chr"}).start()
    assert short.wait_exit() == 2 and "shorter than 16" in short.output() and "guessable" not in short.output()


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_files_are_private_and_slots_hold_no_secret(tmp_path: Path) -> None:
    secrets = {"SCRIBEFLEET_TOKEN": "cli-secret-0123456789", "SCRIBEFLEET_LLM_API_KEY": "llm-secret-0123456789"}
    state = tmp_path / "state"
    server = ServeProcess(state, serve_env(tmp_path, **secrets)).start()
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
            with (DATA / "en02.wav").open("rb") as fh:
                up = client.post("/api/uploads", files={"file": ("talk.wav", fh)}).json()
            job = client.post("/api/jobs", json={"uploadId": up["uploadId"], "options": {"formats": ["srt"]}}).json()
            done = _poll(client, f"/api/jobs/{job['id']}", lambda j: j["status"] in ("complete", "failed"))
        assert done["status"] == "complete", done
        pids = server.slot_pids()
        assert pids
        for pid in pids:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert b"SCRIBEFLEET_API_TOKENS" not in environ and b"SCRIBEFLEET_TOKEN=" not in environ
            for secret in (TOKEN, *secrets.values()):
                assert secret.encode() not in environ
        upload_dir = state / "uploads" / up["uploadId"]
        outputs = list((state / "jobs").rglob("*.srt"))
        assert outputs
        for folder in (state, state / "uploads", upload_dir, state / "jobs", outputs[0].parent, state / "logs"):
            assert _mode(folder) == 0o700, (folder, oct(_mode(folder)))
        for file in (upload_dir / "talk.wav", state / "uploads" / f"{up['uploadId']}.json", outputs[0],
                     state / "store.sqlite", state / "logs" / "scribefleet.log"):  # fmt: skip
            assert _mode(file) == 0o600, (file, oct(_mode(file)))
    finally:
        server.kill(signal.SIGTERM)


def _long_recording(path: Path, times: int = 4) -> Path:
    """long_pauses.wav four times over: two minutes, so the kill surely lands mid-transcription."""
    with wave.open(str(DATA / "long_pauses.wav"), "rb") as src:
        params, frames = src.getparams(), src.readframes(src.getnframes())
    with wave.open(str(path), "wb") as out:
        out.setparams(params)
        out.writeframes(frames * times)
    return path


def test_kill_9_mid_batch_and_restart_loses_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = ServeProcess(state, serve_env(tmp_path)).start()
    try:
        first.wait_ready()
        # a second controller on the same state folder is refused while this one holds it
        second = ServeProcess(state, serve_env(tmp_path)).start()
        assert second.wait_exit() == 1 and "STATE_LOCKED" in second.output()
        sources = {name: DATA / name for name in INPUTS} | {"long_pauses.wav": _long_recording(tmp_path / "long.wav")}
        with httpx.Client(base_url=first.url, headers=AUTH, timeout=60) as client:
            batch = client.post("/api/batches", json={"name": "killed"}).json()
            jobs = {}
            for name in INPUTS:
                with sources[name].open("rb") as fh:
                    up = client.post("/api/uploads", files={"file": (name, fh)}).json()
                body = {"uploadId": up["uploadId"], "batchId": batch["id"], "options": {"formats": ["srt"], "batch_size": 1}}
                jobs[name] = client.post("/api/jobs", json=body).json()["id"]
            long_id = jobs["long_pauses.wav"]
            url = f"/api/batches/{batch['id']}"
            _poll(client, url, lambda b: any(j["id"] == long_id and j["progress"]["stage"] == "transcribe" for j in b["jobs"]))
        slot_pids = first.slot_pids()
        assert slot_pids and first.kill(signal.SIGKILL) == -signal.SIGKILL
    finally:
        first.kill()
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in slot_pids):
        assert time.monotonic() < deadline, "slot processes outlived the killed controller"
        time.sleep(0.1)
    with Store.open(state) as store:
        before = {t.id: t for t in store.tasks(batch["id"])}
    assert before[long_id].state is TaskState.RUNNING, "the kill came mid-job"
    finished_before = {i for i, t in before.items() if t.is_complete}

    again = ServeProcess(state, serve_env(tmp_path)).start()
    try:
        again.wait_ready()
        with httpx.Client(base_url=again.url, headers=AUTH, timeout=60) as client:
            url = f"/api/batches/{batch['id']}"
            final = _poll(client, url, lambda b: sum(b["counts"].values()) == len(INPUTS) and b["counts"]["complete"] == len(INPUTS))
            assert {j["id"] for j in final["jobs"]} == set(jobs.values())
            for job in final["jobs"]:
                assert client.get(job["outputs"]["srt"]).text.strip(), job
            history = client.get(f"/api/jobs/{long_id}/logs", params={"format": "text"}).text
            assert "EVENT   recovered" in history
            for job_id in finished_before:  # finished work was not redone
                assert client.get(f"/api/jobs/{job_id}/logs", params={"format": "text"}).text.count("EVENT   dispatched") == 1
        # SIGTERM: a clean stop (uvicorn then ends the process with that signal, as it should)
        assert again.kill(signal.SIGTERM) in (0, -signal.SIGTERM)
        assert "controller stopped" in again.output()
    finally:
        again.kill()
