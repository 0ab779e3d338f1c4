"""Shaping decoded segments into what a person reads: cues of subtitle size, in order, never overlapping.

Batched decoding gives one segment per clip of up to 30 s (its text is decoded
without timestamp tokens, which is what keeps its accuracy: in timestamp mode a
clip's decoding may end early and drop a sentence). Its words carry times
(cross-attention alignment), so the clip is cut into cues at the words: after a
sentence ends, at a pause, or before a cue grows past what a viewer can read.

`tidy` is the last step for every mode: segments sorted by start, each ending
before the next begins, none with an end before its start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: a cue longer than this (characters, about two subtitle lines) is cut at a word
MAX_CUE_CHARS = 84
#: nor longer than this many seconds on screen
MAX_CUE_S = 7.0
#: a silence this long between two words ends a cue
PAUSE_S = 0.8
#: a cue is shown at least this long where the time around it is free (a one-word cue's aligned word can
#: last no time at all: " Yeah." at 17.56 --> 17.56 on a real meeting)
MIN_CUE_S = 0.5
_SENTENCE_END = (".", "?", "!", "…", "。", "？", "！")
_CLAUSE_END = (",", ";", ":", "，", "、")

Encode = Callable[[str], list[int]]


def _ends(word: dict[str, Any], marks: tuple[str, ...]) -> bool:
    return word["word"].rstrip().rstrip("\"'”)»]").endswith(marks)


def _cut_points(words: list[dict[str, Any]]) -> list[int]:
    """Indexes i where a new cue starts at words[i] (0 is implied)."""
    cuts: list[int] = []
    start = 0
    chars = 0
    last_clause = -1  # index after the last clause-ending word in the current cue
    for i, word in enumerate(words):
        chars += len(word["word"])
        if i + 1 == len(words):
            break
        nxt = words[i + 1]
        too_long = chars + len(nxt["word"]) > MAX_CUE_CHARS or nxt["end"] - words[start]["start"] > MAX_CUE_S
        if _ends(word, _CLAUSE_END):
            last_clause = i + 1
        if _ends(word, _SENTENCE_END) or nxt["start"] - word["end"] >= PAUSE_S:
            cut = i + 1
        elif too_long:
            # prefer the last comma when it leaves a cue of a useful size, else cut here
            cut = last_clause if last_clause - start >= max(2, (i + 1 - start) // 3) else i + 1
        else:
            continue
        cuts.append(cut)
        start, last_clause = cut, -1
        chars = sum(len(w["word"]) for w in words[start : i + 1])
    return cuts


def split_by_words(segment: dict[str, Any], encode: Encode) -> list[dict[str, Any]]:
    """The segment as one or more cues cut at its words; a segment without words is returned as it is."""
    words = segment.get("words") or []
    if not words:
        return [segment]
    pieces = []
    bounds = [0, *_cut_points(words), len(words)]
    for lo, hi in zip(bounds, bounds[1:]):
        part = words[lo:hi]
        text = "".join(w["word"] for w in part)
        piece = dict(segment)
        piece |= {"start": part[0]["start"], "end": part[-1]["end"], "text": text, "words": part}
        piece["tokens"] = encode(text) if len(bounds) > 2 else segment["tokens"]
        pieces.append(piece)
    return pieces


def tidy(segments: list[dict[str, Any]], duration_s: float | None = None) -> list[dict[str, Any]]:
    """Segments in order of start, each ending no later than the next starts and no earlier than it starts,
    and lasting MIN_CUE_S where the time around it is free (later first, then earlier; never past `duration_s`).

    Two segments that start together (a clip's words and a second decoding of the same speech) are not
    made into a cue of no length, which a player never shows: the shorter keeps its time and the other
    follows it; the same span twice becomes one cue."""
    ordered: list[dict[str, Any]] = []
    for seg in sorted(segments, key=lambda seg: (seg["start"], seg["end"])):
        prev = ordered[-1] if ordered else None
        if prev is not None and seg["start"] < prev["end"]:
            if seg["start"] > prev["start"]:
                prev["end"] = seg["start"]
            elif seg["end"] > prev["end"]:
                seg["start"] = prev["end"]
            else:
                _join(prev, seg)
                continue
        ordered.append(seg)
    for i, seg in enumerate(ordered):
        seg["end"] = max(seg["end"], seg["start"])
        _widen(seg, ordered[i - 1]["end"] if i else 0.0, ordered[i + 1]["start"] if i + 1 < len(ordered) else duration_s)
        words = seg.get("words")
        if words:  # words stay inside their segment
            for w in words:
                w["start"] = min(max(w["start"], seg["start"]), seg["end"])
                w["end"] = min(max(w["end"], w["start"]), seg["end"])
    return ordered


def _widen(seg: dict[str, Any], free_from: float, free_until: float | None) -> None:
    """A cue shorter than MIN_CUE_S made longer into the free time after it, then before it (never over a
    neighbour): a cue of no length is never shown, one of 0.06 s only flickers."""
    short = MIN_CUE_S - (seg["end"] - seg["start"])
    if short <= 0:
        return
    later = short if free_until is None else max(0.0, min(short, free_until - seg["end"]))
    seg["end"] = round(seg["end"] + later, 3)
    seg["start"] = round(seg["start"] - max(0.0, min(short - later, seg["start"] - free_from)), 3)


def _join(seg: dict[str, Any], other: dict[str, Any]) -> None:
    """`other`'s text, tokens and words appended to `seg`."""
    seg["text"] = seg.get("text", "") + other.get("text", "")
    for key in ("tokens", "words"):
        if key in seg or key in other:
            seg[key] = list(seg.get(key) or []) + list(other.get(key) or [])
