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

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import DATA, TEXTS, wer
from pipeline.nonspeech import FIXTURES, melody, write_wav
from scribefleet.options import TranscribeOptions
from scribefleet.pipeline.asr import transcribe_windows
from scribefleet.pipeline.checkpoint import WindowLog
from scribefleet.pipeline.guards import (
    GUARDS,
    add_counts,
    collapse_repeats,
    drop_non_speech,
    is_silence_phrase,
    keep_first_decoding,
    loop_spans,
    merge,
    non_speech_reason,
    normalise,
    speech_share,
    zero_counts,
)
from scribefleet.pipeline.job import run_transcription
from scribefleet.pipeline.media import decode_audio
from scribefleet.pipeline.models import ModelCache, ResolvedModel
from scribefleet.pipeline.vad import speech_ranges


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


def test_a_loop_keeps_its_first_decoding_only_when_that_was_sure_and_the_second_a_guess() -> None:
    # six repeats really spoken: batched tiny.en is sure of them, temperature sampling writes nonsense
    spoken = [seg(i * 3.4, i * 3.4 + 3.2, " The quick brown fox jump over the lazy dog.", ns=0.41, lp=-0.13, cr=5.5) for i in range(6)]
    sampled = [seg(0.0, 3.5, " The quick roundf complaints jump over balazy dog", ns=0.41, lp=-1.67, cr=1.8)]
    assert keep_first_decoding(spoken, sampled)
    assert keep_first_decoding(spoken, [])
    assert keep_first_decoding(spoken, [seg(0.0, 21.0, " The quick roundfash" + "ch" * 200, ns=0.41, lp=-0.3, cr=30.0)])
    # a loop on noise (no-speech 0.94) or a second decoding as sure as the first: the second wins
    noise_loop = [seg(0.0, 30.0, " I don't know if that's it," * 20, ns=0.94, lp=-0.23, cr=14.0)]
    assert not keep_first_decoding(noise_loop, [])
    assert not keep_first_decoding(spoken, [seg(0.0, 21.0, " The quick brown fox" * 6, ns=0.41, lp=-0.22, cr=5.48)])


def test_merge_joins_text_tokens_and_words() -> None:
    a = seg(1.0, 2.0, " One.") | {"tokens": [1, 2], "words": [{"word": " One.", "start": 1.0, "end": 2.0}]}
    b = seg(2.5, 3.0, " Two.", lp=-0.6) | {"tokens": [3], "words": [{"word": " Two.", "start": 2.5, "end": 3.0}]}
    merged = merge([a, b])
    assert (merged["start"], merged["end"], merged["text"], merged["tokens"]) == (1.0, 3.0, " One. Two.", [1, 2, 3])
    assert [w["word"] for w in merged["words"]] == [" One.", " Two."]
    assert merged["avg_logprob"] == pytest.approx(-0.5)
    assert "words" not in merge([seg(0, 1, " x")])


# ---- through the real pipeline: tiny.en on real and generated audio ----

MODES = {
    "batched": TranscribeOptions(batch_size=8),
    "batched-no-vad": TranscribeOptions(batch_size=8, vad=False),
    "sequential": TranscribeOptions(batch_size=1),
    "sequential-no-vad": TranscribeOptions(batch_size=1, vad=False),
}


def longest_run(segments: list[dict[str, Any]]) -> int:
    """The most segments in a row with the same text."""
    texts = [normalise(s["text"]) for s in segments]
    best = run = 0
    for i, text in enumerate(texts):
        run = run + 1 if i and text == texts[i - 1] else 1
        best = max(best, run)
    return best


@pytest.fixture(scope="module")
def model(models: ModelCache, model_path: Path) -> Any:
    return models.get(ResolvedModel(model_path, "tiny.en"), device="cpu", compute_type="auto", cpu_threads=2)


def transcribe(model: Any, audio: np.ndarray, options: TranscribeOptions, tmp_path: Path) -> dict[str, Any]:
    ranges = speech_ranges(audio, batched=options.is_batched)
    return transcribe_windows(model, audio, ranges, options, window_s=600, log=WindowLog(tmp_path / "windows.jsonl"))


