"""`scribefleet batch` end to end: a real `scribefleet serve` on loopback, real slots, tiny.en, real audio.

The runner is a real CLI process too, so `kill -9` hits it exactly as it
would hit a user's run; what the controller holds afterwards (its jobs,
its uploads folder) says whether anything was sent twice.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import srt

from helpers import TEXTS, wer

CLI = [sys.executable, "-m", "scribefleet.cli.main"]
TOKEN = "batch-test-token-0123456789"


@dataclass
class RunningController:
    """A `scribefleet serve` subprocess on a free loopback port."""

    url: str
    state_dir: Path
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90.0) -> None:
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen([*CLI, "serve", "--device", "cpu", "--slots", "1"], env=self.env, stdout=sink, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"serve did not answer /health in {timeout_s}s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def api(self, path: str) -> Any:
        resp = httpx.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        resp.raise_for_status()
        return resp.json()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[RunningController]:
    port = free_port()
    env = {**os.environ, "SCRIBEFLEET_HOST": "127.0.0.1", "SCRIBEFLEET_PORT": str(port),
           "SCRIBEFLEET_STATE_DIR": str(tmp_path / "controller"), "SCRIBEFLEET_API_TOKENS": TOKEN}
    ctl = RunningController(f"http://127.0.0.1:{port}", tmp_path / "controller", env, tmp_path / "serve.log")
    ctl.start()
    yield ctl
    ctl.stop()


def client_env(**extra: str) -> dict[str, str]:
    """The runner's environment: the token from the environment (not the command line), fast polling."""
    return {**os.environ, "SCRIBEFLEET_TOKEN": TOKEN, "SCRIBEFLEET_CONTROLLER_POLL_MIN_S": "0.2",
            "SCRIBEFLEET_CONTROLLER_POLL_MAX_S": "1", **extra}


def run_batch(*args: str, env: dict[str, str] | None = None, check: int | None = 0, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, "batch", *args], capture_output=True, text=True, timeout=timeout, env=env or client_env())
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.fixture
def inbox(tmp_path: Path, speech: dict[str, Path]) -> Path:
    root = tmp_path / "in box"
    (root / "day 1").mkdir(parents=True)
    shutil.copy(speech["en01.wav"], root / "fox.wav")
    shutil.copy(speech["en02.wav"], root / "day 1" / "rapport café.wav")
    shutil.copy(speech["en03.wav"], root / "day 1" / "meeting.wav")
    (root / "notes.txt").write_text("not media")
    return root


EXPECTED = {"fox": "en01.wav", "day 1/rapport café": "en02.wav", "day 1/meeting": "en03.wav"}


