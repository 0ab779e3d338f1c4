"""Test helpers shared by every test folder: ground-truth texts and WER."""

from __future__ import annotations

import json
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
