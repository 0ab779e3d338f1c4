"""Which language is spoken: sampled across the whole recording, or stretch by stretch.

Whisper tells a language from one 30 s input: after the encoder, the decoder's
probability of each language token. faster-whisper (like most peers) asks once,
on the first 30 s of audio, so a recording that opens with an English
introduction is transcribed as English throughout, and says nothing of how
sure it was. Here:

* `detect_language(model, audio, ranges)` takes up to `samples` stretches of
  `SAMPLE_S` (15 s) of *speech* (the VAD ranges joined, silence left out),
  spread evenly over the recording's speech time, or all of the speech when
  there is less; the samples go through the encoder as one batch. Each sample
  votes for its top language with its seconds of speech (`combine`), so the
  guess is the language of most speech, and its probability is how sure the
  detector was across all speech (about that language's share in a mixed
  recording). Samples are 15 s rather than Whisper's 30 s because Whisper
  names the language a sample *starts* in: a 30 s sample that straddles a
  change counts all its speech for the first language (measured on
  tests/data/en_then_de.ogg, 39 s English then 59 s German: 30 s samples said
  English, 15 s samples say German). Each sample's own language is kept
  (`LanguageGuess.samples`), so the transcript shows where it changed.
* Per-window mode (`--language auto-per-window`, `WindowLanguages`): asr cuts
  the recording into windows of about `PER_WINDOW_S` (20 s, at silences, as
  every window plan is cut) instead of the usual ~600 s, and detects each
  window from one sample of its own speech (its middle 15 s): each window is
  decoded in its own language, its segments carry it, and the transcript's
  language is the one with the most speech (`combine` over the windows). 20 s follows a change within a window or so while leaving the
  detector and the decoder most of one Whisper input of context; a window
  that straddles a change is decoded in the language it starts in. The price
  is batching: a batched decode sees one short window's speech at a time.

An English-only model (`*.en`) has no language tokens: it speaks English,
with probability 1, whatever was asked; `model_warnings` says so in words
that reach the run summary instead of only a slot's log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from scribefleet.options import PER_WINDOW, TranscribeOptions
from scribefleet.pipeline.media import SAMPLE_RATE

Ranges = list[tuple[float, float]]

#: seconds of speech in one detection sample (see the module docstring for why not Whisper's 30 s)
SAMPLE_S = 15.0
#: detection samples spread over a recording: at most this many encoder passes, in one batch
DEFAULT_SAMPLES = 8
#: the window length per-window mode aims at
PER_WINDOW_S = 20.0


@dataclass(frozen=True)
class LanguageSample:
    """What the detector heard in one stretch: the first and last second of speech it took, and its top language."""

    start_s: float
    end_s: float
    speech_s: float
    language: str
    probability: float


@dataclass(frozen=True)
class LanguageGuess:
    """The language of some audio, how sure (0-1), and the samples it was combined from."""

    language: str
    probability: float
    samples: tuple[LanguageSample, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "language_probability": self.probability,
            "language_samples": [asdict(s) for s in self.samples],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LanguageGuess:
        samples = tuple(LanguageSample(**s) for s in data.get("language_samples") or ())
        return cls(data["language"], float(data["language_probability"]), samples)


def is_multilingual(model: Any) -> bool:
    """Whether a faster_whisper.WhisperModel knows languages other than English."""
    return bool(getattr(model.model, "is_multilingual", True))


def clip_ranges(ranges: Ranges, start_s: float, end_s: float) -> Ranges:
    """The parts of `ranges` inside [start_s, end_s]."""
    clipped = [(max(s, start_s), min(e, end_s)) for s, e in ranges if s < end_s and e > start_s]
    return [(s, e) for s, e in clipped if e > s]


def sample_spans(ranges: Ranges, *, samples: int, sample_s: float = SAMPLE_S) -> list[Ranges]:
    """The speech of each detection sample: pieces of `ranges` worth up to `sample_s` seconds each.

    With more speech than `samples` x `sample_s`, the samples are centred on
    evenly spaced points of the speech time line (the recording with its
    silences removed), so long silences do not pull them together; with less,
    the speech is cut into consecutive samples and all of it is heard.
    """
    total = sum(e - s for s, e in ranges)
    if total <= 0 or samples < 1:
        return []
    if total <= samples * sample_s:
        bounds = [(float(a), min(float(a) + sample_s, total)) for a in np.arange(0.0, total, sample_s)]
    else:
        step = total / samples
        bounds = [(step * (i + 0.5) - sample_s / 2, step * (i + 0.5) + sample_s / 2) for i in range(samples)]
    return [_speech_between(ranges, a, b) for a, b in bounds]


def _speech_between(ranges: Ranges, from_s: float, to_s: float) -> Ranges:
    """The recording's ranges that make up speech time [from_s, to_s)."""
    pieces: Ranges = []
    elapsed = 0.0
    for start, end in ranges:
        lo, hi = max(from_s - elapsed, 0.0), min(to_s - elapsed, end - start)
        if hi > lo:
            pieces.append((start + lo, start + hi))
        elapsed += end - start
        if elapsed >= to_s:
            break
    return pieces


