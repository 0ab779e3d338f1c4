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


def test_a_plan_task_of_a_playlist_becomes_one_task_per_entry(media: MediaServer, tmp_path: Path) -> None:
    import textwrap

    plan = tmp_path / "plan.yaml"
    plan.write_text(textwrap.dedent(f"""
        tasks:
          - id: talks
            kind: transcribe
            input: {media.url}/two.html
            out: results
            formats: [json]
            device: cpu
          - id: index
            kind: aggregate
            needs: [talks]
            output: results/index.json
    """).lstrip())
    shown = run_cli("plan", "check", str(plan))
    assert shown.returncode == 0 and "talks:1" in shown.stdout and "talks:2" in shown.stdout, shown.stdout + shown.stderr
    proc = run_cli("plan", "run", str(plan), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["total"], summary["complete"]) == (3, 3)
    docs = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json") if p.name != "index.json"]
    by_source = {d["metadata"]["source_url"]: d for d in docs}
    assert set(by_source) == {media.url + "/m/fox.wav", media.url + "/m/two.wav"}
    assert wer(TEXTS["en02.wav"], by_source[media.url + "/m/two.wav"]["text"]) <= 0.3
    index = json.loads((tmp_path / "results" / "index.json").read_text())
    assert wer(TEXTS["en01.wav"] + " " + TEXTS["en02.wav"], index["text"]) <= 0.3  # the aggregate waited for both


# -- through a controller: submit URL and batch with URLs ---------------------------------------


def test_submit_and_batch_send_urls_to_a_controller_that_fetches_them(media: MediaServer, tmp_path: Path) -> None:
    from cli.test_batch import TOKEN, RunningController, client_env, free_port

    port = free_port()
    env = {**os.environ, "SCRIBEFLEET_HOST": "127.0.0.1", "SCRIBEFLEET_PORT": str(port),
           "SCRIBEFLEET_STATE_DIR": str(tmp_path / "controller"), "SCRIBEFLEET_API_TOKENS": TOKEN,
           "SCRIBEFLEET_URL_ALLOWLIST": '["127.0.0.1"]'}
    ctl = RunningController(f"http://127.0.0.1:{port}", tmp_path / "controller", env, tmp_path / "serve.log")
    ctl.start()
    try:
        cenv = client_env()
        # submit: a playlist page is one job per entry, ids printed at once, the controller downloads
        proc = run_cli("submit", media.url + "/two.html", "--controller", ctl.url, "-f", "srt", env=cenv)
        assert proc.returncode == 0, proc.stderr
        ids = proc.stdout.split()
        assert len(ids) == 2 and "submitted 2 jobs" in proc.stderr
        refused = run_cli("submit", media.url + "/two.html", "--controller", ctl.url, "--cookies", "c.txt", env=cenv)
        assert refused.returncode == 2 and "INVALID_OPTIONS" in refused.stderr
        # batch: a folder and URLs together; each URL is known by itself in the state file
        inbox = tmp_path / "inbox"
        inbox.mkdir()
        (inbox / "a.wav").write_bytes((DATA / "en03.wav").read_bytes())
        out = tmp_path / "out"
        args = ["batch", "-i", str(inbox), "-i", media.url + "/fox.html", "-i", media.url + "/m/gone.wav",
                "--controller", ctl.url, "-f", "txt", "-o", str(out), "--json"]
        first = run_cli(*args, env=cenv)
        assert first.returncode == 1, first.stderr  # gone.wav fails alone
        state = json.loads(first.stdout)
        files = state["files"]
        assert set(files) == {"a.wav", media.url + "/fox.html", media.url + "/m/gone.wav"}
        assert files[media.url + "/fox.html"]["status"] == "complete" and files[media.url + "/fox.html"]["url"]
        assert files[media.url + "/m/gone.wav"]["lastErrorCode"] == "DOWNLOAD_FAILED"
        fox_txt = next(p for p in out.glob("*.txt") if p.name != "a.txt")
        assert fox_txt.name.startswith("Fox talk") and wer(TEXTS["en01.wav"], fox_txt.read_text()) <= 0.3
        assert wer(TEXTS["en03.wav"], (out / "a.txt").read_text()) <= 0.35
        assert (inbox / "batch_state.json").is_file()
        fox_job = files[media.url + "/fox.html"]["jobId"]
        again = json.loads(run_cli(*args, env=cenv).stdout)  # resumed: the finished URL is not sent again
        assert again["files"][media.url + "/fox.html"]["jobId"] == fox_job
        for job_id in ids:
            view = json.loads(run_cli("status", job_id, "--controller", ctl.url, "--json", env=cenv).stdout)
            assert view["status"] in {"queued", "running", "complete"}, view
    finally:
        ctl.stop()


