"""Test helpers shared by every test folder: ground-truth texts and WER."""

from __future__ import annotations

import json
import os
import select
from pathlib import Path

DATA = Path(__file__).parent / "data"
TEXTS: dict[str, str] = {name: text for name, (_voice, text) in json.loads((DATA / "texts.json").read_text()).items()}
TEXTS["long_pauses.wav"] = " ".join(TEXTS[f"en0{i}.wav"] for i in range(1, 5))


#: number words as digits, on both sides: Whisper writes "ten until six" or "10 until 6" depending on the faintest
#: change in the samples, and neither is an error (Whisper's own English normalizer does the same for its WER)
_NUMBERS = {word: str(i) for i, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())} | {
    word: str(10 * i) for i, word in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), start=3)}  # fmt: skip


def _norm():  # type: ignore[no-untyped-def]
    import jiwer

    return jiwer.Compose(
        [jiwer.SubstituteRegexes({r"\s+": " "}), jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip(),
         jiwer.SubstituteWords(_NUMBERS), jiwer.ReduceToListOfListOfWords()]  # fmt: skip
    )


def normalize(text: str) -> list[str]:
    """The words WER compares: lower case, no punctuation, number words as digits."""
    return _norm()(text)[0]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate after lower-casing, stripping punctuation and writing number words as digits."""
    import jiwer

    return jiwer.wer(reference, hypothesis, reference_transform=_norm(), hypothesis_transform=_norm())


def exits_within(pid: int, timeout_s: float = 10.0) -> bool:
    """True once process `pid` (any process, not only a child) has exited, through a pidfd: no polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout_s)[0])
    finally:
        os.close(fd)


def read_cues(fmt: str, text: str) -> list[tuple[int | None, int | None, str]]:
    """(start_ms, end_ms, text) of each cue of an output file, parsed back the way a player would; txt has no times."""
    import json as _json

    if fmt == "srt":
        import srt

        return [(c.start // _MS, c.end // _MS, c.content) for c in srt.parse(text)]
    if fmt == "vtt":
        import webvtt

        return [(_vtt_ms(c.start), _vtt_ms(c.end), c.text) for c in webvtt.from_string(text)]
    if fmt == "json":
        return [(round(s["start"] * 1000), round(s["end"] * 1000), s["text"].strip()) for s in _json.loads(text)["segments"]]
    if fmt == "tsv":
        rows = [line.split("\t") for line in text.splitlines()[1:]]
        return [(int(a), int(b), t) for a, b, t in rows]
    if fmt == "txt":
        return [(None, None, line) for line in text.splitlines()]
    raise ValueError(fmt)


def assert_cues_in_order(cues: list[tuple[int | None, int | None, str]]) -> None:
    """Cues start in order, each ends at or after its start and no later than the next one starts."""
    timed = [(s, e) for s, e, _ in cues if s is not None and e is not None]
    for (s, e), (s2, _) in zip(timed, timed[1:] + [(None, None)]):
        assert s <= e, (s, e)
        assert s2 is None or e <= s2, ("overlap", e, s2)


from datetime import timedelta as _timedelta  # noqa: E402

_MS = _timedelta(milliseconds=1)


def _vtt_ms(stamp: str) -> int:
    h, m, rest = stamp.split(":")
    s, ms = rest.split(".")
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)
