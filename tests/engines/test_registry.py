"""The engine registry: every name builds an Engine; an unknown name is a usage error; ray needs its extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scribefleet.config import Settings
from scribefleet.engines import ENGINES, make_engine
from scribefleet.engines.base import Engine, SlotSpec, SlotStatus
from scribefleet.errors import FeatureUnavailable, UsageError


def test_every_registered_engine_is_an_engine(tmp_path: Path, settings: Settings) -> None:
    assert set(ENGINES) == {"local", "thread", "ray"}
    for name in ENGINES:
        engine = make_engine(name, settings, tmp_path, [SlotSpec("cpu0", "cpu")])
        assert isinstance(engine, Engine) and [h.name for h in engine.slots] == ["cpu0"]
        assert engine.capacity().total == 1 and engine.slot("cpu0").status is SlotStatus.DEAD
    with pytest.raises(UsageError, match="unknown engine 'rayy'; choose one of local, thread, ray"):
        make_engine("rayy", settings, tmp_path, [])


def test_the_engine_is_chosen_by_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIBEFLEET_ENGINE", "ray")
    monkeypatch.setenv("SCRIBEFLEET_RAY_ADDRESS", "local")
    settings = Settings(_env_file=None)
    assert (settings.engine, settings.ray_address) == ("ray", "local")
    assert type(make_engine(settings.engine, settings, tmp_path, [])).__name__ == "RayEngine"
    assert Settings(_env_file=None, engine="local").engine == "local"


def test_without_the_ray_extra_the_ray_engine_is_refused_with_the_install_command(tmp_path: Path, settings: Settings) -> None:
    # a fresh interpreter in which `import ray` fails, as where the extra is not installed
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from pathlib import Path\n"
        "from scribefleet.config import Settings\n"
        "from scribefleet.engines import make_engine\n"
        "from scribefleet.errors import ScribefleetError\n"
        "try:\n"
        "    make_engine('ray', Settings(_env_file=None), Path('.'), [])\n"
        "except ScribefleetError as err:\n"
        "    print(err.code, err.message)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.startswith(f"{FeatureUnavailable.code} the ray engine needs Ray")
    assert "pip install 'scribefleet[ray]'" in out
