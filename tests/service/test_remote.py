"""Remote workers end to end on real processes: `scribefleet serve` + `scribefleet worker` on loopback.

Every test starts real child processes (CPU slots, the bundled tiny.en) and
does to them what happens on rented GPUs: kill -9 either side mid-job, a
worker that is away for a while, a wrong token, more jobs than places, a file
over the worker's limit. Nothing is faked; waits are polled with generous
deadlines (the machine is shared).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import TEXTS, wer
from scribefleet.store.models import TaskState
from scribefleet.store.store import Store
from service.harness import AUTH, DATA, TOKEN, WAIT_S, ServeProcess, serve_env
from service.remote_harness import WAUTH, WorkerProcess, controller_env, post_job, wait_until, worker_env

pytestmark = pytest.mark.slow


@pytest.fixture
def procs() -> Iterator[list[ServeProcess | WorkerProcess]]:
    """Every process a test starts; all are killed at its end, whatever happened."""
    started: list[ServeProcess | WorkerProcess] = []
    yield started
    for p in started:
        p.kill()


def _worker(base: Path, procs: list, **env: str) -> WorkerProcess:
    w = WorkerProcess(base / "worker", worker_env(base, **env)).start()
    procs.append(w)
    w.wait_ready()
    return w


def _controller(base: Path, procs: list, worker_url: str, **env: str) -> ServeProcess:
    c = ServeProcess(base / "controller", controller_env(base, worker_url, **env)).start()
    procs.append(c)
    c.wait_ready()
    return c


def _client(c: ServeProcess) -> httpx.Client:
    return httpx.Client(base_url=c.url, headers=AUTH, timeout=30)


def _remote_log(c: ServeProcess) -> str:
    log = (c.state / "logs" / "scribefleet.log").read_text(errors="replace")
    return "\n".join(line for line in log.splitlines() if re.search(r"remote_|capacity", line))


def _worker_jobs(w: WorkerProcess) -> list:
    with Store.open(w.state) as store:
        return store.tasks()


def test_remote_and_local_jobs_side_by_side(tmp_path: Path, procs: list) -> None:
    w = _worker(tmp_path, procs, WORKER_MAX_CONCURRENT_JOBS="2")
    c = _controller(tmp_path, procs, w.url)
    with _client(c) as client:
        remote = post_job(client, "en03.wav", formats=("txt", "srt"), language="de")
        assert remote["executionMode"] == "remote", remote
        # the answer shows the job as it is when written: still waiting for a place, or already running there
        # (a loaded machine can dispatch it first); waiting, it says what for
        assert remote["status"] in ("queued_remote", "running"), remote
        assert remote["status"] == "running" or remote["message"] == "Waiting for worker capacity", remote
        local = post_job(client, "en04.wav", remote=None)
        assert local["executionMode"] == "local"
        done = wait_until(client, remote["id"])
        assert done["status"] == "complete", done
        # what the worker's pipeline said of it reaches the controller's job, as a local job's would
        assert set(done["guards"]) >= {"no_speech", "loops"}, done["guards"]
        assert done["warnings"] and "English-only" in done["warnings"][0], done["warnings"]
        assert done["worker"]["workerJobId"] and done["worker"]["gpu"] is False and done["worker"]["lastSeenAt"]
        assert wer(TEXTS["en03.wav"], client.get(done["outputs"]["txt"]).text) < 0.3
        assert "-->" in client.get(done["outputs"]["srt"]).text
        assert wait_until(client, local["id"])["status"] == "complete"
        runtime = client.get("/api/runtime").json()["remoteWorker"]
        assert runtime["connected"] is True and runtime["workerCapabilities"]["maxConcurrentJobs"] == 2
    (job,) = _worker_jobs(w)  # the local job never went to the worker
    assert job.id == done["worker"]["workerJobId"] and job.state is TaskState.COMPLETE
    log = _remote_log(c)
    for word in ("remote_worker_connected", "remote_dispatched", f"remote_complete: task {remote['id']}"):
        assert word in log, log


def test_worker_killed_mid_job_and_restarted_the_job_completes_once(tmp_path: Path, procs: list) -> None:
    w = _worker(tmp_path, procs)
    c = _controller(tmp_path, procs, w.url)
    with _client(c) as client:
        job = post_job(client, "long_pauses.wav")
        wait_until(client, job["id"], lambda j: j["status"] == "running" and j["progress"]["stage"] in ("decode", "vad", "transcribe"))
        w.kill(signal.SIGKILL)
        w.start().wait_ready()
        done = wait_until(client, job["id"])
        assert done["status"] == "complete" and done["attempts"] == 1, done
        assert wer(TEXTS["long_pauses.wav"], client.get(done["outputs"]["txt"]).text) < 0.3
    (worker_job,) = _worker_jobs(w)  # one job on the worker, resumed there, not sent twice
    assert worker_job.state is TaskState.COMPLETE and worker_job.attempts == 1
    assert "remote_poll_failed" in _remote_log(c)
    # its file outlived the kill (the job resumed from it) and is deleted now that the job has ended
    deadline = time.monotonic() + 30
    while list((w.state / "uploads").iterdir()):
        assert time.monotonic() < deadline, list((w.state / "uploads").iterdir())
        time.sleep(0.2)


def test_controller_killed_with_jobs_remote_restarts_and_reattaches(tmp_path: Path, procs: list) -> None:
    w = _worker(tmp_path, procs)  # one place: one job runs there, the others wait in queued_remote
    c = _controller(tmp_path, procs, w.url)
    with _client(c) as client:
        jobs = [post_job(client, name) for name in ("long_pauses.wav", "en05.wav", "en06.wav")]
        wait_until(client, jobs[0]["id"], lambda j: j["status"] == "running" and j["worker"].get("workerJobId"))
        waiting = [client.get(f"/api/jobs/{j['id']}").json() for j in jobs[1:]]
        assert [(j["status"], j["message"]) for j in waiting] == [("queued_remote", "Waiting for worker capacity")] * 2
    c.kill(signal.SIGKILL)
    c.start().wait_ready()
    with _client(c) as client:
        done = [wait_until(client, j["id"]) for j in jobs]
    assert [d["status"] for d in done] == ["complete"] * 3, done
    worker_jobs = _worker_jobs(w)
    assert len(worker_jobs) == 3 and all(t.state is TaskState.COMPLETE for t in worker_jobs), worker_jobs
    assert sorted(d["worker"]["workerJobId"] for d in done) == sorted(t.id for t in worker_jobs)
    assert f"remote_reattached: task {jobs[0]['id']}" in _remote_log(c)


def test_controller_and_worker_killed_together_the_job_waits_for_its_worker(tmp_path: Path, procs: list) -> None:
    """Both killed mid-job (a power cut), the controller back first with only the other worker answering: it must
    follow the job on its own worker (the store's record), not send it to the other one at once (found by the
    overnight rehearsal: the first worker, back, finished its own copy too, and the file was transcribed twice)."""
    w1 = _worker(tmp_path, procs)
    w2 = WorkerProcess(tmp_path / "worker2", worker_env(tmp_path))  # not up yet
    procs.append(w2)
    c = _controller(tmp_path, procs, f"{w1.url},{w2.url}")
    with _client(c) as client:
        job = post_job(client, "long_pauses.wav")
        wait_until(client, job["id"], lambda j: j["status"] == "running" and j["worker"].get("workerJobId"))
    w1.kill(signal.SIGKILL)
    c.kill(signal.SIGKILL)
    w2.start().wait_ready()
    c.start().wait_ready()
    deadline = time.monotonic() + WAIT_S
    while f"remote_reattached: task {job['id']}" not in _remote_log(c):
        assert time.monotonic() < deadline, _remote_log(c)
        time.sleep(0.2)
    time.sleep(2.0)  # a few of the controller's rounds
    assert _worker_jobs(w2) == [], "the job was sent to the other worker while its own might still have it"
    w1.start().wait_ready()
    with _client(c) as client:
        done = wait_until(client, job["id"])
    assert done["status"] == "complete" and done["worker"]["worker"] == w1.url, done
    assert [t.state for t in _worker_jobs(w1)] == [TaskState.COMPLETE] and _worker_jobs(w2) == []


def test_worker_away_jobs_wait_and_local_jobs_do_not(tmp_path: Path, procs: list) -> None:
    w = WorkerProcess(tmp_path / "worker", worker_env(tmp_path))  # not started yet: away
    c = _controller(tmp_path, procs, w.url)
    with _client(c) as client:
        remote = post_job(client, "en07.wav")
        local = post_job(client, "en08.wav", remote=None)
        assert wait_until(client, local["id"])["status"] == "complete"
        waiting = wait_until(client, remote["id"], lambda j: j["lastErrorCode"] == "REMOTE_WORKER_UNREACHABLE", 60)
        assert waiting["status"] == "queued_remote" and w.url in waiting["lastErrorMessage"]
        # a client filters by the status it sees: queued_remote, not queued or running (its store state)
        def listed(status: str) -> list[str]:
            resp = client.get("/api/jobs", params={"status": status})
            assert resp.status_code == 200, resp.text
            return [j["id"] for j in resp.json()["items"]]

        assert listed("queued_remote") == [remote["id"]]
        assert remote["id"] not in listed("queued,running") and listed("complete") == [local["id"]]
        assert set(listed("queued_remote,complete")) == set(listed(",,")) == {remote["id"], local["id"]}
        assert client.get("/api/runtime").json()["remoteWorker"]["connected"] is False
        procs.append(w.start())
        w.wait_ready()
        done = wait_until(client, remote["id"])
        assert done["status"] == "complete" and done["executionMode"] == "remote", done
        assert done["lastErrorCode"] is None
    assert "remote_worker_unreachable" in _remote_log(c)


def test_wrong_token_fails_fast_without_a_retry_loop(tmp_path: Path, procs: list) -> None:
    w = _worker(tmp_path, procs)
    c = _controller(tmp_path, procs, w.url, REMOTE_WORKER_TOKEN="not-the-worker-token")
    with _client(c) as client:
        jobs = [post_job(client, "en09.wav"), post_job(client, "en10.wav")]
        done = [wait_until(client, j["id"], timeout_s=60) for j in jobs]
        assert [(d["status"], d["lastErrorCode"]) for d in done] == [("failed", "REMOTE_WORKER_UNAUTHORIZED")] * 2
        assert all(d["attempts"] == 1 for d in done), "an unauthorized job is never retried"
        assert "REMOTE_WORKER_TOKEN" in done[0]["lastErrorMessage"]
        runtime = client.get("/api/runtime").json()["remoteWorker"]
        assert runtime["connected"] is False and runtime["workers"][0]["lastError"]["code"] == "REMOTE_WORKER_UNAUTHORIZED"
    assert _worker_jobs(w) == []
    assert "not-the-worker-token" not in c.output() + (c.state / "logs" / "scribefleet.log").read_text()
    # the worker throttles an address that keeps sending wrong tokens (it listens on 0.0.0.0 of a rented
    # server), as the controller does: every token from here now waits, the right one too; /health stays open
    for _ in range(10):  # the controller's wrong pings count too: at most 10 from this address in all
        if httpx.get(w.url + "/v1/ping", headers={"Authorization": "Bearer guess"}, timeout=10).status_code == 429:
            break
    paused = httpx.get(w.url + "/v1/ping", headers=WAUTH, timeout=10)
    assert paused.status_code == 429 and paused.json()["error"]["code"] == "TOO_MANY_ATTEMPTS", paused.text
    assert int(paused.headers["retry-after"]) > 0
    assert httpx.get(w.url + "/health", timeout=10).status_code == 200
    assert "throttling 127.0.0.1" in w.output()
    with _client(c) as client:  # a throttled controller's job still fails at once, not waiting for "capacity"
        late = wait_until(client, post_job(client, "en09.wav")["id"], timeout_s=60)
    assert (late["status"], late["lastErrorCode"], late["attempts"]) == ("failed", "REMOTE_WORKER_UNAUTHORIZED", 1)


def test_twenty_jobs_never_more_than_the_workers_places(tmp_path: Path, procs: list) -> None:
    w = _worker(tmp_path, procs, WORKER_MAX_CONCURRENT_JOBS="2")
    c = _controller(tmp_path, procs, w.url)
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.1):
            try:
                seen.append(w.ping()["activeJobs"])
            except httpx.HTTPError:
                pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        # someone else takes one of the worker's places first: the controller must meet 429s and wait
        with (DATA / "en12.wav").open("rb") as fh:
            direct = httpx.post(w.url + "/v1/jobs", headers=WAUTH, files={"file": ("en12.wav", fh)},
                                data={"options": '{"formats": ["txt"]}'}, timeout=30)  # fmt: skip
        assert direct.status_code == 201, direct.text
        with _client(c) as client:
            names = [f"en{i % 12 + 1:02d}.wav" for i in range(20)]
            jobs = [post_job(client, name) for name in names]
            done = [wait_until(client, j["id"], timeout_s=600) for j in jobs]
    finally:
        stop.set()
        watcher.join(5)
    assert [d["status"] for d in done] == ["complete"] * 20
    assert seen and max(seen) <= 2, max(seen)
    assert max(seen) == 2
    worker_jobs = _worker_jobs(w)
    assert len(worker_jobs) == 21 and all(t.state is TaskState.COMPLETE for t in worker_jobs)


def test_a_file_over_the_workers_limit_is_refused_with_a_code(tmp_path: Path, procs: list) -> None:
    big = tmp_path / "big.wav"
    with wave.open(str(big), "wb") as out:  # 3 MB of 16 kHz mono silence, over a 1 MB limit
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\0\0" * 16000 * 96)
    w = _worker(tmp_path, procs, WORKER_MAX_FILE_MB="1")
    c = _controller(tmp_path, procs, w.url)
    with _client(c) as client:
        with big.open("rb") as fh:
            up = client.post("/api/uploads", files={"file": ("big.wav", fh, "audio/wav")}).json()
        job = client.post("/api/jobs", json={"uploadId": up["uploadId"], "remote": True}).json()
        done = wait_until(client, job["id"])
    assert (done["status"], done["lastErrorCode"]) == ("failed", "REMOTE_DISPATCH_FAILED"), done
    assert "FILE_TOO_LARGE" in done["lastErrorMessage"]
    assert _worker_jobs(w) == []


def test_batch_remote_runs_on_the_worker_and_records_the_mode(tmp_path: Path, procs: list) -> None:
    w = _worker(tmp_path, procs, WORKER_MAX_CONCURRENT_JOBS="2")
    c = _controller(tmp_path, procs, w.url)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("en01.wav", "en02.wav"):
        shutil.copy(DATA / name, inbox / name)
    env = {**serve_env(tmp_path), "SCRIBEFLEET_TOKEN": TOKEN, "SCRIBEFLEET_CONTROLLER_POLL_MIN_S": "0.2",
           "SCRIBEFLEET_CONTROLLER_POLL_MAX_S": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "scribefleet.cli.main", "batch", "--input", str(inbox), "--controller", c.url,
           "--remote", "-f", "txt", "--parallel", "2", "--out", str(tmp_path / "out")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    files = json.loads((inbox / "batch_state.json").read_text())["files"]
    assert {k: (e["status"], e["executionMode"]) for k, e in files.items()} == {
        "en01.wav": ("complete", "remote"), "en02.wav": ("complete", "remote")}
    assert wer(TEXTS["en02.wav"], (tmp_path / "out" / "en02.txt").read_text()) < 0.3
    assert len(_worker_jobs(w)) == 2


def test_cancel_from_queued_remote_and_from_running(tmp_path: Path, procs: list) -> None:
    w = _worker(tmp_path, procs)  # one place
    c = _controller(tmp_path, procs, w.url)
    with _client(c) as client:
        running = post_job(client, "long_pauses.wav")
        waiting = post_job(client, "en11.wav")
        wait_until(client, running["id"], lambda j: j["status"] == "running" and j["worker"].get("workerJobId"))
        assert client.get(f"/api/jobs/{waiting['id']}").json()["status"] == "queued_remote"
        canceled = client.post(f"/api/jobs/{waiting['id']}/cancel").json()
        assert (canceled["status"], canceled["lastErrorCode"]) == ("canceled", "USER_CANCELED")
        client.post(f"/api/jobs/{running['id']}/cancel")
        done = wait_until(client, running["id"])
        assert (done["status"], done["lastErrorCode"]) == ("canceled", "USER_CANCELED")
    deadline = time.monotonic() + 60
    while (states := [t.state for t in _worker_jobs(w)]) != [TaskState.CANCELED]:
        assert time.monotonic() < deadline, states  # the worker was told; the queued one never reached it
        time.sleep(0.2)
    assert f"remote_canceled: task {running['id']}" in _remote_log(c)


def test_several_workers_the_least_loaded_gets_the_job(tmp_path: Path, procs: list) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _worker(tmp_path / "a", procs, WORKER_MAX_CONCURRENT_JOBS="2")
    b = _worker(tmp_path / "b", procs, WORKER_MAX_CONCURRENT_JOBS="2")
    c = _controller(tmp_path, procs, f"{a.url},{b.url}")
    with _client(c) as client:
        deadline = time.monotonic() + 60
        while not all(wk["connected"] for wk in client.get("/api/runtime").json()["remoteWorker"]["workers"]):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        first = post_job(client, "long_pauses.wav")
        wait_until(client, first["id"], lambda j: j["status"] == "running" and j["worker"].get("workerJobId"))
        # the first worker now holds the model and one busy place: the other, idle one is less loaded
        jobs = [first, post_job(client, "en02.wav")]
        done = [wait_until(client, j["id"]) for j in jobs]
    assert [d["status"] for d in done] == ["complete", "complete"]
    assert sorted(d["worker"]["worker"] for d in done) == sorted([a.url, b.url]), "both went to one worker"
    assert len(_worker_jobs(a)) == len(_worker_jobs(b)) == 1


def test_a_worker_that_stays_away_its_job_goes_to_another(tmp_path: Path, procs: list) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _worker(tmp_path / "a", procs)
    b = _worker(tmp_path / "b", procs)
    c = _controller(tmp_path, procs, f"{a.url},{b.url}", SCRIBEFLEET_REMOTE_WORKER_FAILOVER_S="3")
    with _client(c) as client:
        deadline = time.monotonic() + 60
        while not all(wk["connected"] for wk in client.get("/api/runtime").json()["remoteWorker"]["workers"]):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        job = post_job(client, "long_pauses.wav")
        running = wait_until(client, job["id"], lambda j: j["status"] == "running" and j["worker"].get("workerJobId"))
        lost, other = (a, b) if running["worker"]["worker"] == a.url else (b, a)
        lost.kill(signal.SIGKILL)  # and it does not come back for a while
        done = wait_until(client, job["id"])
        assert done["status"] == "complete" and done["worker"]["worker"] == other.url, done
        assert done["attempts"] == 2, "the failover is counted as an attempt"
        assert wer(TEXTS["long_pauses.wav"], client.get(done["outputs"]["txt"]).text) < 0.3
        log = _remote_log(c)
        assert f"remote_failover: task {job['id']}, worker {lost.url} has not answered" in log
        events = client.get(f"/api/jobs/{job['id']}/logs").text
        assert '"retry"' in events and "REMOTE_WORKER_UNREACHABLE" in events
        # the lost worker comes back: its copy of the job, which nobody waits for, is canceled
        lost.start().wait_ready()
        deadline = time.monotonic() + 60
        while not [t for t in _worker_jobs(lost) if t.state is TaskState.CANCELED]:
            assert time.monotonic() < deadline, _worker_jobs(lost)
            time.sleep(0.5)
    deadline = time.monotonic() + 30  # the worker stores the cancel before it answers the controller, which logs it
    while f"remote_canceled: job {running['worker']['workerJobId']} on {lost.url}" not in _remote_log(c):
        assert time.monotonic() < deadline, _remote_log(c)
        time.sleep(0.2)


def test_a_worker_named_twice_is_one_worker(tmp_path: Path, procs: list) -> None:
    w = _worker(tmp_path, procs, WORKER_MAX_CONCURRENT_JOBS="2")
    c = _controller(tmp_path, procs, f"{w.url}, {w.url}/")  # a copy-paste slip in REMOTE_WORKER_URL
    with _client(c) as client:
        deadline = time.monotonic() + 60
        while not (remote := client.get("/api/runtime").json()["remoteWorker"])["connected"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert [wk["url"] for wk in remote["workers"]] == [w.url], "its 2 places would count as 4"
        done = wait_until(client, post_job(client, "en05.wav")["id"])
    assert done["status"] == "complete" and done["worker"]["worker"] == w.url


def _two_workers(tmp_path: Path, procs: list, failover_s: int) -> tuple[WorkerProcess, WorkerProcess, ServeProcess]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _worker(tmp_path / "a", procs)
    b = _worker(tmp_path / "b", procs)
    c = _controller(tmp_path, procs, f"{a.url},{b.url}", SCRIBEFLEET_REMOTE_WORKER_FAILOVER_S=str(failover_s))
    with _client(c) as client:
        deadline = time.monotonic() + 60
        while not all(wk["connected"] for wk in client.get("/api/runtime").json()["remoteWorker"]["workers"]):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    return a, b, c


def _remote_jobs_recorded(c: ServeProcess) -> list:
    with Store.open(c.state) as store:
        return [tuple(r) for r in store._conn.execute("SELECT worker_url, worker_job_id, state FROM remote_jobs")]


def _wait_canceled_there(w: WorkerProcess, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while not [t for t in _worker_jobs(w) if t.id == job_id and t.state is TaskState.CANCELED]:
        assert time.monotonic() < deadline, _worker_jobs(w)
        time.sleep(0.5)


def test_a_restarted_controller_fails_over_when_the_first_one_would_have(tmp_path: Path, procs: list) -> None:
    # the failover clock lived in memory: a restarted controller sent the job of a lost worker to another one at once,
    # without counting it, and left the lost worker's copy to run for nobody until that worker's abandon timer
    failover_s = 8
    a, b, c = _two_workers(tmp_path, procs, failover_s)
    with _client(c) as client:
        job = post_job(client, "long_pauses.wav")
        running = wait_until(client, job["id"], lambda j: j["status"] == "running" and j["worker"].get("workerJobId"))
    lost, other = (a, b) if running["worker"]["worker"] == a.url else (b, a)
    lost.kill(signal.SIGKILL)
    deadline = time.monotonic() + 60
    while f"remote_poll_failed: task {job['id']}" not in _remote_log(c):  # the controller saw it go
        assert time.monotonic() < deadline, _remote_log(c)
        time.sleep(0.1)
    c.kill(signal.SIGKILL)  # before its failover time
    first_log = _remote_log(c)
    assert "remote_failover" not in first_log
    time.sleep(failover_s + 4)  # the controller stays down past the time it would have failed over
    c.start().wait_ready()
    with _client(c) as client:
        done = wait_until(client, job["id"])
    assert done["status"] == "complete" and done["worker"]["worker"] == other.url, done
    assert done["attempts"] == 2, "the failover is counted as an attempt"
    log = _remote_log(c)[len(first_log):]
    worker_job = running["worker"]["workerJobId"]
    assert f"remote_reattached: task {job['id']} to job {worker_job} on {lost.url}, which does not answer" in log, log
    failover = re.search(rf"remote_failover: task {job['id']}, worker {re.escape(lost.url)} has not answered for (\d+) s", log)
    assert failover and int(failover.group(1)) >= failover_s + 4, log  # counted from when the first controller saw it
    # the lost worker comes back: the restarted controller cancels the copy nobody waits for
    lost.start().wait_ready()
    _wait_canceled_there(lost, worker_job)
    deadline = time.monotonic() + 30
    while _remote_jobs_recorded(c):  # and remembers nothing more of either worker's job
        assert time.monotonic() < deadline, _remote_jobs_recorded(c)
        time.sleep(0.2)


def test_a_copy_on_a_lost_worker_is_canceled_by_a_restarted_controller(tmp_path: Path, procs: list) -> None:
    # the copies to cancel were a list in memory: after a restart, a lost worker that came back ran its copy for nobody
    a, b, c = _two_workers(tmp_path, procs, 3)
    with _client(c) as client:
        job = post_job(client, "long_pauses.wav")
        running = wait_until(client, job["id"], lambda j: j["status"] == "running" and j["worker"].get("workerJobId"))
        lost = a if running["worker"]["worker"] == a.url else b
        lost.kill(signal.SIGKILL)
        done = wait_until(client, job["id"])
    assert done["status"] == "complete" and done["attempts"] == 2, done
    c.kill(signal.SIGKILL)
    c.start().wait_ready()
    lost.start().wait_ready()
    _wait_canceled_there(lost, running["worker"]["workerJobId"])
    deadline = time.monotonic() + 30  # the worker stored the cancel before it answered the controller
    while f"remote_canceled: job {running['worker']['workerJobId']} on {lost.url}" not in _remote_log(c) or \
            _remote_jobs_recorded(c):  # and once canceled, there is nothing more to remember
        assert time.monotonic() < deadline, (_remote_log(c), _remote_jobs_recorded(c))
        time.sleep(0.2)
