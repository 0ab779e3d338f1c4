"""The one-dispatcher-per-state-dir lock: an exclusive flock on STATE/dispatcher.lock.

Races are designed out, not locked around (seed 000's brain raced its own
workers): only the holder of this lock changes task state. The kernel drops
the lock when its holder dies, however it dies, so a `kill -9` leaves nothing
to clean up; the file keeps the holder's pid so the refusal can name it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from scribefleet.errors import StateLocked


class DispatcherLock:
    """An exclusive, non-blocking flock on `STATE/dispatcher.lock`."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "dispatcher.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise StateLocked naming the pid that holds it."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # close-on-exec: slots never inherit it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateLocked(
                f"another scribefleet (pid {holder}) is already running tasks from {self.path.parent}; "
                "wait for it to finish or stop it, then run again",
                pid=int(holder) if holder.isdigit() else None,
                state_dir=str(self.path.parent),
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> DispatcherLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
