"""The speaker measurements of docs/speakers.md on real speech: enrollment with several clips, and the one-voice threshold.

Recordings (tests/data/fetch_real.py, fetched on first use): the meeting
excerpts dev00 and dev01 (two people, far-field, reference turns in RTTM) and
the LibriVox reading sonnet001 (one person). Needs the `diarization` extra.

enroll     each person of one excerpt enrolled with the clips (1-3 s) of their
           speech alone in it, the reader with four 3 s clips of seconds 2-17;
           matched against each person's speech alone in the other excerpt and
           seconds 20-50 of the reading. Prints, for each way of making one
           embedding of a person's clips, the similarity to the right person
           and the margin over the nearest wrong one.
threshold  the closest pair of centroids (cosine) of the estimated 2-split of
           one-voice recordings (the reading and cuts of it, each person's speech
           alone, each espeak voice of tests/data/dialogue.flac alone) and
           two-voice ones (the excerpts, 10-20 s cuts of them where each person
           speaks 2 s alone, voices joined, the espeak dialogue), and the
           speakers found; with --sweep, how many come out right at each
           threshold (a few minutes).

Usage: python bench/bench_speakers.py [enroll] [threshold] [--sweep]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "data")]

from fetch_real import fetch, fetch_speakers, rttm_turns  # noqa: E402  (tests/data/fetch_real.py)
from scribefleet.options import TranscribeOptions  # noqa: E402
from scribefleet.pipeline import diarize as diarization  # noqa: E402
from scribefleet.pipeline.media import decode_audio  # noqa: E402
from scribefleet.pipeline.speakers import _embed, person_embedding  # noqa: E402
from scribefleet.pipeline.vad import speech_ranges  # noqa: E402

RATE = 16000
Turn = tuple[float, float, str]


def alone(truth: list[Turn], min_s: float = 0.3) -> dict[str, list[tuple[float, float]]]:
    """speaker -> the stretches where the reference has only them speak."""
    edges = sorted({t for start, end, _ in truth for t in (start, end)})
    stretches: dict[str, list[tuple[float, float]]] = {}
    for a, b in zip(edges, edges[1:]):
        who = {w for s, e, w in truth if s <= a and b <= e}
        if len(who) == 1 and b - a >= min_s:
            (speaker,) = who
            own = stretches.setdefault(speaker, [])
            if own and abs(own[-1][1] - a) < 1e-6:
                own[-1] = (own[-1][0], b)
            else:
                own.append((a, b))
    return stretches


def cut(audio: np.ndarray, start: float, end: float) -> np.ndarray:
    return audio[int(start * RATE) : int(end * RATE)]


def meetings() -> dict[str, tuple[np.ndarray, list[Turn]]]:
    folder = fetch_speakers()
    return {uri: (decode_audio(folder / f"{uri}.wav", max_file_mb=50), turns)
            for uri, turns in sorted(rttm_turns(folder / "debug.development.rttm").items())}  # fmt: skip


def enroll(recordings: dict[str, tuple[np.ndarray, list[Turn]]], reading: np.ndarray) -> None:
    encoder = diarization.voice_encoder("cpu", 1)

    def embed(audio: np.ndarray) -> np.ndarray:
        return _embed(diarization.embed_windows, encoder, audio)

    for enroll_from, test_on in (("dev00", "dev01"), ("dev01", "dev00")):
        audio, truth = recordings[enroll_from]
        clips: dict[str, list[np.ndarray]] = {}
        for who, stretches in alone(truth).items():
            for start, end in stretches:
                while end - start >= 1.0:
                    clips.setdefault(who, []).append(cut(audio, start, min(end, start + 3.0)))
                    start += 3.0
        clips["reader"] = [cut(reading, s, s + 3) for s in (2, 6, 10, 14)]
        other, other_truth = recordings[test_on]
        voices = {who: embed(np.concatenate([cut(other, s, e) for s, e in st])) for who, st in alone(other_truth).items()}
        voices["reader"] = embed(cut(reading, 20, 50))
        units = {who: np.stack([embed(c) for c in cl]) for who, cl in clips.items()}
        ways = {
            "one clip (averaged over the choice)": lambda who, v: float(np.mean(units[who] @ v)),
            "best match over the clips": lambda who, v: float(np.max(units[who] @ v)),
            "all windows pooled": lambda who, v: float(embed(np.concatenate(clips[who])) @ v),
            "mean of unit embeddings (used)": lambda who, v: float(person_embedding(list(units[who])) @ v),
        }
        print(f"enrolled from {enroll_from} ({', '.join(f'{w}: {len(c)} clips' for w, c in clips.items())}), "
              f"matched in {test_on} and the reading's seconds 20-50")  # fmt: skip
        for way, similarity in ways.items():
            cells = []
            for voice, vector in voices.items():
                scores = {who: similarity(who, vector) for who in clips}
                own, wrong = scores[voice], max(s for who, s in scores.items() if who != voice)
                cells.append(f"{voice} {own:.3f} (margin {own - wrong:+.3f})")
            print(f"  {way:<36} " + "  ".join(cells))


def threshold_cases(recordings: dict[str, tuple[np.ndarray, list[Turn]]],
                    reading: np.ndarray) -> list[tuple[int, str, np.ndarray]]:  # fmt: skip
    """(true count, name, audio) of each one-voice and two-voice recording."""
    cases: list[tuple[int, str, np.ndarray]] = [(1, "sonnet001 whole", reading)]
    for length, step in ((10, 10), (20, 10), (30, 15)):
        for s in range(0, int(reading.size / RATE) - length + 1, step):
            cases.append((1, f"sonnet001 {s}-{s + length} s", cut(reading, s, s + length)))
    pooled: dict[str, list[np.ndarray]] = {}
    for uri, (audio, truth) in recordings.items():
        for who, stretches in alone(truth).items():
            solo = np.concatenate([cut(audio, s, e) for s, e in stretches])
            pooled.setdefault(who, []).append(solo)
            cases.append((1, f"{uri} {who} alone", solo))
            cases += [(1, f"{uri} {who} {s:.1f}-{e:.1f} s", cut(audio, s, e)) for s, e in stretches if e - s >= 5]
    cases += [(1, f"{who} alone, both excerpts", np.concatenate(parts)) for who, parts in pooled.items()]
    for uri, (audio, truth) in recordings.items():
        cases.append((2, f"{uri} whole", audio))
        stretches = alone(truth)
        for length in (10, 15, 20):
            for s in range(0, 30 - length + 1, 5):
                share = [sum(max(0.0, min(e, s + length) - max(b, s)) for b, e in st) for st in stretches.values()]
                if min(share) >= 2.0:
                    cases.append((2, f"{uri} {s}-{s + length} s", cut(audio, s, s + length)))
    dialogue = decode_audio(ROOT / "tests" / "data" / "dialogue.flac", max_file_mb=50)
    turns = json.loads((ROOT / "tests" / "data" / "dialogue.json").read_text())["turns"]
    for who in ("Marcus", "Fiona"):
        cases.append((1, f"espeak {who} alone", np.concatenate([cut(dialogue, s, e) for s, e, w in turns if w == who])))
    cases.append((2, "espeak dialogue", dialogue))
    joined = {who: np.concatenate(parts) for who, parts in pooled.items()}
    cases.append((2, "MEE009 + MEE012 alone, joined", np.concatenate([joined["MEE009"], joined["MEE012"]])))
    cases += [(2, f"reader 0-20 s + {who} alone", np.concatenate([cut(reading, 0, 20), joined[who]])) for who in joined]
    return cases


def estimate(audio: np.ndarray) -> tuple[float | None, int]:
    """(closest pair of centroids of the estimated 2-split, speakers found)."""
    seen: list[tuple[int, float]] = []
    closest = diarization._closest_pair

    def spy(centroids: np.ndarray) -> float:
        value = closest(centroids)
        seen.append((centroids.shape[0], value))
        return value

    diarization._closest_pair = spy
    try:
        result = diarization.diarize(audio, speech_ranges(audio, batched=True), TranscribeOptions(diarize=True),
                                     diarization.DiarizerConfig(), threads=1)  # fmt: skip
    finally:
        diarization._closest_pair = closest
    two = [value for count, value in seen if count == 2]
    return (two[0] if two else None), len(result["speakers"])


def threshold(recordings: dict[str, tuple[np.ndarray, list[Turn]]], reading: np.ndarray, sweep: bool) -> None:
    cases = threshold_cases(recordings, reading)
    print(f"closest pair of the estimated 2-split (threshold {diarization._SAME_VOICE}):")
    for count, name, audio in cases:
        pair, found = estimate(audio)
        shown = "  -  " if pair is None else f"{pair:.3f}"
        print(f"  {'one' if count == 1 else 'two'} voice{'s' if count == 2 else ' '} {name:<36} "
              f"{audio.size / RATE:5.1f} s  {shown}  found {found}")  # fmt: skip
    if not sweep:
        return
    kept = diarization._SAME_VOICE
    try:
        for value in (0.80, 0.82, 0.84, 0.85, 0.86, 0.87, 0.88, 0.90):
            diarization._SAME_VOICE = value
            right = {1: 0, 2: 0}
            for count, _, audio in cases:
                right[count] += estimate(audio)[1] == count
            totals = {n: sum(c == n for c, _, _ in cases) for n in (1, 2)}
            print(f"threshold {value:.2f}: one voice found as one {right[1]}/{totals[1]}, "
                  f"two voices as two {right[2]}/{totals[2]}")  # fmt: skip
    finally:
        diarization._SAME_VOICE = kept


def main() -> None:
    parts = [a for a in sys.argv[1:] if not a.startswith("-")] or ["enroll", "threshold"]
    recordings = meetings()
    reading = decode_audio(fetch() / "sonnet001.wav", max_file_mb=50)
    if "enroll" in parts:
        enroll(recordings, reading)
    if "threshold" in parts:
        threshold(recordings, reading, "--sweep" in sys.argv)


if __name__ == "__main__":
    main()
