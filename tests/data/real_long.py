"""One long file of real recorded speech: the real recordings (fetch_real.py) read over and over with pauses.

The one builder of the long recording that the spread tests, the CLI's progress
test and the benches (bench_spread.py, bench_transcribe.py's `real` corpus)
transcribe: each recording followed by a pause of `GAP_S` (1.5 s), the whole
sequence repeated `repeats` times, as 16-bit 16 kHz mono; its reference text is
the recordings' texts in the same order, repeated alike. Keep it as it is: the
benches' numbers are comparable across runs only while the file is the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data.fetch_real import fetch
from data.real_clips import GAP_S, SR, read_wav, write_wav


def sonnet() -> Path:
    """The LibriVox reading of Sonnet 1 (53 s), fetched on first use."""
    return fetch() / "sonnet001.wav"


def _one_reading(recordings: Sequence[Path]) -> tuple[list[np.ndarray], list[str]]:
    gap = np.zeros(int(GAP_S * SR), dtype=np.int16)
    parts: list[np.ndarray] = []
    for wav in recordings:
        parts += [read_wav(wav), gap]
    return parts, [wav.with_suffix(".txt").read_text(encoding="utf-8") for wav in recordings]


def repeats_for(minutes: float, recordings: Sequence[Path] | None = None) -> int:
    """How many readings (at least one) make a recording about `minutes` long."""
    parts, _ = _one_reading(recordings or [sonnet()])
    return max(1, round(minutes * 60 * SR / sum(len(p) for p in parts)))


def write_repeated(path: Path, repeats: int, recordings: Sequence[Path] | None = None) -> str:
    """Write `recordings` (default: the sonnet), each with its pause, read `repeats` times into `path`; its text."""
    parts, texts = _one_reading(recordings or [sonnet()])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, np.concatenate(parts * repeats))
    return " ".join(texts * repeats)
