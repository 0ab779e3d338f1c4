"""Helpers of the controller tests: settings with a token, a Service (controller + app), a `serve` process.

`ServeProcess` runs `scribefleet serve` as a child process on a free port (for
kill -9 and start-up refusals); `upload` and `wait_job` are the API calls most
tests start with. Deadlines are generous and polled: the machine is shared.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from scribefleet.config import Settings
from scribefleet.service.controller import Controller

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DATA = Path(__file__).parents[1] / "data"
WAIT_S = 240.0  # a shared 2-core machine: generous deadlines, polled, never slept out


def service_settings(base: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"api_tokens": TOKEN, "cache_dir": base / "cache", "offline": True, "cancel_poll_s": 0.2}
    return Settings(_env_file=None, **{**values, **overrides})


@dataclass
class Service:
    """A controller with its app."""

    controller: Controller
    app: FastAPI
    settings: Settings

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://testserver", **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def upload(client: httpx.AsyncClient, path: Path, name: str | None = None) -> dict[str, Any]:
    with path.open("rb") as fh:
        resp = await client.post("/api/uploads", headers=AUTH, files={"file": (name or path.name, fh, "audio/wav")})
    assert resp.status_code == 201, resp.text
    return resp.json()


async def wait_job(client: httpx.AsyncClient, job_id: str, until: Any = None, timeout_s: float = WAIT_S) -> dict[str, Any]:
    """Poll a job until `until(job)` holds (default: terminal)."""
    until = until or (lambda j: j["status"] in ("complete", "failed", "canceled", "skipped"))
    deadline = time.monotonic() + timeout_s
    while True:
        job = (await client.get(f"/api/jobs/{job_id}", headers=AUTH)).json()
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job never got there: {job}"
        await asyncio.sleep(0.1)


@dataclass
class ServeProcess:
    """`scribefleet serve` as a child process on a free port."""

    state: Path
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServeProcess:
        cmd = [sys.executable, "-m", "scribefleet.cli.main", "serve", "--state", str(self.state),
               "--port", str(self.port), "--slots", "1", "--device", "cpu", *self.args]  # fmt: skip
        self.log = (self.state.parent / f"serve-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
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
        raise AssertionError(f"serve did not answer /health: {self.output()}")

    def output(self) -> str:
        return (self.state.parent / f"serve-{self.port}.log").read_text(errors="replace")

    def wait_exit(self, timeout_s: float = 120.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout_s)
        self.log.close()
        return code

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        """Send `sig` (if still running) and reap; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(60)

    def slot_pids(self) -> list[int]:
        """Pids of the slot processes this serve started (from its log)."""
        return [int(m) for m in re.findall(r"slot \S+ starting on \S+ \(pid (\d+)", self.output())]


def serve_env(base: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRIBEFLEET_", "WORKER_", "REMOTE_WORKER_"))}
    env.update(
        {"SCRIBEFLEET_API_TOKENS": TOKEN, "XDG_CACHE_HOME": str(base / "cache"), "HF_HUB_OFFLINE": "1",
         "SCRIBEFLEET_CANCEL_POLL_S": "0.2", **extra}
    )  # fmt: skip
    return env
