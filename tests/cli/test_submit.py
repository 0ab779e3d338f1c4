"""`scribefleet submit` and the one `status` / `logs` / `cancel` across local jobs and controller jobs.

Locally: the job id comes back at once, a detached runner does the work, and
a runner that finds another dispatcher on the state dir waits for it rather
than stranding the job. Against a real `scribefleet serve`: upload, job,
status, logs and cancel through the controller's API.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import srt

from cli.test_batch import TOKEN, RunningController, controller  # noqa: F401  (the fixture)
from helpers import TEXTS, wer

CLI = [sys.executable, "-m", "scribefleet.cli.main"]
JOB_ID = re.compile(r"^[0-9a-f]{12}\n$")


def cli(*args: str, check: int | None = 0, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env or os.environ.copy())
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def wait_status(*args: str, until: set[str], env: dict[str, str] | None = None, timeout_s: float = 180) -> dict[str, Any]:
    """Poll `scribefleet status ... --json` until the job's status is one of `until` (bounded)."""
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        view = json.loads(cli("status", *args, "--json", env=env).stdout)
        seen.append(view["status"])
        if view["status"] in until:
            return view
        time.sleep(0.3)
    raise AssertionError(f"status never reached {until}; saw {seen[-5:]}")


# -- local -------------------------------------------------------------------------------


def test_local_submit_prints_the_id_at_once_and_a_runner_finishes_it(tmp_path: Path, speech: dict[str, Path]) -> None:
    out = tmp_path / "out"
    started = time.monotonic()
    proc = cli("submit", str(speech["en04.wav"]), "--out", str(out), "-f", "srt,json")
    assert JOB_ID.match(proc.stdout), proc.stdout
    assert time.monotonic() - started < 30
    job_id = proc.stdout.strip()
    assert f"scribefleet status {job_id}" in proc.stderr  # says how to follow it

    view = wait_status(job_id, "--state", str(out), until={"complete", "failed"})
    assert view["status"] == "complete" and view["job_id"] == job_id and view["error_code"] is None
    assert set(view["outputs"]) == {"srt", "json"}
    doc = json.loads(Path(view["outputs"]["json"]).read_text())
    assert wer(TEXTS["en04.wav"], doc["text"]) <= 0.3
    assert list(srt.parse(Path(view["outputs"]["srt"]).read_text()))

    history = cli("logs", job_id, "--state", str(out)).stdout
    assert "completed" in history or "complete" in history
    # the runner exits once nothing is queued
    deadline = time.monotonic() + 30
    log = out / ".scribefleet" / "logs" / "scribefleet.log"
    while "nothing left to run" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "nothing left to run" in log.read_text()


def test_a_runner_waits_for_the_dispatcher_that_holds_the_lock(tmp_path: Path, speech: dict[str, Path]) -> None:
    from scribefleet.dispatch.lock import DispatcherLock

    out = tmp_path / "out"
    lock = DispatcherLock(out / ".scribefleet")
    lock.acquire()  # stands for a `transcribe` run busy with another batch of this state dir
    try:
        job_id = cli("submit", str(speech["en05.wav"]), "--out", str(out), "-f", "txt").stdout.strip()
        log = out / ".scribefleet" / "logs" / "scribefleet.log"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (log.exists() and "runner: waiting for pid" in log.read_text()):
            time.sleep(0.1)
        assert "runner: waiting for pid" in log.read_text()
        assert json.loads(cli("status", job_id, "--state", str(out), "--json").stdout)["status"] == "queued"
    finally:
        lock.release()
    view = wait_status(job_id, "--state", str(out), until={"complete", "failed"})
    assert view["status"] == "complete", view
    assert Path(view["outputs"]["txt"]).read_text().strip()


def test_submit_refuses_bad_input_at_once(tmp_path: Path, speech: dict[str, Path]) -> None:
    missing = cli("submit", str(tmp_path / "nope.wav"), "--out", str(tmp_path / "o"), check=1)
    assert "INPUT_NOT_FOUND" in missing.stderr and missing.stdout == ""
    bad = cli("submit", str(speech["en01.wav"]), "--out", str(tmp_path / "o"), "-f", "docx", check=2)
    assert "INVALID_OPTIONS" in bad.stderr


def test_status_of_an_unknown_id_says_where_it_looked(tmp_path: Path, speech: dict[str, Path]) -> None:
    out = tmp_path / "out"
    job_id = cli("submit", str(speech["en06.wav"]), "--out", str(out), "-f", "txt").stdout.strip()
    proc = cli("status", "0123456789ab", "--state", str(out), check=1)
    assert "0123456789ab" in proc.stderr and str(out) in proc.stderr
    assert wait_status(job_id, "--state", str(out), until={"complete", "failed"})["status"] == "complete"


# -- controller ---------------------------------------------------------------------------


def controller_env(ctl: RunningController) -> dict[str, str]:
    return {**os.environ, "SCRIBEFLEET_TOKEN": TOKEN}


