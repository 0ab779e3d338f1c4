"""Diarization error rate and speed of the offline backend on espeak conversations whose turns are known.

Recordings:

  dialogue     tests/data/dialogue.flac: two voices (en+m3, en+f4), 8 turns, 38 s
  two-long     built here: the two voices alternating over the 12 sentences of
               tests/data/texts.json, 3 rounds, pauses of 0-1.5 s (some changes with none)
  three-long   the same with a third voice (en+m7) joining
  real-dev00,  real recordings: two people in a meeting (far-field, overlapping now and then), 30 s
  real-dev01   each, with hand-made turns (RTTM); from pyannote.audio's sdist (tests/data/fetch_real.py,
               fetched on first use)

For each it runs `pipeline.diarize.diarize` on the decoded audio with the VAD
ranges of the default (batched) mode, with the speaker count estimated and
given, and prints the DER (pyannote.metrics, no collar, and a 0.25 s collar as
the NIST evaluations use), the speakers found, and audio-seconds per
wall-second. Needs the `diarization` extra and espeak-ng + sox for the built
recordings.  Usage: python bench/bench_diarize.py [--rounds N] [--threads T]

Measured on the 2-core test machine (1 torch thread, under load), DER without
collar / with a 0.25 s collar:

  recording    count given          count estimated
  dialogue     0.5 % / 0.0 %        0.5 % / 0.0 %   (2 found)
  real-dev00   19.2 % / 12.6 %      19.2 % / 12.6 % (2 found)
  real-dev01   23.2 % / 16.2 %      23.2 % / 16.2 % (2 found)

at 6-24 audio-seconds per wall-second (load average 4-6), with the second pass of 0.6 s windows
(docs/speakers.md). Before it: dialogue 3.3 % / 2.6 %, real-dev00 25.4 % / 17.9 %, real-dev01
30.4 % / 24.9 % (both counts), at 15-75 audio-seconds per wall-second; and, not measured again
since (no espeak-ng on the machine): two-long 0.8 % / 0.0 % (both), three-long 0.9 % / 0.1 %
given, 31.7 % / 30.1 % estimated (2 found: resemblyzer hears espeak's en+m3 and en+m7 as one
voice, centroid cosine similarity 0.86).

Before (embedding each stretch of sound every 0.4 s, the tree cut at the
count, the best silhouette, turns ending at every pause): dialogue 9.6 %,
two-long 0.9 %, three-long 1.8 % given / 29.3 % estimated; real-dev00 47 %
given / 73 % estimated (7 found), real-dev01 52 % / 33 %.

The real meeting excerpts are where the offline backend is weakest. Their
reference marks whole turns, pauses and overlaps included: a pause of under
1 s between two turns of one speaker is bridged, longer pauses and overlaps
(one speaker per instant here) still count as missed (6.1 s of dev00's
28.5 s, 3.2 s of dev01's 16.9 s). resemblyzer's embeddings of far-field
voices separate them only just (on dev01 even the true split has a lower
silhouette than the one found), so small changes move the numbers a lot:
with the sequential mode's VAD ranges (`batch_size` 1), before the second
pass, dev00 was 17.8 % with the count given but 44.7 % estimated (3 found),
dev01 30.3 % both.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
sys.path[:0] = [str(ROOT / "src"), str(DATA)]

from make_dialogue import RATE, speak, trim  # noqa: E402  (tests/data/make_dialogue.py)
from scribefleet.options import TranscribeOptions  # noqa: E402
from scribefleet.pipeline.diarize import DiarizerConfig, diarize  # noqa: E402
from scribefleet.pipeline.media import decode_audio  # noqa: E402
from scribefleet.pipeline.vad import speech_ranges  # noqa: E402

Turn = tuple[float, float, str]


def conversation(voices: list[str], rounds: int, seed: int = 3) -> tuple[np.ndarray, list[Turn]]:
    """The sentences of texts.json spoken in turn by `voices`, `rounds` times, and the true turns."""
    sentences = [text for _, text in json.loads((DATA / "texts.json").read_text()).values()]
    rng = random.Random(seed)
    parts, turns, at = [np.zeros(RATE // 2, dtype=np.float32)], [], RATE // 2
    previous = None
    for _ in range(rounds):
        for text in rng.sample(sentences, len(sentences)):
            voice = rng.choice([v for v in voices if v != previous])
            previous = voice
            speech = trim(speak(voice, text))
            turns.append((at / RATE, (at + speech.size) / RATE, voice))
            pause = np.zeros(int(rng.choice([0.0, 0.3, 0.6, 1.0, 1.5]) * RATE), dtype=np.float32)
            parts += [speech, pause]
            at += speech.size + pause.size
    return np.concatenate(parts), turns


def der(truth: list[Turn], turns: list, duration_s: float, collar: float) -> float:
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference, hypothesis = Annotation(), Annotation()
    for start, end, speaker in truth:
        reference[Segment(start, end)] = speaker
    for start, end, speaker in turns:
        hypothesis[Segment(start, end)] = speaker
    uem = Timeline([Segment(0.0, duration_s)])
    return DiarizationErrorRate(collar=collar)(reference, hypothesis, uem=uem)


def measure(name: str, audio: np.ndarray, truth: list[Turn], threads: int) -> None:
    duration_s = audio.shape[0] / RATE
    ranges = speech_ranges(audio, batched=True)
    count = len({speaker for _, _, speaker in truth})
    for label, options in (("estimated", {}), (f"speakers={count}", {"speakers": count})):
        started = time.monotonic()
        result = diarize(audio, ranges, TranscribeOptions(diarize=True, **options), DiarizerConfig(), threads=threads)
        wall_s = time.monotonic() - started
        print(
            f"{name:<11} {duration_s:6.1f} s  {label:<11} speakers {len(result['speakers'])}/{count}  "
            f"DER {der(truth, result['turns'], duration_s, 0.0):6.1%}  "
            f"DER(collar 0.25) {der(truth, result['turns'], duration_s, 0.25):6.1%}  "
            f"{duration_s / wall_s:6.1f} audio-s/s"
        )


def real_recordings() -> list[tuple[str, np.ndarray, list[Turn]]]:
    """The real two-speaker meeting excerpts of tests/data/fetch_real.py (fetched on first use), with their turns."""
    from fetch_real import fetch_speakers, rttm_turns

    folder = fetch_speakers()
    truth = rttm_turns(folder / "debug.development.rttm")
    return [(f"real-{uri}", decode_audio(folder / f"{uri}.wav", max_file_mb=50), turns) for uri, turns in sorted(truth.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the 12 sentences in the built recordings")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    truth = [tuple(t) for t in json.loads((DATA / "dialogue.json").read_text())["turns"]]
    # load the encoder once, so the first recording's speed is not its load time
    diarize(np.zeros(RATE, dtype=np.float32), [], TranscribeOptions(diarize=True), DiarizerConfig(), threads=args.threads)
    measure("dialogue", decode_audio(DATA / "dialogue.flac", max_file_mb=50), truth, args.threads)
    for name, audio, turns in real_recordings():
        measure(name, audio, turns, args.threads)
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        print("espeak-ng or sox missing: the built recordings are skipped (apt-get install -y espeak-ng sox)")
        return
    for name, voices in (("two-long", ["en+m3", "en+f4"]), ("three-long", ["en+m3", "en+f4", "en+m7"])):
        audio, turns = conversation(voices, args.rounds)
        measure(name, audio, turns, args.threads)


if __name__ == "__main__":
    main()
