"""pipeline/checkpoint.py: the audio checkpoint and the torn-line-tolerant window log (atomic files: tests/test_fsio.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from scribefleet.pipeline import checkpoint
from scribefleet.pipeline.checkpoint import WindowLog


def test_audio_round_trip_is_int16_on_disk(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    audio = np.clip(rng.normal(0, 0.3, 16000), -1.2, 1.2).astype(np.float32)
    path = tmp_path / "audio.npy"
    checkpoint.save_audio(path, audio)
    assert np.load(path).dtype == np.int16
    assert path.stat().st_size < audio.nbytes * 0.6  # half of float32, plus the .npy header
    back = np.asarray(checkpoint.load_samples(path))
    assert back.dtype == np.float32 and back.shape == audio.shape
    assert np.max(np.abs(back - np.clip(audio, -1, 1))) <= 1 / 32767
    # loading is idempotent: quantizing what was loaded gives the same samples
    checkpoint.save_audio(path, back)
    assert np.array_equal(np.asarray(checkpoint.load_samples(path)), back)


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
