"""The spread plan and its claims (pipeline/spread.py); slots decoding one file together: tests/dispatch/test_spread.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scribefleet.options import TranscribeOptions
from scribefleet.pipeline.asr import Window
from scribefleet.pipeline.checkpoint import save_audio
from scribefleet.pipeline.spread import MIN_WINDOW_S, SpreadDir, help_spread, spread_windows, window_audio


def _speech_every(period_s: float, duration_s: float) -> list[tuple[float, float]]:
    """Speech with a 1 s pause every `period_s` seconds."""
    return [(t + 1.0, min(t + period_s, duration_s)) for t in np.arange(0.0, duration_s, period_s)]


def test_a_plan_gives_each_slot_about_three_windows_and_leaves_no_sliver() -> None:
    duration_s = 1205.6
    ranges = _speech_every(9.0, duration_s)
    for slots, expected in ((2, 6), (4, 12), (8, 20)):
        windows = spread_windows(duration_s, ranges, slots, window_s=600.0)
        assert windows[0].start_s == 0.0 and windows[-1].end_s == duration_s
        assert all(a.end_s == b.start_s for a, b in zip(windows, windows[1:])), "contiguous"
        assert [w.index for w in windows] == list(range(len(windows)))
        assert abs(len(windows) - expected) <= 2, (slots, len(windows))
        assert min(w.end_s - w.start_s for w in windows) >= MIN_WINDOW_S / 2
        assert max(w.end_s - w.start_s for w in windows) <= 600.0 * 1.5
    assert len(spread_windows(100.0, _speech_every(9.0, 100.0), 8, window_s=600.0)) <= 2, "never below ~60 s"


def test_a_window_is_held_by_one_claim_at_a_time_and_gone_claims_hold_nothing(tmp_path: Path) -> None:
    files = SpreadDir(tmp_path)
    files.write_plan([Window(0, 0.0, 60.0), Window(1, 60.0, 120.0)], None)
    with files.claim(0) as first:
        with files.claim(0) as second, files.claim(1) as other:
            assert (first, second, other) == (True, False, True)
    with files.claim(0) as again:
        assert again, "closing the claim let go of the lock"
    files.tidy()
    with files.claim(0) as after:
        assert not after


def test_a_helper_takes_nothing_when_every_window_is_finished(tmp_path: Path) -> None:
    files = SpreadDir(tmp_path)
    files.write_plan([Window(0, 0.0, 60.0), Window(1, 60.0, 120.0)], None)
    for index in (0, 1):
        files.append({"index": index, "start_s": 60.0 * index, "end_s": 60.0 * (index + 1), "segments": []})

    def no_model() -> None:
        raise AssertionError("no window left: the model is never loaded")

    got = help_spread(no_model, TranscribeOptions(), work_dir=tmp_path, slot_name="cpu1")
    assert got == {"window": None, "windows": 2}


def test_a_helper_reads_only_its_windows_samples(tmp_path: Path) -> None:
    audio = np.linspace(-0.5, 0.5, 16000 * 10, dtype=np.float32)
    save_audio(tmp_path / "audio.npy", audio)
    samples = np.load(tmp_path / "audio.npy", mmap_mode="r")
    got = window_audio(samples, Window(1, 2.0, 3.5))
    assert got.shape == audio.shape and got.dtype == np.float32
    assert np.allclose(got[32000:56000], audio[32000:56000], atol=1e-4)
    assert not got[:32000].any() and not got[56000:].any()