def test_a_long_title_in_cjk_still_names_files_the_filesystem_takes(media: MediaServer, tmp_path: Path) -> None:
    # 120 characters of a CJK title are 360 bytes: 'File name too long' failed the job with INTERNAL_ERROR after
    # transcribing it (file names are at most 255 bytes)
    title = "会议记录" * 40
    media.add("/long.html", f'<html><head><title>{title}</title></head><body><audio src="/m/fox.wav"></audio>'
                            "</body></html>".encode(), "text/html")  # fmt: skip
    out = tmp_path / "out"
    proc = run_cli("transcribe", media.url + "/long.html", "-o", str(out), "-f", "json,srt", "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    (job,) = json.loads(proc.stdout)["jobs"]
    assert job["state"] == "complete"
    names = sorted(p.name for p in out.iterdir() if p.is_file())
    assert [n.rsplit(".", 1)[1] for n in names] == ["json", "srt"], names
    assert all(len(n.encode()) <= 255 and title.startswith(n.rsplit(".", 1)[0]) for n in names), names
    assert wer(TEXTS["en01.wav"], json.loads((out / names[0]).read_text())["text"]) <= 0.3


def test_a_presigned_links_signature_stays_out_of_logs_events_and_errors(media: MediaServer, tmp_path: Path) -> None:
    """A presigned link is a password for its object (DESIGN invariant 5): one that fails and one that works leave
    their signature and credential in no log line, event or error message; the job keeps its input as given."""
    query = "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAS3CR3T%2F20261202&X-Amz-Signature=f00dcafe5ign"
    good, gone = media.url + "/m/fox.wav" + query, media.url + "/m/gone.wav" + query
    out = tmp_path / "out"
    proc = run_cli("transcribe", good, gone, "-o", str(out), "-f", "txt", "--device", "cpu", "--json")
    assert proc.returncode == 1, proc.stderr
    jobs = {j["input"]: j for j in json.loads(proc.stdout)["jobs"]}
    assert jobs[good]["state"] == "complete" and jobs[gone]["error_code"] == "DOWNLOAD_FAILED"
    assert "X-Amz-Signature=***" in jobs[gone]["error_message"] or "gone.wav" in jobs[gone]["error_message"]
    said = [proc.stderr, jobs[gone]["error_message"]]
    said += [p.read_text(errors="replace") for p in (out / ".scribefleet").rglob("*") if p.suffix in (".log", ".jsonl")]
    assert len(said) > 3  # the run's log, its slot's, the batch's events
    for text in said:
        assert "f00dcafe5ign" not in text and "AKIAS3CR3T" not in text
    assert "X-Amz-Signature=***" in "".join(said)
    shown = run_cli("logs", jobs[gone]["job_id"], "--state", str(out))  # the masked key still finds the job's lines
    assert shown.returncode == 0 and "dispatched" in shown.stdout and "f00dcafe5ign" not in shown.stdout


def test_a_url_with_its_scheme_in_capitals_is_a_url(media: MediaServer, tmp_path: Path) -> None:
    """`HTTP://host/x` was taken for a path: INPUT_NOT_FOUND, nothing started (RFC 3986: schemes have no case)."""
    out = tmp_path / "out"
    url = media.url.replace("http://", "HTTP://") + "/m/fox.wav"
    proc = run_cli("transcribe", url, "-o", str(out), "-f", "json", "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)["jobs"][0]
    assert job["state"] == "complete" and job["input"] == url
    assert wer(TEXTS["en01.wav"], json.loads((out / "fox.json").read_text())["text"]) <= 0.3


def test_a_batch_killed_while_the_controller_makes_its_url_job_resumes_without_a_second_job(
    media: MediaServer, tmp_path: Path
) -> None:
    """`kill -9` of `batch` after the controller took its POST /api/jobs {"url"} but before the answer reached
    the state file: the resumed run sent the URL again and the controller ran it twice (an upload's job was
    found by its file name; a URL's was not). The runner now saves an Idempotency-Key before the request and
    sends the same key again; the controller answers it with the job the first request made."""
    import signal
    import time

    import httpx

    from cli.test_batch import TOKEN, RunningController, client_env, free_port

    port = free_port()
    env = {**os.environ, "SCRIBEFLEET_HOST": "127.0.0.1", "SCRIBEFLEET_PORT": str(port),
           "SCRIBEFLEET_STATE_DIR": str(tmp_path / "controller"), "SCRIBEFLEET_API_TOKENS": TOKEN,
           "SCRIBEFLEET_URL_ALLOWLIST": '["127.0.0.1"]'}  # fmt: skip
    ctl = RunningController(f"http://127.0.0.1:{port}", tmp_path / "controller", env, tmp_path / "serve.log")
    ctl.start()
    url = media.add("/held.html", PAGE, "text/html")
    held = media.gate("/held.html", after=1)  # the runner reads the page itself first; the controller's read waits
    out = tmp_path / "out"
    args = ["batch", "-i", url, "--controller", ctl.url, "-f", "txt", "-o", str(out)]
    try:
        runner = subprocess.Popen([*CLI, *args], env=client_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        give_up = time.monotonic() + 120
        while sum(p == "/held.html" for _, p, _ in media.requests) < 2:  # the controller, inside the POST
            assert time.monotonic() < give_up and runner.poll() is None, runner.stderr.read() if runner.stderr else ""
            time.sleep(0.05)
        runner.send_signal(signal.SIGKILL)
        runner.communicate(timeout=30)
        state = json.loads((out / "batch_state.json").read_text())
        asked = state["files"][url]
        assert asked["status"] == "pending" and not asked.get("jobId"), asked  # the window: asked, not recorded
        held.set()  # the controller finishes the request nobody waits for any more
        batch = f"/api/batches/{state['batchId']}"
        while not ctl.api(batch)["jobs"]:
            assert time.monotonic() < give_up, "the controller never made the job"
            time.sleep(0.05)

        resumed = run_cli(*args, "--json", env=client_env())
        assert resumed.returncode == 0, resumed.stderr
        jobs = ctl.api(batch)["jobs"]
        assert len(jobs) == 1, f"the URL was submitted twice: {jobs}"
        done = json.loads(resumed.stdout)["files"][url]
        assert done["jobId"] == jobs[0]["id"] and done["status"] == "complete" and done["downloaded"]
        assert wer(TEXTS["en01.wav"], next(out.glob("*.txt")).read_text()) <= 0.3

        # the same request again (a client that lost the answer) is answered with that job, nothing new
        assert asked["idempotencyKey"] == done["idempotencyKey"]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        again = httpx.post(f"{ctl.url}/api/jobs", headers={**auth, "Idempotency-Key": asked["idempotencyKey"]},
                           json={"url": url, "batchId": state["batchId"]}, timeout=60)  # fmt: skip
        assert again.status_code == 200 and again.json()["id"] == jobs[0]["id"], again.text
        # a playlist without a batchId: its own batch, and every entry's job again for the same key
        two = {"url": media.url + "/two.html", "options": {"formats": "txt"}}
        first = httpx.post(f"{ctl.url}/api/jobs", headers={**auth, "Idempotency-Key": "two-1"}, json=two, timeout=60)
        second = httpx.post(f"{ctl.url}/api/jobs", headers={**auth, "Idempotency-Key": "two-1"}, json=two, timeout=60)
        assert (first.status_code, second.status_code) == (201, 200), second.text
        assert [j["id"] for j in first.json()["jobs"]] == [j["id"] for j in second.json()["jobs"]]
        assert len(first.json()["jobs"]) == 2 and len(ctl.api(f"/api/batches/{first.json()['batchId']}")["jobs"]) == 2
        other = httpx.post(f"{ctl.url}/api/jobs", headers={**auth, "Idempotency-Key": "two-2"}, json=two, timeout=60)
        assert other.status_code == 201 and other.json()["batchId"] != first.json()["batchId"]
    finally:
        held.set()
        ctl.stop()
