"""Test helpers shared by every test folder: ground-truth texts and WER."""

from __future__ import annotations

import json
import os
import select
from pathlib import Path

DATA = Path(__file__).parent / "data"
TEXTS: dict[str, str] = {name: text for name, (_voice, text) in json.loads((DATA / "texts.json").read_text()).items()}
TEXTS["long_pauses.wav"] = " ".join(TEXTS[f"en0{i}.wav"] for i in range(1, 5))


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate after lower-casing and stripping punctuation."""
    import jiwer

    norm = jiwer.Compose(
        [jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip(), jiwer.ReduceToListOfListOfWords()]
    )
    return jiwer.wer(reference, hypothesis, reference_transform=norm, hypothesis_transform=norm)


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
