"""Guards against Whisper's hallucinations: words on silence, noise or music, and repetition loops.

Pure functions on whisper-shaped segment dicts (`start`, `end`, `text`,
`avg_logprob`, `no_speech_prob`, `compression_ratio`); asr.py calls them on
every window and re-decodes what `loop_spans` finds. Each guard that fires is
counted, and the counts travel in the transcript's `guards` object and the
task's result (docs/transcripts.md):

* ``no_speech``: Whisper itself says there is no speech (no-speech probability
  over 0.6 and average log-probability under -1.0). faster-whisper's sequential
  decoding drops such segments; its batched pipeline applies no such rule.
* ``outside_speech``: the segment lies (80 % or more) outside every VAD speech
  range and Whisper's no-speech probability is over 0.6. Two independent
  signals must agree, so speech the VAD missed survives with `--no-vad`.
* ``phrases``: a phrase Whisper is known to write on silence ("Thank you.",
  "Thanks for watching!", "you", a lone ".") with weak evidence of speech
  (no-speech probability over 0.3, log-probability under -1.0, or mostly
  outside VAD speech). On real speech these phrases come with no-speech
  probabilities under 0.2 and survive.
* ``loops``: stretches decoded again because their text looped (compression
  ratio over 2.4, or one text more than twice in a row). The second decoding
  replaces the first, unless the first was confident speech and the second a
  guess or a worse loop: then the speaker did repeat themself, and the first
  decoding stays, joined into one segment so that no text repeats more than
  twice in a row.
* ``repeats``: segments dropped because the same text came more than twice in
  a row even after the re-decode; the first of the run is kept.

The thresholds are faster-whisper's own defaults where it has one; what tiny.en
measured behind the others is in tests/pipeline/test_guards.py.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any

Segment = dict[str, Any]
Ranges = list[tuple[float, float]]

#: the names of the counts, in the order the docs list them
GUARDS = ("no_speech", "outside_speech", "phrases", "loops", "repeats")

NO_SPEECH_PROB = 0.6  # faster-whisper's no_speech_threshold
LOW_LOGPROB = -1.0  # faster-whisper's log_prob_threshold
LOOP_COMPRESSION = 2.4  # faster-whisper's compression_ratio_threshold
#: a known silence phrase needs only this much no-speech probability (real speech measured <= 0.19)
PHRASE_NO_SPEECH_PROB = 0.3
#: a segment more than this share of which lies outside VAD speech is outside speech
OUTSIDE_SHARE = 0.8
#: the same text this many times in a row is allowed ("No. No."); one more is a loop
MAX_RUN = 2
#: the fallbacks of a re-decode: faster-whisper's temperature ladder, no previous text as prompt
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

#: what Whisper writes on silence, noise and music (normalised: lower case, no punctuation)
SILENCE_PHRASES = frozenset(
    {
        "",  # punctuation only: ".", "...", "♪"
        "you",
        "thank you",
        "thank you very much",
        "thank you so much",
        "thanks",
        "bye",
        "bye bye",
        "music",
        "applause",
        "silence",
    }
)
#: parts that mark a video-outro hallucination wherever they are in the text
SILENCE_MARKERS = ("for watching", "subscribe", "next video", "amara.org", "subtitles by")

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation.replace(chr(39), ''))}♪♫¿¡…“”„«»]")


def normalise(text: str) -> str:
    """Lower case, punctuation (but apostrophes) and extra spaces removed: what two texts compare on."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def zero_counts() -> dict[str, int]:
    """Every guard at zero: the `guards` object of a transcript where none fired."""
    return dict.fromkeys(GUARDS, 0)


