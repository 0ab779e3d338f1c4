"""The audio checkpoint and the per-window log; the atomic writes themselves live in `scribefleet.fsio`.

A checkpoint or output is either absent or complete, never half-written
(DESIGN invariant 3): see `scribefleet.fsio` (re-exported here for the
pipeline's modules).

`WindowLog` is the one append-only file: one JSON line per finished window of
a long transcription. A crash can tear its last line; `read()` ignores a torn
line and the next `append()` cuts it off before writing.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from scribefleet.errors import OutputWriteFailed
from scribefleet.fsio import (
    atomic_open, atomic_write_bytes, atomic_write_json, atomic_write_text, disk_space, read_json,
)
from scribefleet.fsio import write_failed as _write_failed
from scribefleet.pipeline.media import PCM16_SCALE, Samples, pcm16_to_float

__all__ = [
    "WindowLog", "atomic_open", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "load_samples",
    "quantize_audio", "read_json", "save_audio",
]


def quantize_audio(audio: np.ndarray) -> np.ndarray:
    """float32 samples -> int16, the checkpoint format (half the size, loss far below what ASR hears)."""
    return np.clip(np.rint(audio * PCM16_SCALE), -PCM16_SCALE, PCM16_SCALE - 1).astype(np.int16)


#: the most room the audio checkpoint leaves for the store, logs and outputs (a tenth of a smaller disk)
RESERVE_MAX_BYTES = 32 * 1024 * 1024
#: one audio checkpoint written at a time in a process (a slot's group decodes several files at once): the
#: room is looked at and taken in one step
_ROOM = threading.Lock()


def save_audio(path: Path | str, audio: np.ndarray) -> None:
    """Store float32 samples (or int16 ones, already quantized) as an int16 .npy atomically.

    The largest file a job writes (230 MB for two hours), and written while other jobs write theirs: it is
    not written when it would leave the disk less than its reserve (RESERVE_MAX_BYTES, a tenth of a smaller
    disk), so the store, logs and outputs never meet a disk filled to the last byte by a checkpoint. The job
    then fails with OUTPUT_WRITE_FAILED `disk_full`, which the dispatcher waits out (dispatch/space.py).
    """
    samples = audio if audio.dtype == np.int16 else quantize_audio(audio)
    with _ROOM:
        _check_room(Path(path), samples.nbytes + 128)  # 128: the .npy header
        with atomic_open(path) as fh:
            np.save(fh, samples, allow_pickle=False)


def _check_room(path: Path, needed: int) -> None:
    space = disk_space(path.parent)
    if space is None:  # not to be told (some FUSE mounts): the write says for itself
        return
    free, size = space
    reserve = min(RESERVE_MAX_BYTES, size // 10)
    if free - needed < reserve:
        mb = 1024 * 1024
        raise OutputWriteFailed(
            f"no room for {path} ({needed / mb:.1f} MB): {free / mb:.1f} MB are free on its disk, and "
            f"{reserve / mb:.1f} MB stay for the store, logs and outputs - free disk space",
            path=str(path), disk_full=True, needed_bytes=needed, free_bytes=free,
        )  # fmt: skip


def load_samples(path: Path | str) -> Samples:
    """Read an audio checkpoint back as its 16-bit samples (read as float32 slice by slice)."""
    return Samples(np.load(Path(path), allow_pickle=False))


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
