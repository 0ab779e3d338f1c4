"""Helpers of the remote-worker tests: `scribefleet worker` as a child process, beside `ServeProcess`.

Both run on loopback with the bundled tiny.en on CPU slots; the worker keeps
its port across restarts (so a controller finds it again), and its log is
appended to, so one file tells its whole life.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from service.harness import DATA, WAIT_S, ServeProcess, free_port, serve_env

WTOKEN = "worker-token-0123456789"
WAUTH = {"Authorization": f"Bearer {WTOKEN}"}


@dataclass
class WorkerProcess:
    """`scribefleet worker` as a child process on a fixed free port."""

    state: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.state.parent / f"worker-{self.port}.log"

    def start(self) -> WorkerProcess:
        cmd = [sys.executable, "-m", "scribefleet.cli.main", "worker", "--state", str(self.state),
               "--port", str(self.port), "--slots", "1", "--device", "cpu"]  # fmt: skip
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.output()
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the worker did not answer /health: {self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self, sig: int = 9) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        if self.proc is not None:
            self.proc.wait(60)

    def ping(self) -> dict[str, Any]:
        return dict(httpx.get(self.url + "/v1/ping", headers=WAUTH, timeout=10).json())


def worker_env(base: Path, **extra: str) -> dict[str, str]:
    return serve_env(base, WORKER_TOKEN=WTOKEN, WORKER_MODEL="tiny.en", **extra)


def controller_env(base: Path, worker_url: str, **extra: str) -> dict[str, str]:
    values = {"REMOTE_WORKER_URL": worker_url, "REMOTE_WORKER_TOKEN": WTOKEN, "REMOTE_WORKER_MODE": "optional",
              "REMOTE_WORKER_POLL_SECONDS": "0.2", **extra}  # fmt: skip
    return serve_env(base, **values)


def post_job(client: httpx.Client, name: str, *, remote: bool | None = True, formats: tuple[str, ...] = ("txt",),
             **options: Any) -> dict[str, Any]:
    """Upload a test file and create a job of it on the controller (`options`: more job options)."""
    with (DATA / name).open("rb") as fh:
        up = client.post("/api/uploads", files={"file": (name, fh, "audio/wav")})
    assert up.status_code == 201, up.text
    body: dict[str, Any] = {"uploadId": up.json()["uploadId"],
                            "options": {"formats": list(formats), "device": "cpu", **options}}  # fmt: skip
    if remote is not None:
        body["remote"] = remote
    resp = client.post("/api/jobs", json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def wait_until(client: httpx.Client, job_id: str, until: Any = None, timeout_s: float = WAIT_S) -> dict[str, Any]:
    until = until or (lambda j: j["status"] in ("complete", "failed", "canceled", "skipped"))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            job = client.get(f"/api/jobs/{job_id}").json()
        except httpx.HTTPError:
            job = {"status": "unreachable"}
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job never got there: {job}"
        time.sleep(0.2)


__all__ = ["ServeProcess", "WorkerProcess", "controller_env", "post_job", "wait_until", "worker_env"]
