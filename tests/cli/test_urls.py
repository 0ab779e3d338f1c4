"""URLs in and S3 out, end to end: real CLI processes, a real HTTP server and moto's S3 server on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("yt_dlp")
pytest.importorskip("moto.server")

from helpers import DATA, TEXTS, wer  # noqa: E402
from media_server import MediaServer  # noqa: E402
from s3_server import moto_s3  # noqa: E402

CLI = [sys.executable, "-m", "scribefleet.cli.main"]
PAGE = b"""<html><head><title>Fox talk</title></head><body><audio src="/m/fox.wav"></audio></body></html>"""
TWO = b"""<html><head><title>Two</title></head><body>
<audio src="/m/fox.wav"></audio><audio src="/m/two.wav"></audio></body></html>"""


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=400, env={**os.environ, **(env or {})})


@pytest.fixture
def media():
    with MediaServer() as s:
        s.add("/m/fox.wav", (DATA / "en01.wav").read_bytes(), "audio/wav")
        s.add("/m/two.wav", (DATA / "en02.wav").read_bytes(), "audio/wav")
        s.add("/fox.html", PAGE, "text/html")
        s.add("/two.html", TWO, "text/html")
        yield s


@pytest.fixture
def s3():
    with moto_s3("subs") as server:
        yield server.url, server.client


def test_urls_and_a_playlist_transcribe_and_a_404_fails_alone(media: MediaServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("transcribe", media.url + "/fox.html", media.url + "/two.html", media.url + "/m/gone.wav",
                   "-o", str(out), "-f", "json,srt", "--device", "cpu", "--json")  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["total"] == 4 and summary["complete"] == 3 and summary["failed"] == 1  # the page's 2 entries
    failed = [j for j in summary["jobs"] if j["state"] == "failed"]
    assert failed[0]["error_code"] == "DOWNLOAD_FAILED" and failed[0]["input"] == media.url + "/m/gone.wav"
    names = sorted(p.name for p in out.glob("*.json"))
    assert len(names) == 3, names
    docs = {n: json.loads((out / n).read_text()) for n in names}
    page_doc = next(d for d in docs.values() if d["metadata"]["source_url"] == media.url + "/fox.html")
    assert page_doc["metadata"]["title"].startswith("Fox talk") and wer(TEXTS["en01.wav"], page_doc["text"]) <= 0.3
    two_doc = next(d for d in docs.values() if d["metadata"]["source_url"] == media.url + "/m/two.wav")
    assert wer(TEXTS["en02.wav"], two_doc["text"]) <= 0.3
    # fox.wav came twice (the page and the playlist's entry): transcribed once
    work = out / ".scribefleet" / "work"
    assert len([p for p in work.iterdir() if not p.name.startswith("url-")]) == 2


def test_publish_then_a_failed_publish_resumes_uploading_only(media: MediaServer, s3, tmp_path: Path) -> None:
    from scribefleet.jobs.lookup import open_store

    endpoint, client = s3
    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    out = tmp_path / "out"
    args = ["transcribe", media.url + "/m/fox.wav", "-o", str(out), "-f", "srt,json", "--device", "cpu", "--json",
            "--publish", "s3://subs/run/", "--s3-endpoint-url", endpoint, "--s3-region", "us-east-1"]
    proc = run_cli(*args, env=env)
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)["jobs"][0]
    assert job["published"] == {"srt": "s3://subs/run/fox.srt", "json": "s3://subs/run/fox.json"}
    assert job["srt_path"] == "s3://subs/run/fox.srt"
    assert client.get_object(Bucket="subs", Key="run/fox.srt")["Body"].read() == (out / "fox.srt").read_bytes()

    # a bucket that does not exist: PUBLISH_FAILED, and the local outputs are there
    out2 = tmp_path / "out2"
    args2 = [{"s3://subs/run/": "s3://later/run/", str(out): str(out2)}.get(a, a) for a in args]
    proc = run_cli(*args2, env=env)
    assert proc.returncode == 1
    job = json.loads(proc.stdout)["jobs"][0]
    assert job["error_code"] == "PUBLISH_FAILED" and (out2 / "fox.srt").is_file()
    # once the bucket exists the same command uploads, without fetching or transcribing again
    client.create_bucket(Bucket="later")
    proc = run_cli(*args2, env=env)
    assert proc.returncode == 0, proc.stderr
    assert client.get_object(Bucket="later", Key="run/fox.srt")["Body"].read() == (out2 / "fox.srt").read_bytes()
    with open_store(out2) as store:
        task = store.task(job["job_id"])
        assert task.result["stages_run"] == ["publish"]
    status = run_cli("status", job["job_id"], "--state", str(out2), "--json")
    view = json.loads(status.stdout)
    assert view["srt_path"] == "s3://later/run/fox.srt" and view["status"] == "complete"


def test_a_plan_transcribes_a_url_and_publishes(media: MediaServer, s3, tmp_path: Path) -> None:
    import textwrap

    endpoint, client = s3
    plan = tmp_path / "plan.yaml"
    plan.write_text(textwrap.dedent(f"""
        tasks:
          - id: talk
            kind: transcribe
            input: {media.url}/fox.html
            out: results
            formats: [srt, json]
            device: cpu
            fetch: {{socket_timeout_s: 30}}
            publish: {{target: "s3://subs/plan/", endpoint_url: "{endpoint}", region: us-east-1}}
          - id: index
            kind: aggregate
            needs: [talk]
            output: results/index.json
    """).lstrip())
    proc = run_cli("plan", "run", str(plan), "--json", env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["total"], summary["complete"]) == (2, 2)
    doc = json.loads((tmp_path / "results" / "fox.json").read_text())  # named after the URL's path
    assert doc["metadata"]["title"].startswith("Fox talk") and wer(TEXTS["en01.wav"], doc["text"]) <= 0.3
    assert client.get_object(Bucket="subs", Key="plan/fox.srt")["Body"].read() == (tmp_path / "results" / "fox.srt").read_bytes()
    index = json.loads((tmp_path / "results" / "index.json").read_text())
    assert wer(TEXTS["en01.wav"], index["text"]) <= 0.3
