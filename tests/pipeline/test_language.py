"""pipeline/language.py: samples across the recording, the vote, real detection with Whisper base, per-window mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import DATA
from scribefleet.options import PER_WINDOW, TranscribeOptions
from scribefleet.pipeline.asr import transcribe_windows
from scribefleet.pipeline.checkpoint import WindowLog
from scribefleet.pipeline.language import (
    LanguageGuess,
    LanguageSample,
    combine,
    detect_language,
    model_warnings,
    sample_spans,
)
from scribefleet.pipeline.media import decode_audio
from scribefleet.pipeline.models import ModelCache, ResolvedModel
from scribefleet.pipeline.vad import speech_ranges

# ---- sampling and combining (no model) ----


def test_little_speech_is_all_heard_in_consecutive_samples() -> None:
    ranges = [(0.0, 10.0), (50.0, 60.0), (70.0, 82.0)]  # 32 s of speech
    assert sample_spans(ranges, samples=4, sample_s=15) == [
        [(0.0, 10.0), (50.0, 55.0)],
        [(55.0, 60.0), (70.0, 80.0)],
        [(80.0, 82.0)],
    ]


def test_much_speech_is_sampled_evenly_over_speech_time() -> None:
    # 400 s of speech in two blocks with a long silence between: samples follow the speech, not the clock
    ranges = [(0.0, 200.0), (1000.0, 1200.0)]
    spans = sample_spans(ranges, samples=4, sample_s=10)
    assert spans == [[(45.0, 55.0)], [(145.0, 155.0)], [(1045.0, 1055.0)], [(1145.0, 1155.0)]]


def test_no_speech_no_samples() -> None:
    assert sample_spans([], samples=8) == []


def test_the_language_of_most_speech_wins_the_vote() -> None:
    samples = [
        LanguageSample(0, 15, 15.0, "en", 0.95),
        LanguageSample(15, 30, 15.0, "en", 0.95),
        LanguageSample(30, 45, 15.0, "de", 0.55),  # unsure samples still count by their speech
        LanguageSample(45, 60, 15.0, "de", 0.6),
        LanguageSample(60, 75, 15.0, "de", 0.6),
    ]
    guess = combine(samples)
    assert guess is not None and guess.language == "de"
    assert guess.probability == pytest.approx((15 * 0.55 + 15 * 0.6 + 15 * 0.6) / 75, abs=1e-4)
    assert combine([]) is None


def test_guess_round_trips_through_a_window_record() -> None:
    guess = LanguageGuess("de", 0.8, (LanguageSample(1.0, 16.0, 15.0, "de", 0.8),))
    assert LanguageGuess.from_dict(guess.to_dict()) == guess


# ---- real models ----


@pytest.fixture(scope="module")
def base(models: ModelCache, whisper_base_path: Path) -> Any:
    return models.get(ResolvedModel(whisper_base_path, "base"), device="cpu", compute_type="auto", cpu_threads=2)


@pytest.fixture(scope="module")
def tiny_en(models: ModelCache, model_path: Path) -> Any:
    return models.get(ResolvedModel(model_path, "tiny.en"), device="cpu", compute_type="auto", cpu_threads=2)


@pytest.fixture(scope="module")
def en_then_de() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """~39 s of English, then ~59 s of German (tests/data/multilingual.json)."""
    audio = decode_audio(DATA / "en_then_de.ogg", max_file_mb=10)
    return audio, speech_ranges(audio, batched=True)


def test_a_recording_is_detected_as_the_language_of_most_of_its_speech(base: Any, en_then_de: Any) -> None:
    audio, ranges = en_then_de
    # what faster-whisper (and scribefleet before) did: the first 30 s only, which are English
    assert base.detect_language(audio=audio)[0] == "en"
    guess = detect_language(base, audio, ranges)
    assert guess is not None and guess.language == "de"
    assert 0.3 < guess.probability < 0.8  # a mixed recording is not detected with confidence
    first, last = guess.samples[0], guess.samples[-1]
    assert (first.language, last.language) == ("en", "de")
    assert first.start_s < 1.0 and last.end_s > 95.0  # the samples reach across the whole recording
    assert sum(s.speech_s for s in guess.samples) == pytest.approx(sum(e - s for s, e in ranges), abs=0.01)


def test_one_language_is_detected_with_confidence(base: Any) -> None:
    audio = decode_audio(DATA / "long_pauses.wav", max_file_mb=10)
    guess = detect_language(base, audio, speech_ranges(audio, batched=True))
    assert guess is not None and guess.language == "en" and guess.probability > 0.8


def test_silence_has_no_language(base: Any) -> None:
    assert detect_language(base, np.zeros(16000 * 5, dtype=np.float32), []) is None


def test_an_english_only_model_speaks_english_and_says_what_it_ignored(tiny_en: Any, base: Any) -> None:
    assert detect_language(tiny_en, np.zeros(16000, dtype=np.float32), [(0.0, 1.0)]) == LanguageGuess("en", 1.0)
    (warning,) = model_warnings(tiny_en, TranscribeOptions(language="de"), "tiny.en")
    assert "English-only" in warning and "--language de" in warning
    assert len(model_warnings(tiny_en, TranscribeOptions(language="de", task="translate"), "tiny.en")) == 2
    assert model_warnings(tiny_en, TranscribeOptions(language="en"), "tiny.en") == []
    assert model_warnings(tiny_en, TranscribeOptions(), "tiny.en") == []
    assert model_warnings(base, TranscribeOptions(language="de"), "base") == []


# ---- through the windowed transcriber ----


def _transcribe(model: Any, audio: np.ndarray, ranges: Any, options: TranscribeOptions, log_path: Path) -> dict:
    return transcribe_windows(model, audio, ranges, options, window_s=600, log=WindowLog(log_path))


@pytest.mark.slow
def test_per_window_mode_labels_each_stretch_with_its_language(base: Any, en_then_de: Any, tmp_path: Path) -> None:
    audio, ranges = en_then_de
    options = TranscribeOptions(language=PER_WINDOW)
    result = _transcribe(base, audio, ranges, options, tmp_path / "windows.jsonl")
    english = [s for s in result["segments"] if s["end"] < 36.0]
    german = [s for s in result["segments"] if s["start"] > 42.0]
    assert english and german
    assert {s["language"] for s in english} == {"en"}, [(s["start"], s["text"]) for s in english]
    assert {s["language"] for s in german} == {"de"}, [(s["start"], s["text"]) for s in german]
    assert "travel club" in " ".join(s["text"] for s in english).lower()
    german_text = " ".join(s["text"] for s in german).lower()
    # decoded as German, not as English sounds: espeak's German read by base is rough, but its words are there
    heard = [w for w in ("bergen", "himmel", "touren", "hütten", "gruppe", "vortrag", "jacke") if w in german_text]
    assert len(heard) >= 5, german_text
    # the transcript's language is the language of most speech; one sample per window, in order
    assert result["language"] == "de" and 0.3 < result["language_probability"] < 0.9
    samples = result["language_samples"]
    assert len(samples) >= 4 and all(a["end_s"] <= b["start_s"] for a, b in zip(samples, samples[1:]))
    # a resumed run takes each window's language from the log instead of detecting it again
    again = _transcribe(base, audio, ranges, options, tmp_path / "windows.jsonl")
    assert again == result


def test_one_detection_for_the_recording_is_in_the_transcript(base: Any, tmp_path: Path) -> None:
    audio = decode_audio(DATA / "en05.wav", max_file_mb=10)
    result = _transcribe(base, audio, speech_ranges(audio, batched=True), TranscribeOptions(), tmp_path / "w.jsonl")
    assert result["language"] == "en" and result["language_probability"] > 0.8
    assert [s["language"] for s in result["language_samples"]] == ["en"]
    assert result["segments"] and {s["language"] for s in result["segments"]} == {"en"}
