"""Crash-safe files: atomic writes and JSON reads, for every layer (no numpy, no scribefleet imports but errors).

A file written here is either absent or complete, never half-written (DESIGN
invariant 3): every write goes to a temporary file in the same folder, is
fsynced, then `os.replace`d over the final name, and the folder itself is
fsynced so the rename survives a power cut. Any OSError (disk full,
permissions) becomes OutputWriteFailed, and so does a folder that cannot be
made (`make_dir`: a file in its place, a read-only disk).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from scribefleet.errors import OutputWriteFailed


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; outputs should get the permissions any new file would
_FILE_MODE = 0o666 & ~_read_umask()

#: bytes of the final name kept in a temporary file's name: with the dot, mkstemp's 8 random characters and
#: ".tmp" it stays under NAME_MAX (255 bytes), however long the final name is
_TMP_NAME_BYTES = 200


def _tmp_prefix(name: str) -> str:
    short = name.encode("utf-8", "surrogateescape")[:_TMP_NAME_BYTES].decode("utf-8", "ignore")
    return f".{short}."


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_space(path: Path) -> tuple[int, int] | None:
    """(free bytes for an unprivileged writer, size in bytes) of the disk holding `path`, read at its nearest
    existing folder; None when that cannot be told (no folder of it is readable, or a file system that tells
    no sizes, as some FUSE mounts)."""
    for folder in (path, *path.parents):
        try:
            disk = os.statvfs(folder)
        except OSError:
            continue
        size = disk.f_blocks * disk.f_frsize
        return (disk.f_bavail * disk.f_frsize, size) if size else None
    return None


def out_of_space(exc: OSError) -> bool:
    """Whether a write failed for want of space: ENOSPC, EDQUOT, or a short write (numpy's "467673 requested
    and 440256 written" carries no errno)."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT) or (
        exc.errno is None and re.fullmatch(r"\d+ requested and \d+ written", str(exc)) is not None
    )


def write_failed(path: Path, exc: OSError) -> OutputWriteFailed:
    """OUTPUT_WRITE_FAILED for `path`; `disk_full` in its details when the disk had no room (the dispatcher then
    waits for space instead of failing the task: dispatch/space.py)."""
    return OutputWriteFailed(
        f"could not write {path} ({exc.strerror or exc}) - check free disk space and write permission on {path.parent}",
        path=str(path),
        os_error=str(exc),
        **({"disk_full": True} if out_of_space(exc) else {}),
    )


def make_dir(folder: Path | str) -> Path:
    """`folder` and its parents, created where missing; OutputWriteFailed when it cannot be a folder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteFailed(
            f"could not create the folder {folder} ({exc.strerror or exc}) - choose an output folder that is "
            "not a file, on a disk that is writable and has free space",
            path=str(folder),
            os_error=str(exc),
        ) from exc
    return folder


@contextlib.contextmanager
def atomic_open(path: Path | str) -> Iterator[IO[bytes]]:
    """A binary file that appears at `path` complete, or not at all, when the block ends."""
    path = Path(path)
    tmp_name: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=_tmp_prefix(path.name), suffix=".tmp", dir=path.parent)
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
        fsync_dir(path.parent)
    except OSError as exc:
        raise write_failed(path, exc) from exc
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path) as fh:
        fh.write(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, value: Any) -> None:
    """Write `value` as UTF-8 JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(value, ensure_ascii=False))


def read_json(path: Path | str) -> Any | None:
    """The JSON value stored at `path`, or None when there is no such file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
