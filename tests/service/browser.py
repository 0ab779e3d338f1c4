"""Harness of the web UI tests: a real controller on loopback and a real headless Chromium.

`controller` starts `scribefleet serve` as its own process (one CPU slot, a
token, a fresh state folder, a free port) and waits until `/health` answers;
`browser` is Debian's Chromium (`/usr/bin/chromium`, installed by `make
test`) driven by the Python `playwright` package with a fresh profile, no
network beyond loopback and no browser download. `wait_until` polls a page
condition with a generous deadline, so a slow 2-core machine is waited for,
never slept for.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: how long a page condition may take on a slow, shared 2-core machine
PAGE_WAIT_S = 240.0
START_WAIT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningController:
    """A `scribefleet serve` process: where it listens, its token, its state folder, its log."""

    url: str
    token: str
    state_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self) -> httpx.Client:
        """An API client with the bearer token (for checks the browser does not make)."""
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)


def start_controller(tmp: Path, *, token: str, slots: int = 1) -> RunningController:
    port = free_port()
    state = tmp / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRIBEFLEET_", "WORKER_", "REMOTE_WORKER_"))}
    env.update(
        SCRIBEFLEET_API_TOKENS=token,
        SCRIBEFLEET_STATE_DIR=str(state),
        SCRIBEFLEET_HOST="127.0.0.1",
        SCRIBEFLEET_PORT=str(port),
        SCRIBEFLEET_CACHE_DIR=str(tmp / "cache"),
        HF_HUB_OFFLINE="1",
        SCRIBEFLEET_CANCEL_POLL_S="0.2",
        SCRIBEFLEET_URL_ALLOWLIST='["127.0.0.1"]',  # the URL tests serve media on loopback
        PYTHONUNBUFFERED="1",
    )
    log_path = tmp / "controller.log"
    cmd = [sys.executable, "-m", "scribefleet.cli.main", "serve", "--slots", str(slots), "--device", "cpu"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = RunningController(f"http://127.0.0.1:{port}", token, state, log_path, proc)
    deadline = time.monotonic() + START_WAIT_S
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the controller exited with {proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_controller(server)
            raise AssertionError(f"the controller did not answer /health in {START_WAIT_S:.0f} s:\n{server.log()}")
        time.sleep(0.2)


def stop_controller(server: RunningController) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=30)


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningController]:
    server = start_controller(tmp_path_factory.mktemp("controller"), token="ui-test-token-" + os.urandom(6).hex())
    try:
        yield server
    finally:
        stop_controller(server)


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")
    with sync_api.sync_playwright() as driver:
        yield driver


@pytest.fixture
def browser(playwright_driver: Any, tmp_path: Path) -> Iterator[Any]:
    """A fresh Chromium profile (persistent context), downloads accepted, nothing off loopback."""
    profile = tmp_path / "chromium-profile"
    context = playwright_driver.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(CHROMIUM),
        args=CHROMIUM_ARGS,
        headless=True,
        accept_downloads=True,
        viewport={"width": 1200, "height": 900},
    )
    context.set_default_timeout(PAGE_WAIT_S * 1000)
    try:
        yield context
    finally:
        context.close()
        shutil.rmtree(profile, ignore_errors=True)


def wait_until(condition: Callable[[], Any], what: str, timeout_s: float = PAGE_WAIT_S, every_s: float = 0.25) -> Any:
    """Polls `condition` until it returns something truthy; fails with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")
