"""pipeline/asr.py: window planning, batched clips, and real transcription quality in both modes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import DATA, TEXTS, wer
from scribefleet.options import TranscribeOptions
from scribefleet.pipeline.asr import Window, batch_clips, plan_windows, transcribe_windows
from scribefleet.pipeline.checkpoint import WindowLog
from scribefleet.pipeline.media import SAMPLE_RATE, decode_audio
from scribefleet.pipeline.models import ModelCache, ResolvedModel
from scribefleet.pipeline.vad import speech_ranges

BATCHED = TranscribeOptions(batch_size=8)
SEQUENTIAL = TranscribeOptions(batch_size=1)


@pytest.fixture(scope="module")
def model(models: ModelCache, model_path: Path) -> Any:
    return models.get(ResolvedModel(model_path, "tiny.en"), device="cpu", compute_type="auto", cpu_threads=2)


def transcribe(model: Any, audio: np.ndarray, options: TranscribeOptions, tmp_path: Path, **kw: Any) -> dict:
    ranges = speech_ranges(audio, batched=options.is_batched)
    log = WindowLog(tmp_path / f"windows-{options.batch_size}-{kw.get('window_s', 600)}.jsonl")
    return transcribe_windows(model, audio, ranges, options, window_s=kw.pop("window_s", 600), log=log, **kw)


# ---- planning (no model) ----


def test_short_audio_is_one_window() -> None:
    assert plan_windows(42.0, [(1.0, 40.0)], 600) == [Window(0, 0.0, 42.0)]


def test_windows_cut_in_silence_near_the_target() -> None:
    # speech everywhere except short gaps at 27-28 s and 58.5-59.5 s
    ranges = [(0.0, 27.0), (28.0, 58.5), (59.5, 80.0)]
    windows = plan_windows(80.0, ranges, 30)
    assert [(w.start_s, w.end_s) for w in windows] == [(0.0, 27.5), (27.5, 59.0), (59.0, 80.0)]


def test_target_inside_silence_is_cut_exactly_there() -> None:
    windows = plan_windows(70.0, [(0.0, 20.0), (40.0, 70.0)], 30)
    assert windows[0] == Window(0, 0.0, 30.0)


def test_one_long_stretch_of_speech_gets_hard_cuts() -> None:
    windows = plan_windows(100.0, [(0.0, 100.0)], 30)
    assert [w.end_s for w in windows] == [30.0, 60.0, 90.0, 100.0]
    assert [w.index for w in windows] == [0, 1, 2, 3]


def test_windows_tile_the_audio_without_gaps() -> None:
    rng = np.random.default_rng(3)
    edges = np.sort(rng.uniform(0, 3600, 400)).round(3)
    ranges = [(float(a), float(b)) for a, b in zip(edges[0::2], edges[1::2])]
    windows = plan_windows(3600.0, ranges, 600)
    assert windows[0].start_s == 0.0 and windows[-1].end_s == 3600.0
    assert all(a.end_s == b.start_s for a, b in zip(windows, windows[1:]))
    assert all(300 <= w.end_s - w.start_s <= 900 for w in windows[:-1])
    # every cut is in a silence, never inside a speech range
    assert not any(s < w.end_s < e for w in windows[:-1] for s, e in ranges)


def test_batch_clips_merge_neighbours_up_to_30_s() -> None:
    window = Window(0, 0.0, 100.0)
    ranges = [(1.0, 5.0), (6.0, 20.0), (21.0, 30.5), (31.0, 40.0), (50.0, 95.0)]
    clips = batch_clips(window, ranges, vad=True)
    assert clips == [
        {"start": 1.0, "end": 30.5},  # three ranges, 29.5 s in all
        {"start": 31.0, "end": 40.0},  # would make the previous clip 39 s
        {"start": 50.0, "end": 80.0},  # longer than a clip: split at 30 s
        {"start": 80.0, "end": 95.0},
    ]
    assert all(c["end"] - c["start"] <= 30 for c in clips)


def test_batch_clips_stay_inside_their_window() -> None:
    clips = batch_clips(Window(1, 30.0, 60.0), [(10.0, 35.0), (40.0, 61.0)], vad=True)
    assert clips == [{"start": 30.0, "end": 60.0}]
    assert batch_clips(Window(0, 0.0, 5.0), [(4.95, 9.0)], vad=True) == []  # a 50 ms shard carries no words


def test_without_vad_clips_are_fixed_30_s() -> None:
    clips = batch_clips(Window(0, 10.0, 75.5), [], vad=False)
    assert [(c["start"], c["end"]) for c in clips] == [(10.0, 40.0), (40.0, 70.0), (70.0, 75.5)]


# ---- real transcription ----


@pytest.mark.slow
@pytest.mark.parametrize("options", [BATCHED, SEQUENTIAL], ids=["batched", "sequential"])
def test_wer_on_the_fixtures(model: Any, options: TranscribeOptions, tmp_path: Path) -> None:
    names = [n for n in TEXTS if n.startswith("en")]
    rates = []
    for name in names:
        result = transcribe(model, decode_audio(DATA / name, max_file_mb=10), options, tmp_path / name)
        rates.append(wer(TEXTS[name], result["text"]))
        assert result["language"] == "en"
    assert sum(rates) / len(rates) <= 0.25, dict(zip(names, rates))


@pytest.mark.parametrize("options", [BATCHED, SEQUENTIAL], ids=["batched", "sequential"])
def test_long_pauses_transcribed_completely(model: Any, options: TranscribeOptions, tmp_path: Path) -> None:
    audio = decode_audio(DATA / "long_pauses.wav", max_file_mb=10)
    # window_s=10 forces cuts: sequential timestamps must come back shifted by each window's offset
    result = transcribe(model, audio, options, tmp_path, window_s=10)
    assert wer(TEXTS["long_pauses.wav"], result["text"]) <= 0.25, result["text"]
    for key_words, sentence_start_s in [("lazy dog", 0.0), ("finance", 6.44), ("conference", 16.69), ("coffee", 24.22)]:
        hit = [s for s in result["segments"] if key_words in s["text"]]
        assert hit, f"{key_words!r} missing from {result['text']!r}"
        assert abs(hit[0]["start"] - sentence_start_s) < 1.5
    assert [s["id"] for s in result["segments"]] == list(range(len(result["segments"])))
    assert all(0 <= s["start"] <= s["end"] <= 29.3 for s in result["segments"])
    assert all(a["start"] <= b["start"] for a, b in zip(result["segments"], result["segments"][1:]))


@pytest.mark.parametrize("batch_size", [4, 1], ids=["batched", "sequential"])
def test_without_vad_the_whole_audio_is_decoded(model: Any, batch_size: int, tmp_path: Path) -> None:
    audio = decode_audio(DATA / "long_pauses.wav", max_file_mb=10)
    result = transcribe(model, audio, TranscribeOptions(batch_size=batch_size, vad=False), tmp_path, window_s=10)
    assert wer(TEXTS["long_pauses.wav"], result["text"]) <= 0.3, result["text"]


@pytest.mark.parametrize("options", [BATCHED, SEQUENTIAL], ids=["batched", "sequential"])
def test_no_speech_is_an_empty_transcript(model: Any, options: TranscribeOptions, tmp_path: Path) -> None:
    silence = np.zeros(20 * SAMPLE_RATE, dtype=np.float32)
    result = transcribe(model, silence, options, tmp_path)
    assert result == {"text": "", "language": "en", "duration": 20.0, "segments": []}


def test_word_timestamps_lie_inside_their_segments(model: Any, tmp_path: Path) -> None:
    audio = decode_audio(DATA / "en03.wav", max_file_mb=10)
    result = transcribe(model, audio, TranscribeOptions(word_timestamps=True), tmp_path)
    words = [w for s in result["segments"] for w in s["words"]]
    assert len(words) >= 10
    for seg in result["segments"]:
        for w in seg["words"]:
            assert seg["start"] - 0.01 <= w["start"] <= w["end"] <= seg["end"] + 0.01
            assert 0 <= w["probability"] <= 1
    assert "conference" in "".join(w["word"] for w in words).lower()


def test_progress_is_fraction_of_audio_and_ends_at_one(model: Any, tmp_path: Path) -> None:
    audio = decode_audio(DATA / "long_pauses.wav", max_file_mb=10)
    seen: list[tuple[float, dict]] = []
    transcribe(model, audio, BATCHED, tmp_path, window_s=10, on_progress=lambda f, extra: seen.append((f, extra)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0, abs=1e-3)
    assert all(0 <= f <= 1 for f in fractions)
    assert {extra["window"] for _, extra in seen} == set(range(seen[0][1]["windows"]))


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("ctranslate2").get_cuda_device_count(), reason="needs a CUDA GPU")
def test_cuda_transcribes_like_cpu(model_path: Path, tmp_path: Path) -> None:
    cuda = ModelCache(1).get(ResolvedModel(model_path, "tiny.en"), device="cuda", compute_type="auto", cpu_threads=0)
    audio = decode_audio(DATA / "long_pauses.wav", max_file_mb=10)
    result = transcribe(cuda, audio, TranscribeOptions(batch_size=16), tmp_path)
    assert wer(TEXTS["long_pauses.wav"], result["text"]) <= 0.25, result["text"]


def test_uncovered_speech_becomes_repair_clips() -> None:
    from scribefleet.pipeline.asr import uncovered_clips

    clips = [{"start": 0.0, "end": 29.0}]
    ranges = [(0.5, 4.0), (5.0, 9.0), (10.0, 14.0), (14.2, 14.4), (20.0, 28.5)]
    segments = [{"start": 0.4, "end": 4.1}, {"start": 9.9, "end": 14.0}]  # 5-9 and 20-28.5 were skipped
    assert uncovered_clips(clips, ranges, segments) == [{"start": 5.0, "end": 9.0}, {"start": 20.0, "end": 28.5}]
    # neighbours closer than 2 s share one clip; a 0.2 s blip is not a dropped sentence
    assert uncovered_clips(clips, [(1.0, 3.0), (4.0, 6.0), (6.1, 6.3)], []) == [{"start": 1.0, "end": 6.0}]
    assert uncovered_clips(clips, ranges, [{"start": 0.0, "end": 29.0}]) == []
