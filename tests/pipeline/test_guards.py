"""pipeline/guards.py on crafted segment lists: what is dropped as non-speech, what counts as a loop.

The numbers in the crafted segments are ones tiny.en produced (measured on
the fixtures of tests/pipeline/nonspeech.py and tests/data):

* on silence with VAD off it writes " You" with no-speech probability 0.95 and
  log-probability -0.675 (kept by faster-whisper's own rule, which also needs
  the log-probability under -1.0);
* batched clips of noise or music decode to one line repeated for 30 s
  (compression ratio 11 to 17, no-speech probability 0.86 to 0.96,
  log-probability about -0.2: confident nonsense);
* a 0.7 s VAD range at the start of a melody gave "Thank you so much for
  watching and I'll see you in the next video." (no-speech 0.70, log-prob -1.25);
* real speech segments have no-speech probabilities of 0.01 to 0.19,
  log-probabilities of -0.2 to -0.8 and compression ratios under 1.5.
"""

from __future__ import annotations

from typing import Any

import pytest

from scribefleet.pipeline.guards import (
    GUARDS,
    add_counts,
    collapse_repeats,
    drop_non_speech,
    is_silence_phrase,
    loop_spans,
    non_speech_reason,
    normalise,
    speech_share,
    zero_counts,
)


def seg(start: float, end: float, text: str, *, ns: float = 0.05, lp: float = -0.4, cr: float = 1.0) -> dict[str, Any]:
    return {"start": start, "end": end, "text": text, "no_speech_prob": ns, "avg_logprob": lp, "compression_ratio": cr}


SPEECH = [(0.0, 3.5), (5.0, 9.0)]


def test_real_speech_is_kept() -> None:
    segments = [seg(0.0, 3.2, " The quick brown fox jumped over the lazy dog.", ns=0.04, lp=-0.66, cr=0.87)]
    segments.append(seg(5.1, 8.9, " Please send the quarterly report.", ns=0.19, lp=-0.43))
    assert drop_non_speech(segments, SPEECH) == (segments, {})


def test_faster_whispers_no_speech_rule() -> None:
    quiet_loop = seg(0.0, 29.94, " So, I'm going to take a look at how", ns=0.851, lp=-1.147, cr=1.76)
    assert non_speech_reason(quiet_loop, SPEECH) == "no_speech"
    # either signal alone keeps the segment: a confident or a speech-like one
    assert non_speech_reason(seg(0.0, 3.0, " Hello there.", ns=0.85, lp=-0.5), SPEECH) is None
    assert non_speech_reason(seg(0.0, 3.0, " Hello there.", ns=0.2, lp=-1.5), SPEECH) is None


def test_text_outside_vad_speech_needs_whisper_to_agree() -> None:
    you = seg(0.0, 2.0, " You", ns=0.95, lp=-0.675, cr=0.27)
    assert non_speech_reason(you, []) == "outside_speech"
    loop = seg(0.0, 30.0, " I don't know how to do it," * 25, ns=0.88, lp=-0.19, cr=14.6)
    assert non_speech_reason(loop, [(0.0, 3.5)]) == "outside_speech"  # 88 % of it outside speech
    assert non_speech_reason(loop, SPEECH) is None  # 75 %: a loop over speech, for loop_spans to find
    # speech the VAD missed (Whisper is sure it is speech) stays
    assert non_speech_reason(seg(20.0, 24.0, " Quietly said words.", ns=0.1), SPEECH) is None


def test_silence_phrases_go_only_with_weak_evidence() -> None:
    outro = seg(3.73, 10.73, " Thank you so much for watching and I'll see you in the next video.", ns=0.70, lp=-1.25)
    assert non_speech_reason(outro, [(3.728, 4.4)]) == "no_speech"
    assert non_speech_reason(seg(3.0, 4.0, " Thank you.", ns=0.45, lp=-0.6), SPEECH) == "phrases"
    assert non_speech_reason(seg(20.0, 21.0, " Thank you.", ns=0.1, lp=-0.6), SPEECH) == "phrases"  # outside speech
    assert non_speech_reason(seg(3.0, 4.0, " ...", ns=0.35), SPEECH) == "phrases"
    # a speaker who says thank you
    assert non_speech_reason(seg(6.0, 7.0, " Thank you.", ns=0.08, lp=-0.3), SPEECH) is None


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        (" Thank you.", True),
        (" you", True),
        (" Thanks for watching!", True),
        (" Please subscribe to my channel.", True),
        (" ♪", True),
        (" .", True),
        (" Thank you for the report.", False),
        (" You should go now.", False),
    ],
)
def test_silence_phrases(text: str, phrase: bool) -> None:
    assert is_silence_phrase(text) is phrase


def test_speech_share() -> None:
    assert speech_share(seg(0.0, 2.0, "x"), [(1.0, 5.0)]) == 0.5
    assert speech_share(seg(0.0, 2.0, "x"), [(0.0, 0.5), (1.5, 3.0)]) == 0.5
    assert speech_share(seg(4.0, 4.0, "x"), [(3.0, 5.0)]) == 1.0
    assert speech_share(seg(4.0, 4.0, "x"), []) == 0.0


def test_normalise() -> None:
    assert normalise("  Thank  you! ") == "thank you"
    assert normalise(" I don't know.") == "i don't know"
    assert normalise(" ... ♪ ") == ""


def test_a_run_of_three_is_a_loop_and_collapses_to_its_first() -> None:
    segments = [seg(0, 1, " Hello."), seg(1, 2, " Yes."), seg(2, 3, " yes"), seg(3, 4, " Yes!"), seg(4, 5, " Bye now.")]
    assert loop_spans(segments) == [(1, 4)]
    kept, dropped = collapse_repeats(segments)
    assert [s["text"] for s in kept] == [" Hello.", " Yes.", " Bye now."] and dropped == 2


def test_twice_in_a_row_is_speech() -> None:
    segments = [seg(0, 1, " No."), seg(1, 2, " No."), seg(2, 3, " Fine.")]
    assert loop_spans(segments) == []
    assert collapse_repeats(segments) == (segments, 0)


def test_a_segment_that_repeats_inside_is_a_loop() -> None:
    segments = [seg(0, 5, " Fine."), seg(5, 30, " a little bit of" * 40, cr=17.0), seg(28, 31, " Again.", cr=3.0)]
    assert loop_spans(segments) == [(5, 31)]  # overlapping spans merge
    assert loop_spans([seg(0, 5, " Fine.", cr=2.4)]) == []  # the threshold itself is not a loop


def test_counts() -> None:
    assert zero_counts() == dict.fromkeys(GUARDS, 0)
    assert add_counts(zero_counts(), {"loops": 1, "phrases": 2}) == {**zero_counts(), "loops": 1, "phrases": 2}
    assert add_counts({"loops": 1}, {"loops": 2})["loops"] == 3
