"""Seed 003's contract: its input JSON in, its output JSON out; in process, via `scribefleet handle`, and as a
RunPod worker in the SDK's local test mode. Media from a loopback HTTP server, S3 from moto's server on
loopback (checking keys, so the input's keys are really the ones used)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import srt

pytest.importorskip("yt_dlp")
pytest.importorskip("moto.server")

from helpers import DATA, TEXTS, wer  # noqa: E402
from media_server import MediaServer  # noqa: E402
from s3_server import moto_s3  # noqa: E402
from scribefleet.config import Settings  # noqa: E402
from scribefleet.serverless import Worker  # noqa: E402

SECRET_MARK = "do-not-log-"


@pytest.fixture(scope="module")
def s3():
    with moto_s3("transcripts", check_keys=True) as server:
        yield server


@pytest.fixture
def media():
    with MediaServer() as s:
        s.add("/v/fox.wav", (DATA / "en01.wav").read_bytes(), "audio/wav")
        s.add("/watch", b'<html><head><title>Fox</title></head><body><audio src="/v/fox.wav"></audio></body></html>',
              "text/html")
        yield s


def seed_input(url: str, s3, request_id: str, **more: str) -> dict:
    return {"input": {"youtube_url": url, "request_id": request_id, "s3_bucket": "transcripts",
                      "s3_key_prefix": "transcriptions/", "s3_endpoint_url": s3.url,
                      "aws_access_key": s3.access_key, "aws_secret_key": s3.secret_key, **more}}


def test_the_handler_answers_the_seeds_output_and_keeps_the_model_warm(media, s3, tmp_path: Path) -> None:
    worker = Worker(Settings(state_dir=tmp_path / "state"), device="cpu")
    out = worker.handle(seed_input(media.url + "/watch", s3, "job-1"))
    assert out == {"status": "done", "request_id": "job-1", "srt_path": "s3://transcripts/transcriptions/job-1.srt",
                   "srt_key": "transcriptions/job-1.srt", "srt_bucket": "transcripts"}
    body = s3.client.get_object(Bucket="transcripts", Key="transcriptions/job-1.srt")["Body"].read().decode()
    assert body.startswith("1\n00:00:") and wer(TEXTS["en01.wav"], " ".join(c.content for c in srt.parse(body))) <= 0.3
    loaded = list(worker.models.loaded)
    second = worker.handle(seed_input(media.url + "/v/fox.wav", s3, "job-2"))
    assert second["status"] == "done" and worker.models.loaded == loaded == ["tiny.en"]


def test_errors_come_back_in_the_seeds_error_shape(media, s3, tmp_path: Path) -> None:
    worker = Worker(Settings(state_dir=tmp_path / "state"), device="cpu")
    gone = worker.handle(seed_input(media.url + "/v/gone.wav", s3, "job-3"))
    assert gone["status"] == "error" and gone["request_id"] == "job-3" and gone["error"].startswith("DOWNLOAD_FAILED: ")
    bad_key = seed_input(media.url + "/v/fox.wav", s3, "job-4")
    bad_key["input"]["aws_secret_key"] = SECRET_MARK + "x"
    failed = worker.handle(bad_key)
    assert failed["error"].startswith("PUBLISH_FAILED: ") and SECRET_MARK not in json.dumps(failed)
    # the caller learns file names, never this machine's folders (botocore and PyAV quote whole paths)
    no_bucket = worker.handle(seed_input(media.url + "/v/fox.wav", s3, "job-6", s3_bucket="nobucket"))
    assert "NoSuchBucket" in no_bucket["error"] and "job-6.srt" in no_bucket["error"], no_bucket
    assert str(tmp_path) not in no_bucket["error"], no_bucket
    media.add("/v/text.wav", b"this is not audio", "audio/wav")
    unreadable = worker.handle(seed_input(media.url + "/v/text.wav", s3, "job-5"))
    assert unreadable["error"].startswith("MEDIA_UNREADABLE: ") and str(tmp_path) not in unreadable["error"], unreadable
    assert worker.handle({"input": {"request_id": "r"}})["error"].startswith("INVALID_OPTIONS: ")
    assert worker.handle({"nope": 1})["status"] == "error"
    assert worker.handle(seed_input("ftp://x/y", s3, "r"))["error"].startswith("INVALID_OPTIONS")
    assert worker.handle(seed_input(media.url + "/watch", s3, "../etc"))["error"].startswith("INVALID_OPTIONS")
    # a URL that does not parse, a prefix that is no string: refused up front, never INTERNAL_ERROR from a library
    for url in ("https://exa mple.com/x.wav", "http://[::1/x", "https://example.com:99999/x"):
        assert worker.handle(seed_input(url, s3, "r"))["error"].startswith("INVALID_OPTIONS: input.youtube_url")
    assert worker.handle(seed_input(media.url + "/watch", s3, "r", s3_key_prefix={"a": 1}))["error"].startswith(
        "INVALID_OPTIONS: input.s3_key_prefix")


def _env(tmp_path: Path) -> dict[str, str]:
    # wrong keys in the environment: only the input's keys can make the upload work
    return {**os.environ, "SCRIBEFLEET_STATE_DIR": str(tmp_path / "state"), "AWS_ACCESS_KEY_ID": "env-wrong",
            "AWS_SECRET_ACCESS_KEY": "env-wrong", "SCRIBEFLEET_CPU_THREADS": "2"}


def test_scribefleet_handle_reads_a_file_or_stdin(media, s3, tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text(json.dumps(seed_input(media.url + "/watch", s3, "cli-1")))
    proc = subprocess.run([sys.executable, "-m", "scribefleet.cli.main", "handle", str(job)], capture_output=True,
                          text=True, timeout=300, env=_env(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["srt_path"] == "s3://transcripts/transcriptions/cli-1.srt"
    bad = seed_input(media.url + "/nothing.wav", s3, "cli-2")
    proc = subprocess.run([sys.executable, "-m", "scribefleet.cli.main", "handle", "-"], input=json.dumps(bad),
                          capture_output=True, text=True, timeout=300, env=_env(tmp_path))  # fmt: skip
    assert proc.returncode == 1 and json.loads(proc.stdout)["error"].startswith("DOWNLOAD_FAILED")
    logs = "".join(p.read_text() for p in (tmp_path / "state").rglob("*.log"))
    assert s3.secret_key not in logs + proc.stderr


def test_runpod_local_test_mode_runs_the_worker(media, s3, tmp_path: Path) -> None:
    pytest.importorskip("runpod")
    payload = seed_input(media.url + "/watch", s3, "rp-1")
    proc = subprocess.run([sys.executable, "-m", "scribefleet.serverless", "--test_input", json.dumps(payload)],
                          capture_output=True, text=True, timeout=300, env=_env(tmp_path), cwd=tmp_path)  # fmt: skip
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "s3://transcripts/transcriptions/rp-1.srt" in text and "completed successfully" in text
    assert s3.secret_key not in text
    s3.client.head_object(Bucket="transcripts", Key="transcriptions/rp-1.srt")
    # a failing job: RunPod's error (the seed's "error" field) carries our code, and the process says so
    payload = seed_input(media.url + "/v/gone.wav", s3, "rp-2")
    proc = subprocess.run([sys.executable, "-m", "scribefleet.serverless", "--test_input", json.dumps(payload)],
                          capture_output=True, text=True, timeout=300, env=_env(tmp_path), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1 and "DOWNLOAD_FAILED" in proc.stdout + proc.stderr


def test_a_job_file_that_is_not_json_still_answers_the_seeds_json(tmp_path: Path) -> None:
    # stdout was empty (a message on stderr only), and a file that is not UTF-8 ended in a raw traceback
    cases = {"broken.json": b'{"input": ', "binary.json": b"\xff\xfe{\x00"}
    for name, body in cases.items():
        (tmp_path / name).write_bytes(body)
        proc = subprocess.run([sys.executable, "-m", "scribefleet.cli.main", "handle", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=120, env=_env(tmp_path))  # fmt: skip
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        out = json.loads(proc.stdout)
        assert out["status"] == "error" and out["error"].startswith("INVALID_OPTIONS: "), out
    proc = subprocess.run([sys.executable, "-m", "scribefleet.cli.main", "handle", str(tmp_path / "missing.json")],
                          capture_output=True, text=True, timeout=120, env=_env(tmp_path))  # fmt: skip
    assert proc.returncode == 1 and json.loads(proc.stdout)["error"].startswith("INPUT_NOT_FOUND: ")


def _leftovers(root: Path) -> list[str]:
    """Every file and folder under `root` (relative), but the handler's own log files."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "logs" not in p.relative_to(root).parts)


