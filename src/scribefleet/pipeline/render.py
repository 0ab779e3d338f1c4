"""Output formats: a transcript (openai-whisper's result shape) as srt, vtt, json, txt or tsv.

The transcript dict is what `asr` produces and `transcript.json` stores:

    {"text", "language", "duration",
     "segments": [{"id", "seek", "start", "end", "text", "tokens", "temperature",
                   "avg_logprob", "compression_ratio", "no_speech_prob",
                   "words"?: [{"word", "start", "end", "probability"}]}]}

A diarized transcript (pipeline.speakers.assign_speakers) also carries
`"speakers": [label, ...]` and a `"speaker"` on each segment and word. Then
SRT and TXT prefix each cue or line with `[SPEAKER_00] ` (or the enrolled
name), VTT opens each cue with a `<v SPEAKER_00>` voice tag, TSV gains a
fourth column `speaker`, and JSON carries the fields as they are. An
undiarized transcript renders exactly as before.

Subtitle formats are line-based, so a segment's text can break them: a blank
line ends an SRT cue, `-->` starts a timing line, `<` and `&` are markup in
WebVTT. Cue text is flattened with those sequences neutralised, then laid
out as subtitles are read: a cue of more than LINE_CHARS (42) characters is
two lines as even as its words allow (`_lines`; a cue is cut at about two
lines, segments.MAX_CUE_CHARS; a line may then reach 50 characters rather than
make a third; a longer segment gets lines of at most 42), and timestamps
carry hours (so a 2-hour film keeps counting past 59:59).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from scribefleet.errors import UsageError
from scribefleet.options import FORMATS

_WHITESPACE = re.compile(r"\s+")
_ARROW = re.compile(r"-+>")


def _ms(seconds: float) -> int:
    return max(0, round(float(seconds) * 1000))


def format_timestamp(seconds: float, *, decimal: str = ",") -> str:
    """HH:MM:SS,mmm (SRT) or HH:MM:SS.mmm (VTT); hours grow past 99 rather than wrap."""
    total_ms = _ms(seconds)
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _one_line(text: str) -> str:
    """Collapse newlines/tabs to single spaces: a cue or table row is one line."""
    return _WHITESPACE.sub(" ", text).strip()


def _cue_text(text: str) -> str:
    # '-->' inside text would read as a timing line; '->' is how openai-whisper writes it
    return _ARROW.sub("->", _one_line(text))


def _cues(transcript: dict[str, Any]) -> list[tuple[int, int, str, str | None]]:
    """(start_ms, end_ms, text, speaker) of each segment with text, end never before start."""
    cues = []
    for seg in transcript.get("segments", []):
        text = _cue_text(seg.get("text", ""))
        if not text:
            continue  # an empty cue would end the block early in SRT
        start = _ms(seg["start"])
        cues.append((start, max(start, _ms(seg["end"])), text, _speaker(seg)))
    return cues


#: characters of a subtitle line (the usual broadcast and streaming limit)
LINE_CHARS = 42
#: a longer line still, rather than a third one: a cue cut at 84 characters with a speaker label is two lines
_TWO_LINES_MAX = LINE_CHARS + 8


def _lines(text: str) -> str:
    """A cue's one-line text as the lines a player shows: itself up to LINE_CHARS; else two lines, split where
    a reader expects (`_split_cost`), when neither passes _TWO_LINES_MAX; else lines of at most LINE_CHARS,
    filled in order (a word longer stays whole)."""
    if len(text) <= LINE_CHARS:
        return text
    words = text.split(" ")
    splits = [(" ".join(words[:i]), " ".join(words[i:])) for i in range(1, len(words))]
    fitting = [pair for pair in splits if max(map(len, pair)) <= _TWO_LINES_MAX]
    if fitting:
        return "\n".join(min(fitting, key=_split_cost))
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 1 + len(word) <= LINE_CHARS:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join(lines)


#: words that lean on the next one (articles, prepositions, conjunctions, possessives; English and the other
#: languages tested): a line that ends with one makes the reader wait for the next line to make sense of it
_LEANING = frozenset(
    "a an the i to of in on at by for with from into about and but or nor so if my your his her its our their "
    "der die das ein eine einen und oder mit von zu im "
    "el la los las un una y o de del en con por para "
    "le les une et ou du des au avec pour "
    "il lo gli e di da nel con per".split()
)


def _split_cost(pair: tuple[str, str]) -> int:
    """How badly a cue reads split into these two lines (subtitle practice: as even as the words allow, after
    a sentence or clause rather than inside one, never after a word that leans on the next, neither line past
    LINE_CHARS), in characters of imbalance."""
    first, second = pair
    longer = max(len(first), len(second))
    cost = longer + 2 * max(0, longer - LINE_CHARS)
    end = first[-1:]
    cost += 0 if end in ".?!…" else 3 if end in ",;:" else 10
    last = first.rsplit(" ", 1)[-1].lower()
    if last in _LEANING or last.startswith("["):  # a speaker label alone on its line
        cost += 6
    return cost


def _speaker(seg: dict[str, Any]) -> str | None:
    speaker = seg.get("speaker")
    return _one_line(str(speaker)) or None if speaker is not None else None


def _prefixed(text: str, speaker: str | None) -> str:
    """`[SPEAKER_00] text` for a diarized segment, the text alone otherwise."""
    return f"[{speaker}] {text}" if speaker else text


def render_srt(transcript: dict[str, Any]) -> str:
    """SubRip: numbered cues, comma before the milliseconds."""
    blocks = [
        f"{n}\n{format_timestamp(s / 1000)} --> {format_timestamp(e / 1000)}\n{_lines(_prefixed(text, spk))}\n"
        for n, (s, e, text, spk) in enumerate(_cues(transcript), start=1)
    ]
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _vtt_text(text: str, speaker: str | None) -> str:
    """The cue's text, behind a `<v Speaker>` voice tag when the segment has a speaker."""
    return f"<v {_vtt_escape(speaker)}>{_vtt_escape(_lines(text))}" if speaker else _vtt_escape(_lines(text))


