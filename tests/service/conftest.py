"""Fixtures of the controller tests: an idle controller, a running one, a real uvicorn.

`idle` is a controller whose dispatcher never starts (jobs stay queued): for
auth, uploads, validation and cancel-while-queued. `running` is one started
controller per test session (one CPU slot with the bundled tiny.en, warm
after its first job), reached in process through httpx's ASGITransport;
`live` serves the same controller on a real uvicorn on 127.0.0.1 in a thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from scribefleet.service.app import create_app
from scribefleet.service.controller import Controller
from service.harness import Service, free_port, service_settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def idle(tmp_path: Path) -> Iterator[Service]:
    settings = service_settings(tmp_path, max_file_mb=10)
    controller = Controller(settings, tmp_path / "state", slots=1, device="cpu")
    yield Service(controller, create_app(controller, settings), settings)
    controller.stop()


@pytest.fixture(scope="session")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    base = tmp_path_factory.mktemp("running")
    settings = service_settings(base, max_file_mb=20)
    controller = Controller(settings, base / "state", slots=1, device="cpu")
    controller.start()
    yield Service(controller, create_app(controller, settings), settings)
    controller.stop()


@pytest.fixture(scope="session")
def live(running: Service) -> Iterator[str]:
    """The running controller on a real uvicorn on loopback; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(running.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
async def running_client(running: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with running.client() as client:
        yield client
