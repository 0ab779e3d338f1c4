"""The VAD stage on 1..k threads against faster-whisper's single pass: seconds, and whether the ranges are the same.

The recordings are real recorded speech (tests/data/fetch_real.py: the
LibriVox sonnet) read over and over with 1.5 s pauses, `--minutes` long
(default 11 and 20, as bench_transcribe.py and bench_spread.py build them),
taken as the job takes them (int16 checkpoint samples, then float32). For each
it times faster-whisper's `get_speech_timestamps` and
`scribefleet.pipeline.vad.speech_ranges` (batched mode, the default) on 1 to
`--threads` threads (default 2), interleaved `--repeat` times (default 5), and
prints the best and the median wall time of each, the median's ratio to the
library's, the median CPU time (the work done, whatever the load), how many
pieces the recording is cut into, and whether the ranges are the library's
(same count; the largest shift of an edge). The machine is shared and noisy:
read the ratios, measured in the same run, not the seconds.

Usage: python bench/bench_vad.py [--minutes 11,20] [--threads 2] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from scribefleet.pipeline.checkpoint import dequantize_audio  # noqa: E402
from scribefleet.pipeline.media import SAMPLE_RATE  # noqa: E402
from scribefleet.pipeline.vad import CLIP_MAX_S, FRAME_SAMPLES, PiecewiseSilero, piece_bounds, speech_ranges  # noqa: E402

Ranges = list[tuple[float, float]]


def recording(minutes: float) -> np.ndarray:
    """The sonnet read until the recording is `minutes` long, with 1.5 s pauses, as float32 samples."""
    import wave

    from data.fetch_real import fetch

    with wave.open(str(fetch() / "sonnet001.wav")) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    gap = np.zeros(int(1.5 * SAMPLE_RATE), dtype=np.int16)
    repeats = max(1, round(minutes * 60 * SAMPLE_RATE / (len(samples) + len(gap))))
    return dequantize_audio(np.concatenate([samples, gap] * repeats))


def library(audio: np.ndarray) -> Ranges:
    """faster-whisper's own VAD, one pass on one thread, with the options of batched mode."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(max_speech_duration_s=CLIP_MAX_S, min_silence_duration_ms=160)
    stamps = get_speech_timestamps(audio, options, sampling_rate=SAMPLE_RATE)
    return [(round(s["start"] / SAMPLE_RATE, 3), round(s["end"] / SAMPLE_RATE, 3)) for s in stamps]


def compare(ours: Ranges, theirs: Ranges) -> str:
    if len(ours) != len(theirs):
        return f"{len(ours)} ranges against the library's {len(theirs)}"
    shift = max((abs(a - b) for r, q in zip(ours, theirs) for a, b in zip(r, q)), default=0.0)
    return f"the library's {len(ours)} ranges" + ("" if shift == 0 else f", edges within {shift:.3f} s")


def bench(minutes: float, threads: int, repeat: int) -> None:
    audio = recording(minutes)
    model = PiecewiseSilero()
    pieces = piece_bounds(audio.shape[0] // FRAME_SAMPLES + 1, model.piece_frames, model.warmup_frames)
    print(f"\n{audio.shape[0] / SAMPLE_RATE / 60:.1f} minutes, {len(pieces)} piece(s)")
    contenders: dict[str, Callable[[], Ranges]] = {"library": lambda: library(audio)}
    for n in range(1, threads + 1):
        contenders[f"{n} thread{'s' if n > 1 else ''}"] = lambda n=n: speech_ranges(audio, batched=True, threads=n)
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    cpu_s: dict[str, list[float]] = {name: [] for name in contenders}
    ranges: dict[str, Ranges] = {}
    for _ in range(repeat):
        for name, run in contenders.items():
            t0, c0 = time.perf_counter(), time.process_time()
            ranges[name] = run()
            seconds[name].append(time.perf_counter() - t0)
            cpu_s[name].append(time.process_time() - c0)
    base = statistics.median(seconds["library"])
    for name, times in seconds.items():
        median = statistics.median(times)
        same = "" if name == "library" else "; " + compare(ranges[name], ranges["library"])
        print(f"  {name:10} best {min(times):5.2f} s  median {median:5.2f} s  ratio {median / base:.2f}  "
              f"CPU {statistics.median(cpu_s[name]):5.2f} s{same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="11,20")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print("load average before: %.2f %.2f %.2f" % os.getloadavg())
    for minutes in (float(m) for m in args.minutes.split(",")):
        bench(minutes, args.threads, args.repeat)
    print("load average after: %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