def render_vtt(transcript: dict[str, Any]) -> str:
    """WebVTT: header, dot before the milliseconds, markup characters escaped, speakers as voice tags."""
    blocks = [
        f"{format_timestamp(s / 1000, decimal='.')} --> {format_timestamp(e / 1000, decimal='.')}\n{_vtt_text(text, spk)}\n"
        for s, e, text, spk in _cues(transcript)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render_json(transcript: dict[str, Any]) -> str:
    """openai-whisper's result object as UTF-8 JSON."""
    return json.dumps(transcript, ensure_ascii=False)


def render_txt(transcript: dict[str, Any]) -> str:
    """Plain text, one segment per line (as openai-whisper writes it)."""
    lines = [(_one_line(seg.get("text", "")), _speaker(seg)) for seg in transcript.get("segments", [])]
    return "".join(f"{_prefixed(line, spk)}\n" for line, spk in lines if line)


def render_tsv(transcript: dict[str, Any]) -> str:
    """start<TAB>end<TAB>text in integer milliseconds, under a header line (openai-whisper's tsv);
    a diarized transcript adds a fourth column, speaker (last, so readers of the three columns still work)."""
    diarized = "speakers" in transcript
    rows = ["start\tend\ttext\tspeaker\n" if diarized else "start\tend\ttext\n"]
    for seg in transcript.get("segments", []):
        text = _one_line(seg.get("text", ""))
        if text:
            start = _ms(seg["start"])
            speaker = f"\t{_speaker(seg) or ''}" if diarized else ""
            rows.append(f"{start}\t{max(start, _ms(seg['end']))}\t{text}{speaker}\n")
    return "".join(rows)


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "srt": render_srt,
    "vtt": render_vtt,
    "json": render_json,
    "txt": render_txt,
    "tsv": render_tsv,
}


def render(transcript: dict[str, Any], fmt: str) -> str:
    """The transcript as text in format `fmt` (one of options.FORMATS)."""
    try:
        renderer = RENDERERS[fmt]
    except KeyError:
        raise UsageError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}", format=fmt) from None
    return renderer(transcript)
