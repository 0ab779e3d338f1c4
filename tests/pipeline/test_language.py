"""pipeline/language.py: samples across the recording, the vote, and real detection with Whisper base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import DATA
from scribefleet.options import TranscribeOptions
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
