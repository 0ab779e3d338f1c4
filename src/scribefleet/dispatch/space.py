"""Waiting out a full disk instead of failing every file on it.

A task whose write failed for want of space (OUTPUT_WRITE_FAILED with
`disk_full` in its details: fsio.write_failed) is not at fault: the next one
would fail the same way, and a night's batch on a filling disk ended with
every file failed in minutes. Several files decoding at once can also fill a
disk that each alone fits in (a job deletes its decoded audio once
transcribed). So the dispatcher puts such a task back in the queue, its
attempt not counted, and starts nothing new until the wait clears: a task
ends (its checkpoints may have freed room), or the disk has MARGIN_BYTES more
free than when the write failed (someone freed space). Once nothing runs, one
waiting task is tried alone (`lone_try`): the others' writes may have been what
filled the disk. Should it find no room either, a burst run (`transcribe`,
`plan run`) stops with OUTPUT_WRITE_FAILED, its queued tasks kept for the next
run; a controller waits for space, and says so as the reason its queued jobs
wait.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scribefleet.fsio import disk_space

#: free space, over what the disk had when the write failed, that ends the wait by itself
MARGIN_BYTES = 64 * 1024 * 1024


def is_disk_full(code: str, details: dict[str, Any]) -> bool:
    """Whether a task's failure is a write that found no room (not the task's fault)."""
    return code == "OUTPUT_WRITE_FAILED" and bool(details.get("disk_full"))


def free_bytes(path: Path) -> int | None:
    """Free bytes for an unprivileged writer on the disk of `path`; None if unknown."""
    space = disk_space(path)
    return None if space is None else space[0]


def disk_of(path: Path) -> Path:
    """Where the disk holding `path` is mounted (the topmost folder above it on the same device)."""
    folders = [f for f in (path, *path.parents) if f.exists()]
    if not folders:
        return path
    device, top = folders[0].stat().st_dev, folders[0]
    for folder in folders[1:]:
        if folder.stat().st_dev != device:
            break
        top = folder
    return top


@dataclass
class SpaceWait:
    """The disk of `path` had no room for a task's write: nothing new starts until `cleared()`."""

    path: Path
    message: str  # the failed write's own words
    lone_try: int = 0  # 0: not yet; 1: one task may start alone (nothing runs); 2: it found no room either
    free_at: int | None = field(default=None)

    def __post_init__(self) -> None:
        if self.free_at is None:
            self.free_at = free_bytes(self.path)

    def room(self) -> str:
        """The disk's free space now, in words ("0.8 MB free")."""
        free = free_bytes(self.path)
        return f"{free / 2**20:.1f} MB free" if free is not None else "free space unknown"

    def cleared(self) -> bool:
        """Whether the disk has MARGIN_BYTES more room than when the write failed."""
        free = free_bytes(self.path)
        return free is not None and self.free_at is not None and free >= self.free_at + MARGIN_BYTES

    def describe(self) -> str:
        return f"the disk of {disk_of(self.path)} is full ({self.room()})"
