"""What every engine (local, remote, Ray) offers the dispatcher, and the slot it hosts.

An engine hosts slots. The dispatcher asks it to start slots, hand a task to a
free slot, cancel a task, and tells it nothing else; the engine reports back
through `poll()` events. Only the dispatcher changes task state.
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
