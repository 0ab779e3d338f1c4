"""A small fleet for dispatcher tests: a state dir, a store, a batch, real CPU slots, a log file.

Every test that takes `fleet` runs once per registered engine (local slot
processes, threads, Ray actors on the session's Ray cluster), because the dispatcher must work on any engine. A test
about slot *processes* (a SIGKILLed or SIGSTOPped slot, a slot that never
starts) or that needs a model loaded in a slot is marked
`local_only("why")` and runs on the local engine only.
"""

from __future__ import annotations

import logging
import os
import select
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scribefleet.config import Settings
from scribefleet.dispatch.dispatcher import Dispatcher
from scribefleet.dispatch.monitor import DispatchEvent
from scribefleet.engines import ENGINES, make_engine
from scribefleet.engines.base import Engine, SlotSpec
from scribefleet.logs import setup_logging
from scribefleet.store import Store, Task


@dataclass
class Fleet:
    """Shell tasks in one batch, run by a real dispatcher on real slot processes."""

    state_dir: Path
    work: Path  # the commands' working directory
    store: Store
    settings: Settings
    batch_id: str
    engine_name: str = "local"
    engine: Engine | None = None

    def add(self, key: str, run: str, **kwargs: Any) -> str:
        spec = {"run": run, "cwd": str(self.work), **kwargs.pop("spec", {})}
        return self.store.add_task(self.batch_id, key, "shell", spec, **kwargs)

    def task(self, key: str) -> Task:
        return next(t for t in self.store.tasks(self.batch_id) if t.key == key)

    def make_engine(self, slots: int = 2) -> Engine:
        specs = [SlotSpec(f"cpu{i}", "cpu") for i in range(slots)]
        self.engine = make_engine(self.engine_name, self.settings, self.state_dir, specs)
        return self.engine

    def run(self, slots: int = 2, listeners: Iterable[Callable[[DispatchEvent], None]] = ()) -> None:
        engine = self.make_engine(slots)
        try:
            Dispatcher(self.store, engine, self.settings, listeners=listeners).run(burst=True, batch_id=self.batch_id)
        finally:
            engine.stop()

    @property
    def log_text(self) -> str:
        return (self.state_dir / "logs" / "scribefleet.log").read_text()

    def wait_fifo(self, name: str, timeout_s: float = 30.0) -> str:
        """Block until a command writes a line to the FIFO `name` in the work dir (no polling)."""
        fd = os.open(self.work / name, os.O_RDONLY | os.O_NONBLOCK)
        try:
            readable, _, _ = select.select([fd], [], [], timeout_s)
            assert readable, f"nothing was written to {name} within {timeout_s} s"
            return os.read(fd, 4096).decode()
        finally:
            os.close(fd)

    def event_types(self, key: str) -> list[str]:
        return [e.type for e in self.store.events(task_id=self.task(key).id)]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "local_only(why): a dispatcher test that runs on the local engine only")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "fleet" in metafunc.fixturenames:
        names = ["local"] if metafunc.definition.get_closest_marker("local_only") else list(ENGINES)
        metafunc.parametrize("engine_name", names)


@pytest.fixture
def fleet(tmp_path: Path, settings: Settings, engine_name: str, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    if engine_name == "ray":
        request.getfixturevalue("ray_cluster")  # one cluster for the session (tests/ray_cluster.py)
    state_dir, work = tmp_path / "state", tmp_path / "work"
    work.mkdir()
    setup_logging(state_dir / "logs" / "scribefleet.log", verbose=True)
    store = Store.open(state_dir)
    batch_id = store.ensure_batch("test", "plan", {}, str(tmp_path))
    yield Fleet(state_dir, work, store, settings, batch_id, engine_name)
    store.close()
    setup_logging(None)
    logging.getLogger("scribefleet").setLevel(logging.WARNING)
