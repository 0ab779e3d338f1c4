"""Short files of real recorded speech with known texts: sonnet001.wav read over and over, cut at the pauses between lines.

Voice notes, calls and podcast clips are 5 to 60 s long; this makes such a
corpus from the real-speech recording (fetch_real.py). The recording is read
`repeats` times with 1.5 s pauses between readings (the bench's 11-minute
recording, tests/data/real_long.py), then cut at the silences between its
lines into clips of `min_s` to `max_s` seconds (lengths drawn with a seeded
random generator), each clip's reference being the lines it holds.

`LINE_CUTS_S` are the silences between the recording's 15 lines (the heading
"1" and the sonnet's 14), measured once by ear and from word timestamps: each
lies in the pause after a line's last word and before the next one's first.
"""

from __future__ import annotations

import random
import wave
from pathlib import Path

import numpy as np

SR = 16000
GAP_S = 1.5  # between two readings, as in the bench's long recording
LINE_CUTS_S = (1.8, 5.7, 9.03, 11.9, 14.8, 18.84, 22.65, 25.6, 30.9, 34.16, 36.8, 40.35, 44.15, 48.43)


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == SR and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(samples.astype(np.int16).tobytes())


def lines_of(real: Path) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
    """The recording read once with its pause after it, and each of its lines as (samples, text)."""
    audio = read_wav(real / "sonnet001.wav")
    texts = [line.strip() for line in (real / "sonnet001.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(texts) == len(LINE_CUTS_S) + 1, "one cut between each two lines"
    reading = np.concatenate([audio, np.zeros(int(GAP_S * SR), dtype=np.int16)])
    edges = [0, *(round(c * SR) for c in LINE_CUTS_S), reading.shape[0]]
    return reading, [(reading[a:b], text) for (a, b), text in zip(zip(edges, edges[1:]), texts)]


def cut_clips(real: Path, folder: Path, *, repeats: int = 12, min_s: float = 5.0, max_s: float = 60.0,
              seed: int = 7, limit: int | None = None) -> dict[str, str]:
    """Write clips `clip000.wav`... of the recording read `repeats` times into `folder`; returns name -> text.

    `limit`: at most this many clips (the first ones), for tests.
    """
    _, lines = lines_of(real)
    units = lines * repeats
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    refs: dict[str, str] = {}
    i = 0
    while i < len(units) and (limit is None or len(refs) < limit):
        target_s, parts, length = rng.uniform(min_s, max_s), [], 0
        while i < len(units) and (not parts or (length < target_s * SR and length + units[i][0].shape[0] <= max_s * SR)):
            parts.append(units[i])
            length += units[i][0].shape[0]
            i += 1
        if length < min_s * SR and refs:
            break  # a last piece too short to count as a clip of its own
        name = f"clip{len(refs):03d}.wav"
        write_wav(folder / name, np.concatenate([p for p, _ in parts]))
        refs[name] = " ".join(text for _, text in parts)
    return refs