def test_a_warm_worker_leaves_nothing_of_its_requests_behind(media, s3, tmp_path: Path) -> None:
    # a warm worker kept every request's download, checkpoints and SRT: its disk filled request by request
    pytest.importorskip("runpod")
    import socket
    import time

    import httpx

    temp = tmp_path / "tmp"
    temp.mkdir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scribefleet.serverless", "--rp_serve_api", "--rp_api_host", "127.0.0.1",
         "--rp_api_port", str(port)],
        env={**_env(tmp_path), "TMPDIR": str(temp)}, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()
            try:
                if httpx.get(url + "/", timeout=2).status_code == 200:  # its API docs
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.2)

        def run(payload: dict) -> dict:
            return httpx.post(url + "/runsync", json=payload, timeout=300).json()

        state = tmp_path / "state" / "serverless"
        # the same media twice (a page and its file: one transcript folder shared), a download that fails
        for request_id, path in (("warm-1", "/watch"), ("warm-2", "/v/fox.wav"), ("warm-3", "/v/gone.wav")):
            run(seed_input(media.url + path, s3, request_id))
            assert _leftovers(state) in ([], ["out", "work"]), _leftovers(state)
        for request_id in ("warm-1", "warm-2"):
            s3.client.head_object(Bucket="transcripts", Key=f"transcriptions/{request_id}.srt")
        # an upload refused (wrong key) keeps the transcript, not the download, so the retry does not transcribe
        bad_key = seed_input(media.url + "/v/fox.wav", s3, "warm-4")
        bad_key["input"]["aws_secret_key"] = SECRET_MARK + "x"
        assert "PUBLISH_FAILED" in json.dumps(run(bad_key))
        kept = _leftovers(state)
        assert any(p.endswith("transcript.json") for p in kept) and not any("media." in p for p in kept), kept
        assert not any(p.startswith("out/") for p in kept), kept  # the local SRT; the rendered one is kept
        assert run(seed_input(media.url + "/v/fox.wav", s3, "warm-4"))["output"]["status"] == "done"
        assert _leftovers(state) in ([], ["out", "work"]), _leftovers(state)
        # onnxruntime (Silero VAD) writes one 51-byte id file there, once per TMPDIR: not the requests' doing
        assert sorted(p.name for p in temp.rglob("*")) in ([], [".ses"]), "the worker left files in its TMPDIR"
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