def test_batch_uploads_polls_downloads_and_resumes_as_a_no_op(controller: RunningController, inbox: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_batch("--input", str(inbox), "--controller", controller.url, "--parallel", "2", "--out", str(out),
                     "-f", "srt,json,txt", "--json")
    summary = json.loads(proc.stdout)
    assert summary["total"] == 3 and summary["complete"] == 3 and summary["failed"] == 0
    for stem, fixture in EXPECTED.items():
        doc = json.loads((out / f"{stem}.json").read_text())
        assert wer(TEXTS[fixture], doc["text"]) <= 0.3
        subs = list(srt.parse((out / f"{stem}.srt").read_text()))
        assert subs and subs[-1].end.total_seconds() <= doc["duration"] + 0.5
        assert (out / f"{stem}.txt").read_text().strip()
        assert not (out / f"{stem}.vtt").exists(), "a format that was not asked for was downloaded"

    state = json.loads((inbox / "batch_state.json").read_text())
    assert TOKEN not in (inbox / "batch_state.json").read_text()
    assert state["batchId"] == summary["batchId"] and state["controller"] == controller.url
    assert set(state["files"]) == {"fox.wav", "day 1/rapport café.wav", "day 1/meeting.wav"}
    for entry in state["files"].values():
        assert entry["uploadId"] and entry["jobId"] and entry["status"] == "complete"
        assert entry["executionMode"] == "local" and entry["lastErrorCode"] is None
    batch = controller.api(f"/api/batches/{state['batchId']}")
    assert sorted(j["id"] for j in batch["jobs"]) == sorted(e["jobId"] for e in state["files"].values())

    mtime = (out / "fox.srt").stat().st_mtime_ns
    again = json.loads(run_batch("--input", str(inbox), "--controller", controller.url, "--out", str(out), "-f", "srt,json,txt", "--json").stdout)
    assert again["complete"] == 3 and again["batchId"] == state["batchId"]
    assert len(controller.api(f"/api/batches/{state['batchId']}")["jobs"]) == 3, "a complete file was submitted again"
    assert (out / "fox.srt").stat().st_mtime_ns == mtime, "a finished download was redone"


def test_kill_9_mid_batch_then_resume_sends_nothing_twice(controller: RunningController, inbox: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    state_file = tmp_path / "state.json"
    args = ["--input", str(inbox), "--controller", controller.url, "--out", str(out), "-f", "txt", "--state", str(state_file)]
    runner = subprocess.Popen([*CLI, "batch", *args], env=client_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    in_flight: dict[str, Any] = {}
    while time.monotonic() < deadline and not in_flight:
        assert runner.poll() is None, runner.stderr.read().decode() if runner.stderr else ""
        try:
            files = json.loads(state_file.read_text())["files"]  # always whole: written atomically
        except FileNotFoundError:
            files = {}
        in_flight = {k: e for k, e in files.items() if e.get("jobId") and e.get("status") in {"queued", "running"}}
        time.sleep(0.05)
    assert in_flight, "no job was ever in flight"
    second = run_batch(*args, check=1)
    assert "STATE_LOCKED" in second.stderr, "two runners on one state file would submit twice"
    runner.send_signal(signal.SIGKILL)
    runner.wait(30)
    at_kill = json.loads(state_file.read_text())

    proc = run_batch(*args)
    assert "re-attached to job" in proc.stderr
    final = json.loads(state_file.read_text())
    assert final["batchId"] == at_kill["batchId"]
    for key, entry in at_kill["files"].items():
        if entry.get("jobId"):  # a job that existed is followed, not submitted (or uploaded) again
            assert final["files"][key]["jobId"] == entry["jobId"] and final["files"][key]["uploadId"] == entry["uploadId"]
    assert all(e["status"] == "complete" for e in final["files"].values())
    for stem in EXPECTED:
        assert (out / f"{stem}.txt").read_text().strip()
    jobs = controller.api(f"/api/batches/{final['batchId']}")["jobs"]
    assert sorted(j["id"] for j in jobs) == sorted(e["jobId"] for e in final["files"].values()), "a duplicate job exists"
    uploads = [p for p in (controller.state_dir / "uploads").iterdir() if p.is_dir()]
    assert len(uploads) <= 3 + (1 if any(not e.get("jobId") for e in at_kill["files"].values()) else 0)


def test_controller_killed_mid_run_is_waited_for(controller: RunningController, inbox: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--input", str(inbox), "--controller", controller.url, "--out", str(out), "-f", "txt", "--parallel", "3"]
    runner = subprocess.Popen([*CLI, "batch", *args], env=client_env(SCRIBEFLEET_CONTROLLER_RETRIES="1"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    state_file = inbox / "batch_state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        files = json.loads(state_file.read_text())["files"] if state_file.exists() else {}
        if len([e for e in files.values() if e.get("jobId")]) == 3:
            break
        time.sleep(0.05)
    controller.kill()
    time.sleep(3)  # the runner meets refused connections and keeps waiting
    assert runner.poll() is None, "the runner gave up on a controller that was away for seconds"
    assert json.loads(state_file.read_text())["files"], "the state file was lost"
    controller.start()
    _, err = runner.communicate(timeout=240)
    assert runner.returncode == 0, err
    assert "controller unreachable; trying again" in err
    for stem in EXPECTED:
        assert (out / f"{stem}.txt").read_text().strip()


def test_a_failed_file_fails_alone_and_is_submitted_again_from_its_upload(controller: RunningController, tmp_path: Path, speech: dict[str, Path]) -> None:
    inbox = tmp_path / "mixed"
    inbox.mkdir()
    shutil.copy(speech["en08.wav"], inbox / "good.wav")
    # fixed bytes: some random ones probe as a container without audio (MEDIA_EMPTY, not this test's code)
    (inbox / "noise.wav").write_bytes(random.Random(0).randbytes(20000))
    args = ["--input", str(inbox), "--controller", controller.url, "--out", str(tmp_path / "out"), "-f", "txt", "--parallel", "2"]
    first = run_batch(*args, check=1)
    assert "MEDIA_UNREADABLE" in first.stderr and "noise.wav" in first.stderr
    before = json.loads((inbox / "batch_state.json").read_text())["files"]
    assert before["good.wav"]["status"] == "complete" and (tmp_path / "out" / "good.txt").read_text().strip()
    assert before["noise.wav"]["status"] == "failed" and before["noise.wav"]["lastErrorCode"] == "MEDIA_UNREADABLE"

    run_batch(*args, check=1)
    after = json.loads((inbox / "batch_state.json").read_text())["files"]
    assert after["good.wav"]["jobId"] == before["good.wav"]["jobId"], "a complete file was submitted again"
    assert after["noise.wav"]["jobId"] != before["noise.wav"]["jobId"], "a failed file was not submitted again"
    assert after["noise.wav"]["uploadId"] == before["noise.wav"]["uploadId"], "the controller's upload was not reused"
    assert after["noise.wav"]["status"] == "failed"


def test_a_cut_off_file_completes_and_the_batch_says_so(controller: RunningController, tmp_path: Path, speech: dict[str, Path]) -> None:
    """A WAV cut at half (an interrupted copy) completes with what is there; the job's warning used to stay on
    the controller, and the overnight batch said only "complete"."""
    inbox = tmp_path / "cut"
    inbox.mkdir()
    whole = speech["en05.wav"].read_bytes()
    (inbox / "half.wav").write_bytes(whole[: len(whole) // 2])
    args = ["--input", str(inbox), "--controller", controller.url, "--out", str(tmp_path / "out"), "-f", "txt"]
    first = run_batch(*args)
    entry = json.loads((inbox / "batch_state.json").read_text())["files"]["half.wav"]
    assert entry["status"] == "complete" and entry["downloaded"], entry
    (warning,) = entry["warnings"]
    assert "its header states" in warning and "cut off" in warning, warning
    assert f"warning: half.wav: {warning}" in " ".join(first.stderr.split()), first.stderr
    again = run_batch(*args)  # resumed as a no-op, the summary still says it
    assert "warning: half.wav:" in again.stderr, again.stderr
    env = client_env()
    for target in (entry["jobId"], json.loads((inbox / "batch_state.json").read_text())["batchId"]):
        shown = subprocess.run([*CLI, "status", target, "--controller", controller.url], capture_output=True, text=True,
                               timeout=60, env=env)  # fmt: skip
        assert shown.returncode == 0 and f"warning: {warning}" in " ".join(shown.stdout.split()), shown.stdout


def test_batch_diarization_downloads_carry_the_speakers(controller: RunningController, tmp_path: Path) -> None:
    pytest.importorskip("resemblyzer", reason="the diarization extra is not installed")
    from helpers import DATA

    inbox = tmp_path / "talks"
    inbox.mkdir()
    shutil.copy(DATA / "dialogue.flac", inbox / "dialogue.flac")
    out = tmp_path / "out"
    summary = json.loads(run_batch("--input", str(inbox), "--controller", controller.url, "--out", str(out),
                                   "-f", "srt,json", "--diarization", "--speakers", "2", "--json", timeout=600).stdout)
    assert summary["complete"] == 1 and summary["failed"] == 0, summary
    doc = json.loads((out / "dialogue.json").read_text())
    assert doc["speakers"] == ["SPEAKER_00", "SPEAKER_01"]
    assert {seg["speaker"] for seg in doc["segments"]} == {"SPEAKER_00", "SPEAKER_01"}
    cues = list(srt.parse((out / "dialogue.srt").read_text()))
    assert [c.content.replace("\n", " ") for c in cues] == [f"[{seg['speaker']}] {seg['text'].strip()}"
                                                             for seg in doc["segments"]]  # fmt: skip
    (job,) = controller.api(f"/api/batches/{summary['batchId']}")["jobs"]
    assert job["options"]["diarize"] is True and job["options"]["speakers"] == 2


def test_speaker_options_are_checked_before_anything_is_sent(inbox: Path, tmp_path: Path) -> None:
    # --diarization (seed 001's flag) is an option of every job now; its companions need it
    proc = run_batch("--input", str(inbox), "--controller", "http://127.0.0.1:9", "--speakers", "2",
                     "--out", str(tmp_path / "o"), check=2)  # fmt: skip
    assert "INVALID_OPTIONS" in proc.stderr and "diarize" in proc.stderr
    assert not (inbox / "batch_state.json").exists() and not (tmp_path / "o").exists()


def test_usage_errors_exit_2(inbox: Path, tmp_path: Path) -> None:
    no_controller = run_batch("--input", str(inbox), env={**os.environ}, check=2)
    assert "SCRIBEFLEET_CONTROLLER" in no_controller.stderr
    bad_format = run_batch("--input", str(inbox), "--controller", "http://127.0.0.1:9", "-f", "docx", check=2)
    assert "INVALID_OPTIONS" in bad_format.stderr
    run_batch("--input", str(tmp_path / "nope"), "--controller", "http://127.0.0.1:9", check=2)


@pytest.mark.parametrize("content", ["folder", '{"files": 5}', "[1]", '{"files": {"a.wav": 5}}'])
def test_a_state_file_of_the_wrong_shape_is_a_usage_error(content: str, inbox: Path, tmp_path: Path) -> None:
    # a folder named batch_state.json, or JSON of another shape, ended the run in a raw IsADirectoryError or
    # AttributeError traceback
    state = tmp_path / "batch_state.json"
    if content == "folder":
        state.mkdir()
    else:
        state.write_text(content)
    proc = run_batch("--input", str(inbox), "--controller", "http://127.0.0.1:9", "--state", str(state), check=2)
    assert "Traceback" not in proc.stderr and "error [INVALID_OPTIONS]" in proc.stderr, proc.stderr
    assert str(state) in proc.stderr


def test_unreachable_controller_stops_within_the_wait_and_keeps_the_state(inbox: Path, tmp_path: Path) -> None:
    env = client_env(SCRIBEFLEET_CONTROLLER_WAIT_S="1.5", SCRIBEFLEET_CONTROLLER_RETRIES="0")
    started = time.monotonic()
    proc = run_batch("--input", str(inbox), "--controller", f"http://127.0.0.1:{free_port()}", "--out", str(tmp_path / "o"), env=env, check=1)
    assert 1.5 <= time.monotonic() - started < 60
    assert "CONTROLLER_UNREACHABLE" in proc.stderr and "run the same command again" in proc.stderr
    assert json.loads((inbox / "batch_state.json").read_text())["files"] == {}


def test_two_folders_with_the_same_relative_name_are_two_files(controller: RunningController, tmp_path: Path, speech: dict[str, Path]) -> None:
    # both were keyed 'a.wav' in the state file and downloaded to OUT/a.wav.txt: "1/1 complete", one transcript lost
    for folder, fixture in (("x", "en01.wav"), ("y", "en02.wav")):
        (tmp_path / folder).mkdir()
        shutil.copy(speech[fixture], tmp_path / folder / "a.wav")
    out = tmp_path / "out"
    args = ["--input", str(tmp_path / "x"), "--input", str(tmp_path / "y"), "--controller", controller.url,
            "--out", str(out), "-f", "txt", "--json"]  # fmt: skip
    summary = json.loads(run_batch(*args).stdout)
    assert summary["total"] == 2 and summary["complete"] == 2
    assert set(summary["files"]) == {str(tmp_path / "x" / "a.wav"), str(tmp_path / "y" / "a.wav")}
    texts = [p.read_text() for p in out.iterdir() if p.name.startswith("a.wav [") and p.suffix == ".txt"]
    assert len(texts) == 2
    for fixture in ("en01.wav", "en02.wav"):
        assert min(wer(TEXTS[fixture], t) for t in texts) <= 0.3, f"{fixture}'s transcript is missing"
    again = json.loads(run_batch(*args).stdout)
    assert again["complete"] == 2
    assert len(controller.api(f"/api/batches/{summary['batchId']}")["jobs"]) == 2, "a complete file was submitted again"


def test_a_controller_with_no_room_is_waited_for_not_blamed_on_the_files(
    tmp_path: Path, small_disk, real_speech: dict[str, tuple[Path, str]]  # noqa: ANN001
) -> None:
    """A controller whose disk was full answered the upload 400 "the multipart body is broken", and the runner
    marked every file failed. It answers 507 OUTPUT_WRITE_FAILED now, and the runner waits for room."""
    wav, reference = real_speech["sonnet001"]  # 1.7 MB: more than the controller's disk has left
    inbox = tmp_path / "in"
    inbox.mkdir()
    shutil.copy(wav, inbox)
    state = small_disk("1500k") / "controller"
    port = free_port()
    env = {**os.environ, "SCRIBEFLEET_HOST": "127.0.0.1", "SCRIBEFLEET_PORT": str(port),
           "SCRIBEFLEET_STATE_DIR": str(state), "SCRIBEFLEET_API_TOKENS": TOKEN}  # fmt: skip
    ctl = RunningController(f"http://127.0.0.1:{port}", state, env, tmp_path / "serve.log")
    ctl.start()
    try:
        out = tmp_path / "out"
        runner = subprocess.Popen([*CLI, "batch", "--input", str(inbox), "--controller", ctl.url, "--out", str(out),
                                   "-f", "txt"], env=client_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)  # fmt: skip
        said = ""
        assert runner.stdout is not None
        while "the controller has no room" not in said:
            line = runner.stdout.readline()
            assert line, f"the runner ended ({runner.wait()}) without waiting for room:\n{said}"
            said += line
        small_disk("100m")  # room on the controller
        rest, _ = runner.communicate(timeout=300)
        assert runner.returncode == 0, said + rest
        assert "No space left on device" in said and "failed [" not in said + rest, said + rest
        assert wer(reference, (out / f"{wav.stem}.txt").read_text()) <= 0.2
    finally:
        ctl.stop()
