"""SlotSpec: one slot to start, as the hardware plan (worker/hardware.py) makes it and every engine takes it.

It lives in worker/, below engines/, so that planning slots from the hardware
needs nothing from the engines; `scribefleet.engines.base` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class SlotSpec:
    """One slot to start: a name, a device and how many CPU threads it may use."""

    name: str  # "gpu0", "cpu0", ...
    device: Literal["cpu", "cuda"]
    gpu_index: int | None = None  # physical index (nvidia-smi order) for cuda slots
    cpu_threads: int = 1
    labels: frozenset[str] = field(default_factory=frozenset)  # "gpu" | "cpu" resources it satisfies

    @property
    def resource(self) -> str:
        return "gpu" if self.device == "cuda" else "cpu"
