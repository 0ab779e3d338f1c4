"""Crash-safe files: atomic writes, the audio checkpoint and the per-window log.

A checkpoint or output is either absent or complete, never half-written
(DESIGN invariant 3): every write goes to a temporary file in the same folder,
is fsynced, then `os.replace`d over the final name, and the folder itself is
fsynced so the rename survives a power cut. Any OSError (disk full,
permissions) becomes OutputWriteFailed.

`WindowLog` is the one append-only file: one JSON line per finished window of
a long transcription. A crash can tear its last line; `read()` ignores a torn
line and the next `append()` cuts it off before writing.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from scribefleet.errors import OutputWriteFailed

_INT16_SCALE = 32767.0


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; outputs should get the permissions any new file would
_FILE_MODE = 0o666 & ~_read_umask()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_failed(path: Path, exc: OSError) -> OutputWriteFailed:
    return OutputWriteFailed(
        f"could not write {path} ({exc.strerror or exc}) - check free disk space and write permission on {path.parent}",
        path=str(path),
        os_error=str(exc),
    )


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
        _fsync_dir(path.parent)
    except OSError as exc:
        raise _write_failed(path, exc) from exc
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


def quantize_audio(audio: np.ndarray) -> np.ndarray:
    """float32 samples -> int16, the checkpoint format (half the size, loss far below what ASR hears)."""
    return np.round(np.clip(audio, -1.0, 1.0) * _INT16_SCALE).astype(np.int16)


def dequantize_audio(samples: np.ndarray) -> np.ndarray:
    """int16 samples -> float32 in [-1, 1]."""
    return samples.astype(np.float32) / _INT16_SCALE


def save_audio(path: Path | str, audio: np.ndarray) -> None:
    """Store float32 samples (or int16 ones, already quantized) as an int16 .npy atomically."""
    samples = audio if audio.dtype == np.int16 else quantize_audio(audio)
    with atomic_open(path) as fh:
        np.save(fh, samples, allow_pickle=False)


def load_audio(path: Path | str) -> np.ndarray:
    """Read an audio checkpoint back as float32."""
    return dequantize_audio(np.load(Path(path), allow_pickle=False))


class WindowLog:
    """Append-only JSON-lines log of finished transcription windows."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._repaired = False

    def read(self) -> list[dict[str, Any]]:
        """Every complete record, in order; a torn last line (crash mid-append) is ignored."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return _complete_records(raw)[0]

    def append(self, record: dict[str, Any]) -> None:
        """Add one record durably (flushed and fsynced before returning)."""
        line = json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self._repaired:
                self._cut_torn_tail()
                self._repaired = True
            with self.path.open("ab") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise _write_failed(self.path, exc) from exc

    def clear(self) -> None:
        """Forget every record (the windows no longer match the audio or options)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._repaired = True

    def _cut_torn_tail(self) -> None:
        """Truncate after the last good line, so a new line never glues onto a torn one."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        good_bytes = _complete_records(raw)[1]
        if good_bytes != len(raw):
            with self.path.open("r+b") as fh:
                fh.truncate(good_bytes)
                fh.flush()
                os.fsync(fh.fileno())


def _complete_records(raw: bytes) -> tuple[list[dict[str, Any]], int]:
    """Records of the lines that were fully written (newline included), and their byte length."""
    records: list[dict[str, Any]] = []
    good_bytes = 0
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # the newline is written last: without it the line may be cut short
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                break  # only the tail can be torn; nothing after it was acknowledged
        good_bytes += len(line)
    return records, good_bytes