def detect_language(
    model: Any, audio: np.ndarray, ranges: Ranges, *, samples: int = DEFAULT_SAMPLES
) -> LanguageGuess | None:
    """The language of the speech in `ranges` of `audio` (float32, 16 kHz); None when there is no speech."""
    if not is_multilingual(model):
        return LanguageGuess("en", 1.0)
    spans = [s for s in sample_spans(ranges, samples=samples) if s]
    if not spans:
        return None
    from faster_whisper.audio import pad_or_trim

    extractor = model.feature_extractor
    features = []
    for span in spans:
        piece = np.concatenate([audio[round(s * SAMPLE_RATE) : round(e * SAMPLE_RATE)] for s, e in span])
        features.append(pad_or_trim(extractor(piece)[..., : extractor.nb_max_frames]))
    encoded = model.encode(np.stack(features))
    found = []
    # per sample: [("<|de|>", 0.91), ("<|en|>", 0.05), ...], most likely first
    for span, result in zip(spans, model.model.detect_language(encoded)):
        token, probability = result[0]
        speech_s = round(float(sum(e - s for s, e in span)), 3)
        found.append(LanguageSample(
            round(float(span[0][0]), 3), round(float(span[-1][1]), 3), speech_s, token[2:-2], round(probability, 4)
        ))
    return combine(found)


def combine(samples: Sequence[LanguageSample]) -> LanguageGuess | None:
    """The language most of the samples' speech is in, and its speech-weighted probability.

    Each sample votes for its top language with its seconds of speech: a vote,
    not a mean of distributions, because a sample that straddles a change of
    language comes out unsure, and a few unsure samples must not outweigh
    many clear ones. The probability is the sum of speech x probability of the
    samples in that language over all speech: the detector's confidence for a
    recording in one language, and less (about that language's share of the
    speech) for a mixed one.
    """
    speech: dict[str, float] = {}
    sure: dict[str, float] = {}
    for sample in samples:
        speech[sample.language] = speech.get(sample.language, 0.0) + sample.speech_s
        sure[sample.language] = sure.get(sample.language, 0.0) + sample.speech_s * sample.probability
    total = sum(speech.values())
    if not speech or total <= 0:
        return None
    language = max(speech, key=lambda lang: (speech[lang], sure[lang]))
    return LanguageGuess(language, round(sure[language] / total, 4), tuple(samples))


class WindowLanguages:
    """The language each window is decoded in, and the transcript's, for one `--language` setting.

    `for_window` is asked before each window is decoded; its answer is stored
    in that window's log record (`record_fields`), and `restore` reads it back
    on resume, so a resumed run decodes in the languages the first run chose
    without detecting again. `summary` gives the transcript's language fields.
    """

    def __init__(self, model: Any, audio: np.ndarray, ranges: Ranges, options: TranscribeOptions) -> None:
        self.model, self.audio, self.ranges = model, audio, ranges
        named = options.fixed_language if is_multilingual(model) else "en"  # model_warnings says why
        self.named = LanguageGuess(named, 1.0) if named else None
        self.per_window = options.language_per_window and self.named is None
        self.recording: LanguageGuess | None = None
        self.detected = False
        self.by_window: dict[int, LanguageGuess | None] = {}

    def restore(self, index: int, record: dict[str, Any]) -> None:
        """Take the language of a window finished by an earlier run."""
        guess = LanguageGuess.from_dict(record) if record.get("language_probability") is not None else None
        self.by_window[index] = guess
        if not self.detected:
            self.recording, self.detected = guess, True

    def fix(self, guess: LanguageGuess | None) -> None:
        """Take the recording's language as detected elsewhere (a spread job's plan, pipeline/spread.py)."""
        self.recording, self.detected = guess, True

    def for_window(self, index: int, start_s: float, end_s: float) -> LanguageGuess | None:
        """The language to decode window `index` in (None: no speech to tell it from; Whisper decides)."""
        if self.named is not None:
            guess: LanguageGuess | None = self.named
        elif self.per_window:
            guess = detect_language(self.model, self.audio, clip_ranges(self.ranges, start_s, end_s), samples=1)
        else:
            if not self.detected:
                self.recording, self.detected = detect_language(self.model, self.audio, self.ranges), True
            guess = self.recording
        self.by_window[index] = guess
        return guess

    @staticmethod
    def record_fields(guess: LanguageGuess | None) -> dict[str, Any]:
        """What a window's log record (and the transcript) says of its language."""
        if guess is None:
            return {"language": None, "language_probability": None, "language_samples": []}
        return guess.to_dict()

    def summary(self) -> dict[str, Any]:
        """language, language_probability and language_samples of the whole transcript."""
        if self.named is not None:
            return self.record_fields(self.named)
        if self.per_window:
            windows = [self.by_window[i] for i in sorted(self.by_window)]
            return self.record_fields(combine([s for g in windows if g is not None for s in g.samples]))
        return self.record_fields(self.recording)


def model_warnings(model: Any, options: TranscribeOptions, model_id: str) -> list[str]:
    """What the model cannot do of what the options ask, in words for the run summary."""
    if is_multilingual(model):
        return []
    warnings = []
    if options.language == PER_WINDOW:
        warnings.append(f"model {model_id} is English-only: --language {PER_WINDOW} cannot tell languages "
                        "apart, so every window was transcribed as English; use a multilingual model (base, small...)")
    elif options.language not in (None, "en"):
        warnings.append(f"model {model_id} is English-only: --language {options.language} was ignored and the "
                        "speech transcribed as English; use a multilingual model (base, small...) for other languages")
    if options.task == "translate":
        warnings.append(f"model {model_id} is English-only: --task translate needs a multilingual model; "
                        "the output is an English transcription")
    return warnings