def long_recording(src: Path, dest: Path, times: int) -> Path:
    """`src` said `times` times in a row: minutes of speech that keep a CPU slot busy for a while."""
    with wave.open(str(src)) as w:
        params, frames = w.getparams(), w.readframes(w.getnframes())
    with wave.open(str(dest), "wb") as out:
        out.setparams(params)
        out.writeframes(frames * times)
    return dest


def test_submit_status_logs_cancel_through_a_controller(controller: RunningController, speech: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    env = controller_env(controller)
    talk = long_recording(speech["long_pauses.wav"], tmp_path / "five minutes.wav", 10)
    long_job = cli("submit", str(talk), "--controller", controller.url, "-f", "txt", env=env).stdout
    assert JOB_ID.match(long_job), long_job
    queued = json.loads(cli("submit", str(speech["en07.wav"]), "--controller", controller.url, "-f", "srt", "--json", env=env).stdout)
    assert queued["status"] == "queued" and queued["controller"] == controller.url
    # the one CPU slot has minutes of audio ahead of this job: it is canceled while queued
    assert "canceled" in cli("cancel", queued["job_id"], "--controller", controller.url, env=env).stdout
    view = wait_status(queued["job_id"], "--controller", controller.url, env=env, until={"canceled", "complete", "failed"})
    assert view["status"] == "canceled" and view["error_code"] == "USER_CANCELED"
    # and the long one while it runs (its slot's process group is killed)
    assert "canceled" in cli("cancel", long_job.strip(), "--controller", controller.url, env=env).stdout
    assert wait_status(long_job.strip(), "--controller", controller.url, env=env, until={"canceled", "complete"})["status"] == "canceled"

    job_id = cli("submit", str(speech["en07.wav"]), "--controller", controller.url, "-f", "srt,txt", env=env).stdout.strip()
    done = wait_status(job_id, "--controller", controller.url, env=env, until={"complete", "failed", "canceled"})
    assert done["status"] == "complete", done
    assert set(done["outputs"]) == {"srt", "txt"}
    assert done["outputs"]["srt"] == f"{controller.url}/api/jobs/{job_id}/outputs/srt"
    batch = json.loads(cli("status", done["batch_id"], "--controller", controller.url, "--json", env=env).stdout)
    assert [j["job_id"] for j in batch["jobs"]] == [job_id]
    history = cli("logs", job_id, "--controller", controller.url, env=env).stdout
    assert job_id in history and "complete" in history
    last = cli("logs", job_id, "--controller", controller.url, "--tail", "2", env=env).stdout
    assert last.splitlines() == history.splitlines()[-2:], last
    again = cli("cancel", job_id, "--controller", controller.url, env=env)
    assert "complete" in again.stdout, "canceling a finished job changes nothing"


def test_controller_commands_without_a_token_say_how_to_fix_it(controller: RunningController, speech: dict[str, Path]) -> None:  # noqa: F811
    env = {k: v for k, v in os.environ.items() if k != "SCRIBEFLEET_TOKEN"}
    proc = cli("submit", str(speech["en01.wav"]), "--controller", controller.url, env=env, check=1)
    assert "UNAUTHORIZED" in proc.stderr and "SCRIBEFLEET_TOKEN" in proc.stderr
    proc = cli("status", "0123456789ab", "--controller", controller.url, "--token", TOKEN, check=1)
    assert "NOT_FOUND" in proc.stderr


def test_submit_sends_again_a_job_request_whose_answer_was_lost(controller: RunningController, speech: dict[str, Path]) -> None:  # noqa: F811
    """The controller made the job but its answer never reached `submit` (the connection dropped): `submit`
    sends the request again with the same Idempotency-Key and is answered with that job, not a second one
    (without a key the request is not safe to send again: the command failed and left an orphan job)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import httpx

    lost: list[str | None] = []

    class LosesTheFirstJobAnswer(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def relay(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
            answer = httpx.request(self.command, controller.url + self.path, content=body, headers=headers, timeout=60)
            if self.command == "POST" and self.path == "/api/jobs" and not lost:
                lost.append(self.headers.get("Idempotency-Key"))
                self.close_connection = True  # the controller made the job; its answer goes nowhere
                return
            self.send_response(answer.status_code)
            for k, v in answer.headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_DELETE = relay

        def log_message(self, *args: object) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), LosesTheFirstJobAnswer)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        before = controller.api("/api/jobs?limit=1")["total"]
        via = f"http://127.0.0.1:{proxy.server_address[1]}"
        made = json.loads(cli("submit", str(speech["en01.wav"]), "--controller", via, "-f", "txt", "--json",
                              env=controller_env(controller)).stdout)  # fmt: skip
    finally:
        proxy.shutdown()
    assert lost and lost[0], "the first job request carried no Idempotency-Key"
    assert controller.api("/api/jobs?limit=1")["total"] == before + 1, "the request sent again made a second job"
    assert controller.api(f"/api/jobs/{made['job_id']}")["id"] == made["job_id"]
