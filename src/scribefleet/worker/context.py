"""TaskContext: what a task kind's handler may use of the slot running it (kinds.py re-exports it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scribefleet.config import Settings

ProgressFn = Callable[[str, float, "dict[str, Any] | None"], None]


@dataclass
class TaskContext:
    """What a handler may use of the slot running it."""

    task_id: str
    slot_name: str
    device: str  # "cpu" | "cuda"
    cpu_threads: int
    log_path: Path
    settings: Settings
    progress: ProgressFn
    attempt: int = 1
    own_process_group: bool = False  # commands lead their own group (the slot is no process of its own)
    _models: Callable[[], Any] = field(default=lambda: None, repr=False)

    @property
    def models(self) -> Any:
        """The slot's ModelCache (created on first use, kept across tasks)."""
        return self._models()