@pytest.fixture(scope="module")
def nonspeech_wavs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("nonspeech")
    return {name: write_wav(folder / f"{name}.wav", make()) for name, make in FIXTURES.items()}


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", FIXTURES)
def test_no_words_without_speech(name: str, mode: str, nonspeech_wavs: dict[str, Path], make_job: Any,
                                 models: ModelCache, progress: Any) -> None:
    job = make_job(nonspeech_wavs[name], name=f"{name}-{mode}", options=MODES[mode], formats=("json", "srt", "txt"))
    result = run_transcription(job, models, progress)
    doc = json.loads(Path(result["outputs"]["json"]).read_text())
    assert (doc["text"], doc["segments"]) == ("", []), doc["segments"]
    assert Path(result["outputs"]["srt"]).read_text().strip() == ""
    assert Path(result["outputs"]["txt"]).read_text().strip() == ""
    assert result["guards"] == doc["guards"] and set(doc["guards"]) == set(GUARDS)


@pytest.mark.parametrize("batch_size", [8, 1], ids=["batched", "sequential"])
def test_the_you_on_silence_is_dropped_and_counted(model: Any, batch_size: int, tmp_path: Path) -> None:
    # without VAD tiny.en writes " You" on silence, confidently enough (log-prob -0.68) for faster-whisper to keep it
    silence = np.zeros(30 * 16000, dtype=np.float32)
    result = transcribe(model, silence, TranscribeOptions(batch_size=batch_size, vad=False), tmp_path)
    assert result["text"] == "" and result["segments"] == []
    assert result["guards"]["outside_speech"] >= 1, result["guards"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_speech_around_music_keeps_the_speech_and_only_it(model: Any, mode: str, tmp_path: Path) -> None:
    clip = {n: decode_audio(DATA / n, max_file_mb=10) for n in ("en05.wav", "en06.wav")}
    audio = np.concatenate([clip["en05.wav"], melody(20.0), clip["en06.wav"]])
    result = transcribe(model, audio, MODES[mode], tmp_path)
    assert wer(f"{TEXTS['en05.wav']} {TEXTS['en06.wav']}", result["text"]) <= 0.25, result["text"]
    assert not any(is_silence_phrase(s["text"]) for s in result["segments"]), result["text"]
    assert not any(4.5 < (s["start"] + s["end"]) / 2 < 23.5 for s in result["segments"]), result["segments"]


@pytest.mark.slow
def test_repeated_speech_is_a_loop_decoded_again_without_losing_a_word(model: Any, tmp_path: Path) -> None:
    # one sentence said six times: batched decoding is sure of it (log-prob -0.13; it writes the sentence
    # seven times), but its text compresses 5.5 times, so the guard decodes it again with the fallbacks.
    # Sampling is random: the second decoding is either the six sentences (kept) or nonsense (then the
    # first stays). Either way every sentence is there, and no cue repeats more than twice in a row.
    audio = np.concatenate([decode_audio(DATA / "en01.wav", max_file_mb=10)] * 6)
    result = transcribe(model, audio, MODES["batched"], tmp_path)
    assert result["guards"]["loops"] == 1, result["guards"]
    assert result["segments"] and all(s.get("flags") in (["redecoded"], ["loop_kept"]) for s in result["segments"])
    assert 6 <= result["text"].count("lazy dog") <= 7, result["text"]
    assert wer(" ".join([TEXTS["en01.wav"]] * 6), result["text"]) <= 0.3, result["text"]
    assert longest_run(result["segments"]) <= 2


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_no_guard_fires_on_speech(model: Any, mode: str, long_recording: tuple[Path, str], tmp_path: Path) -> None:
    path, text = long_recording
    result = transcribe(model, decode_audio(path, max_file_mb=10), MODES[mode], tmp_path)
    assert result["guards"] == zero_counts()
    assert wer(text, result["text"]) <= 0.25
    assert not any("flags" in s for s in result["segments"])
