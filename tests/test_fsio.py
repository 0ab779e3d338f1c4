"""Atomic writes of the ground floor: complete or absent, never half; no numpy dragged in."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from scribefleet import fsio
from scribefleet.errors import OutputWriteFailed


def test_fsio_imports_no_numpy() -> None:
    code = "import sys, scribefleet.fsio, scribefleet.client; print('numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_atomic_writes_create_parents_and_leave_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "out.srt"
    fsio.atomic_write_text(target, "1\nhéllo\n")
    fsio.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    fsio.atomic_write_json(tmp_path / "v.json", {"text": "naïve ☕", "n": [1, 2]})
    assert target.read_text(encoding="utf-8") == "1\nhéllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert fsio.read_json(tmp_path / "v.json") == {"text": "naïve ☕", "n": [1, 2]}
    assert "naïve ☕" in (tmp_path / "v.json").read_text(encoding="utf-8")  # UTF-8, not \\u escapes
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.srt"]
    # outputs get the mode any new file gets (umask), not the 0600 of a raw temp file
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "t.txt"
    fsio.atomic_write_text(target, "x" * 10_000)
    fsio.atomic_write_text(target, "short")
    assert target.read_text() == "short"


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "keep.json"
    fsio.atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with fsio.atomic_open(target) as fh:
            fh.write(b'{"v": 2, "half')
            raise RuntimeError("killed mid-write")
    assert fsio.read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]


def test_unwritable_target_is_output_write_failed(tmp_path: Path) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("in the way")
    with pytest.raises(OutputWriteFailed) as info:
        fsio.atomic_write_text(blocker / "sub" / "out.srt", "x")
    assert info.value.code == "OUTPUT_WRITE_FAILED"
    assert "out.srt" in info.value.message and "permission" in info.value.message


def test_read_json_of_missing_file_is_none(tmp_path: Path) -> None:
    assert fsio.read_json(tmp_path / "nothing.json") is None


def test_checkpoint_re_exports_the_same_functions() -> None:
    from scribefleet.pipeline import checkpoint

    assert checkpoint.atomic_write_json is fsio.atomic_write_json and checkpoint.read_json is fsio.read_json
