"""The one-dispatcher-per-state-dir lock: an exclusive flock on STATE/dispatcher.lock.

Races are designed out, not locked around (seed 000's brain raced its own
workers): only the holder of this lock changes task state. The kernel drops
the lock when its holder dies, however it dies, so a `kill -9` leaves nothing
to clean up; the file keeps the holder's pid so the refusal can name it.
`is_held()` asks whether a live process holds it, without taking it for more
than an instant and without writing (what a read-only `status` needs).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from scribefleet.errors import StateLocked


#: how long acquire() tries again before it refuses: `is_held()` of another process holds a shared lock that long
PROBE_GRACE_S = 0.2


class PidLock:
    """An exclusive, non-blocking flock on a file that keeps its holder's pid."""

    def __init__(self, path: Path, doing: str) -> None:
        self.path = Path(path)
        self.doing = doing  # "is already running tasks from DIR": completes the refusal's sentence
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
            _flock_patiently(fd, fcntl.LOCK_EX)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateLocked(
                f"another scribefleet (pid {holder}) {self.doing}; wait for it to finish or stop it, then run again",
                pid=int(holder) if holder.isdigit() else None,
                path=str(self.path),
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def is_held(self) -> bool:
        """Whether a live process (this one included) holds the lock. Read-only: a missing file is not made
        (nobody holds it), and the probe is a shared lock of an instant, which `acquire()` waits out."""
        if self._fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # drops the probe's shared lock, if it got one
        return False

    def release(self) -> None:
        if self._fd is None:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> PidLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class DispatcherLock(PidLock):
    """The lock of the one dispatcher of a state dir: `STATE/dispatcher.lock`."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(Path(state_dir) / "dispatcher.lock", f"is already running tasks from {state_dir}")


def _flock_patiently(fd: int, kind: int) -> None:
    """flock(fd, kind) without blocking, tried again for PROBE_GRACE_S (another process's `is_held()`
    probe); BlockingIOError when it is still held then."""
    give_up = time.monotonic() + PROBE_GRACE_S
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= give_up:
                raise
            time.sleep(0.01)