def test_failed_uploads_keep_only_the_newest_transcripts(media, s3, tmp_path: Path, monkeypatch) -> None:
    from scribefleet.serverless import workspace

    monkeypatch.setattr(workspace, "KEEP_FAILED", 1)  # the setting under test, made small: two requests exceed it
    media.add("/v/other.wav", (DATA / "en02.wav").read_bytes(), "audio/wav")
    worker = Worker(Settings(state_dir=tmp_path / "state"), device="cpu")
    for request_id, path in (("old", "/v/fox.wav"), ("new", "/v/other.wav")):
        bad_key = seed_input(media.url + path, s3, request_id)
        bad_key["input"]["aws_secret_key"] = SECRET_MARK + "x"
        assert worker.handle(bad_key)["error"].startswith("PUBLISH_FAILED")
    work = tmp_path / "state" / "serverless" / "work"
    kept = [p for p in work.iterdir() if (p / workspace.KEPT_MARK).exists()]
    assert len(kept) == 1 and len([p for p in work.iterdir() if p.is_dir()]) == 2, _leftovers(work)  # url dir + twin
    fetched = json.loads((kept[0] / "fetch.json").read_text())
    assert fetched["file"].startswith("media.") and not (kept[0] / fetched["file"]).exists()
    assert worker.handle(seed_input(media.url + "/v/other.wav", s3, "new"))["status"] == "done"
    assert _leftovers(work) == [], _leftovers(work)