def add_counts(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """`total` plus `more`, key by key (a missing key counts as zero)."""
    return {name: total.get(name, 0) + more.get(name, 0) for name in GUARDS}


def speech_share(segment: Segment, ranges: Ranges) -> float:
    """The part of the segment's time that lies inside VAD speech (a zero-length segment: 1 if inside)."""
    start, end = segment["start"], segment["end"]
    if end <= start:
        return 1.0 if any(a <= start <= b for a, b in ranges) else 0.0
    inside = sum(max(0.0, min(end, b) - max(start, a)) for a, b in ranges)
    return min(1.0, inside / (end - start))


def is_silence_phrase(text: str) -> bool:
    """True for what Whisper writes when nobody speaks ("Thank you.", "Thanks for watching!")."""
    words = normalise(text)
    return words in SILENCE_PHRASES or any(marker in words for marker in SILENCE_MARKERS)


def non_speech_reason(segment: Segment, ranges: Ranges) -> str | None:
    """The guard that drops this segment as words without speech, or None to keep it."""
    no_speech = segment.get("no_speech_prob", 0.0)
    low_logprob = segment.get("avg_logprob", 0.0) < LOW_LOGPROB
    if no_speech > NO_SPEECH_PROB and low_logprob:
        return "no_speech"
    outside = speech_share(segment, ranges) < 1.0 - OUTSIDE_SHARE
    if no_speech > NO_SPEECH_PROB and outside:
        return "outside_speech"
    if is_silence_phrase(segment["text"]) and (no_speech > PHRASE_NO_SPEECH_PROB or low_logprob or outside):
        return "phrases"
    return None


def drop_non_speech(segments: list[Segment], ranges: Ranges) -> tuple[list[Segment], Counter[str]]:
    """The segments with speech evidence, and how many each guard dropped."""
    kept: list[Segment] = []
    dropped: Counter[str] = Counter()
    for seg in segments:
        reason = non_speech_reason(seg, ranges)
        if reason is None:
            kept.append(seg)
        else:
            dropped[reason] += 1
    return kept, dropped


def _runs(segments: list[Segment]) -> list[tuple[int, int]]:
    """(first, last + 1) index of each run of consecutive segments with the same normalised text."""
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(segments) + 1):
        if i == len(segments) or normalise(segments[i]["text"]) != normalise(segments[start]["text"]):
            runs.append((start, i))
            start = i
    return runs


def loop_spans(segments: list[Segment]) -> Ranges:
    """(start_s, end_s) of each stretch whose text loops, overlapping stretches merged.

    A loop is a segment whose text compresses more than 2.4 times (the same
    words over and over inside it), or more than MAX_RUN segments in a row with
    the same text.
    """
    spans = [(seg["start"], seg["end"]) for seg in segments if seg.get("compression_ratio", 0.0) > LOOP_COMPRESSION]
    spans += [(segments[a]["start"], segments[b - 1]["end"]) for a, b in _runs(segments) if b - a > MAX_RUN]
    merged: Ranges = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def is_confident(segments: list[Segment]) -> bool:
    """Speech Whisper is sure of: some segments, none likely silence, log-probability over -1.0 on average."""
    if not segments:
        return False
    mean_logprob = sum(seg.get("avg_logprob", 0.0) for seg in segments) / len(segments)
    return mean_logprob >= LOW_LOGPROB and all(seg.get("no_speech_prob", 0.0) <= NO_SPEECH_PROB for seg in segments)


def keep_first_decoding(first: list[Segment], second: list[Segment]) -> bool:
    """Whether a loop's first decoding stays: it was confident speech and the second decoding (with
    sampling temperatures) is a guess, nothing, or a worse loop (its text compresses more). Real
    repeated speech decodes like that: tiny.en is sure of six repeats of one sentence (log-prob
    -0.13) and samples nonsense for them (-1.7), or one syllable over and over ("roundfashchchch...")."""

    def compression(segments: list[Segment]) -> float:
        return max((seg.get("compression_ratio", 0.0) for seg in segments), default=0.0)

    worse_loop = compression(second) > max(compression(first), LOOP_COMPRESSION)
    return is_confident(first) and (not is_confident(second) or worse_loop)


def merge(segments: list[Segment]) -> Segment:
    """One segment spanning `segments` (in order), their texts, tokens and words joined."""
    first = segments[0]
    merged = {**first, "start": first["start"], "end": max(seg["end"] for seg in segments)}
    merged["text"] = "".join(seg["text"] for seg in segments)
    merged["tokens"] = [t for seg in segments for t in seg.get("tokens", [])]
    merged["avg_logprob"] = sum(seg.get("avg_logprob", 0.0) for seg in segments) / len(segments)
    if "words" in first:
        merged["words"] = [w for seg in segments for w in seg.get("words", [])]
    return merged


def collapse_repeats(segments: list[Segment]) -> tuple[list[Segment], int]:
    """Runs of more than MAX_RUN segments with the same text cut to their first; and how many were dropped."""
    kept: list[Segment] = []
    dropped = 0
    for a, b in _runs(segments):
        if b - a > MAX_RUN:
            kept.append({**segments[a], "flags": [*segments[a].get("flags", []), "repeats_dropped"]})
            dropped += b - a - 1
        else:
            kept += segments[a:b]
    return kept, dropped
