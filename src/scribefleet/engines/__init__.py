"""Engines host the slots that run tasks; `base.py` says what every engine must do.

`ENGINES` maps an engine's name to its factory, `(settings, state_dir,
slots) -> Engine`; `make_engine` builds one by name. Each factory imports its
engine when called, so naming one never loads the others.

    local   one slot process per slot on this machine (the default)
    thread  slots as threads of this process; runs shell and noop tasks
    ray     one Ray actor per slot on a Ray cluster (the `ray` extra); with no
            slots given it uses every GPU of the cluster, else a CPU slot per node
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from scribefleet.config import Settings
from scribefleet.engines.base import Engine, SlotSpec
from scribefleet.errors import FeatureUnavailable, UsageError

EngineFactory = Callable[[Settings, Path, list[SlotSpec]], Engine]


def _local(settings: Settings, state_dir: Path, slots: list[SlotSpec]) -> Engine:
    from scribefleet.engines.local import LocalEngine

    return LocalEngine(settings, state_dir, slots)


def _thread(settings: Settings, state_dir: Path, slots: list[SlotSpec]) -> Engine:
    from scribefleet.engines.thread import ThreadEngine

    return ThreadEngine(settings, state_dir, slots)


def _ray(settings: Settings, state_dir: Path, slots: list[SlotSpec]) -> Engine:
    try:
        from scribefleet.engines.ray import RayEngine
    except ImportError as exc:
        raise FeatureUnavailable(
            f"the ray engine needs Ray, which is not installed ({exc}); "
            "install it with: pip install 'scribefleet[ray]'",
            engine="ray",
        ) from exc
    return RayEngine(settings, state_dir, slots)


ENGINES: dict[str, EngineFactory] = {"local": _local, "thread": _thread, "ray": _ray}


def make_engine(name: str, settings: Settings, state_dir: Path, slots: list[SlotSpec]) -> Engine:
    """The engine registered as `name`, hosting `slots` for the state dir."""
    factory = ENGINES.get(name)
    if factory is None:
        raise UsageError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    return factory(settings, state_dir, slots)


__all__ = ["ENGINES", "Engine", "EngineFactory", "SlotSpec", "make_engine"]
