"""pipeline/checkpoint.py: atomic files, the audio checkpoint and the torn-line-tolerant window log."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from scribefleet.errors import OutputWriteFailed
from scribefleet.pipeline import checkpoint
from scribefleet.pipeline.checkpoint import WindowLog


def test_atomic_writes_create_parents_and_leave_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "out.srt"
    checkpoint.atomic_write_text(target, "1\nhéllo\n")
    checkpoint.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    checkpoint.atomic_write_json(tmp_path / "v.json", {"text": "naïve ☕", "n": [1, 2]})
    assert target.read_text(encoding="utf-8") == "1\nhéllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert checkpoint.read_json(tmp_path / "v.json") == {"text": "naïve ☕", "n": [1, 2]}
    assert "naïve ☕" in (tmp_path / "v.json").read_text(encoding="utf-8")  # UTF-8, not \\u escapes
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.srt"]
    # outputs get the mode any new file gets (umask), not the 0600 of a raw temp file
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "t.txt"
    checkpoint.atomic_write_text(target, "x" * 10_000)
    checkpoint.atomic_write_text(target, "short")
    assert target.read_text() == "short"


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "keep.json"
    checkpoint.atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with checkpoint.atomic_open(target) as fh:
            fh.write(b'{"v": 2, "half')
            raise RuntimeError("killed mid-write")
    assert checkpoint.read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]


def test_unwritable_target_is_output_write_failed(tmp_path: Path) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("in the way")
    with pytest.raises(OutputWriteFailed) as info:
        checkpoint.atomic_write_text(blocker / "sub" / "out.srt", "x")
    assert info.value.code == "OUTPUT_WRITE_FAILED"
    assert "out.srt" in info.value.message and "permission" in info.value.message


def test_read_json_of_missing_file_is_none(tmp_path: Path) -> None:
    assert checkpoint.read_json(tmp_path / "nothing.json") is None


def test_audio_round_trip_is_int16_on_disk(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    audio = np.clip(rng.normal(0, 0.3, 16000), -1.2, 1.2).astype(np.float32)
    path = tmp_path / "audio.npy"
    checkpoint.save_audio(path, audio)
    assert np.load(path).dtype == np.int16
    assert path.stat().st_size < audio.nbytes * 0.6  # half of float32, plus the .npy header
    back = checkpoint.load_audio(path)
    assert back.dtype == np.float32 and back.shape == audio.shape
    assert np.max(np.abs(back - np.clip(audio, -1, 1))) <= 1 / 32767
    # loading is idempotent: quantizing what was loaded gives the same samples
    checkpoint.save_audio(path, back)
    assert np.array_equal(checkpoint.load_audio(path), back)


def test_window_log_appends_and_reads_back(tmp_path: Path) -> None:
    log = WindowLog(tmp_path / "w" / "windows.jsonl")
    assert log.read() == []
    log.append({"index": 0, "text": "première"})
    log.append({"index": 1, "text": "second"})
    assert [r["index"] for r in WindowLog(log.path).read()] == [0, 1]
    log.clear()
    assert log.read() == [] and not log.path.exists()


def test_window_log_ignores_and_then_cuts_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "windows.jsonl"
    WindowLog(path).append({"index": 0})
    with path.open("ab") as fh:
        fh.write(b'{"index": 1, "segm')  # crash in the middle of an append
    assert WindowLog(path).read() == [{"index": 0}]
    log = WindowLog(path)
    log.append({"index": 1})
    assert log.read() == [{"index": 0}, {"index": 1}]
    assert path.read_text().splitlines() == ['{"index": 0}', '{"index": 1}']


def test_window_log_line_without_newline_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b'{"index": 0}\n{"index": 1}')  # valid JSON but the newline never made it
    assert WindowLog(path).read() == [{"index": 0}]
    log = WindowLog(path)
    log.append({"index": 1, "again": True})
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"index": 0}, {"index": 1, "again": True}]
