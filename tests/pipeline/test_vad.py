"""pipeline/vad.py: Silero VAD finds the sentences of long_pauses.wav and nothing in silence."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import DATA
from scribefleet.pipeline.media import SAMPLE_RATE, decode_audio
from scribefleet.pipeline.vad import CLIP_MAX_S, speech_ranges

#: long_pauses.wav: en01, 3 s, en02, 6 s, en03, 3 s, en04 (seconds where each sentence's audio starts)
SENTENCE_STARTS_S = (0.0, 6.44, 16.69, 24.22)


@pytest.fixture(scope="module")
def long_pauses() -> np.ndarray:
    return decode_audio(DATA / "long_pauses.wav", max_file_mb=10)


def test_sequential_ranges_are_the_four_sentences(long_pauses: np.ndarray) -> None:
    ranges = speech_ranges(long_pauses, batched=False)
    assert len(ranges) == 4
    for (start, end), sentence_start in zip(ranges, SENTENCE_STARTS_S):
        assert abs(start - sentence_start) < 0.6 and end - start > 2.0
    # the long silence between en02 and en03 is not speech
    assert not any(start < 13.0 < end for start, end in ranges)


def test_batched_ranges_are_short_ordered_and_inside_the_audio(long_pauses: np.ndarray) -> None:
    ranges = speech_ranges(long_pauses, batched=True)
    duration_s = long_pauses.shape[0] / SAMPLE_RATE
    assert len(ranges) >= 4
    assert all(0 <= s < e <= duration_s + 0.001 and e - s <= CLIP_MAX_S + 1 for s, e in ranges)
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))
    speech_s = sum(e - s for s, e in ranges)
    assert 10 < speech_s < 22  # ~15 s of speech in 29 s of audio


def test_silence_and_nothing_have_no_speech() -> None:
    assert speech_ranges(np.zeros(10 * SAMPLE_RATE, dtype=np.float32), batched=True) == []
    assert speech_ranges(np.zeros(10 * SAMPLE_RATE, dtype=np.float32), batched=False) == []
    assert speech_ranges(np.zeros(0, dtype=np.float32), batched=False) == []
