"""Crash-safe files: atomic writes and JSON reads, for every layer (no numpy, no scribefleet imports but errors).

A file written here is either absent or complete, never half-written (DESIGN
invariant 3): every write goes to a temporary file in the same folder, is
fsynced, then `os.replace`d over the final name, and the folder itself is
fsynced so the rename survives a power cut. Any OSError (disk full,
permissions) becomes OutputWriteFailed.
"""

from __future__ import annotations

import contextlib
import json
import os
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


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_failed(path: Path, exc: OSError) -> OutputWriteFailed:
    return OutputWriteFailed(
        f"could not write {path} ({exc.strerror or exc}) - check free disk space and write permission on {path.parent}",
        path=str(path),
        os_error=str(exc),
    )


def make_folder(path: Path) -> Path:
    """`path` as a folder (made with its parents where missing); OutputWriteFailed where it cannot be, as for
    `--out /mnt/read-only/out` or a mount that is not there, instead of a bare OSError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(path, exc) from exc
    return path


@contextlib.contextmanager
def atomic_open(path: Path | str) -> Iterator[IO[bytes]]:
    """A binary file that appears at `path` complete, or not at all, when the block ends."""
    path = Path(path)
    tmp_name: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
