"""The engine registry: every name builds an Engine; an unknown name is a usage error."""

from __future__ import annotations

from pathlib import Path

import pytest

from scribefleet.config import Settings
from scribefleet.engines import ENGINES, make_engine
from scribefleet.engines.base import Engine, SlotSpec, SlotStatus
from scribefleet.errors import UsageError


def test_every_registered_engine_is_an_engine(tmp_path: Path, settings: Settings) -> None:
    assert set(ENGINES) == {"local", "thread"}
    for name in ENGINES:
        engine = make_engine(name, settings, tmp_path, [SlotSpec("cpu0", "cpu")])
        assert isinstance(engine, Engine) and [h.name for h in engine.slots] == ["cpu0"]
        assert engine.capacity().total == 1 and engine.slot("cpu0").status is SlotStatus.DEAD
    with pytest.raises(UsageError, match="unknown engine 'ray'; choose one of local, thread"):
        make_engine("ray", settings, tmp_path, [])
