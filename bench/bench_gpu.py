"""The GPU path measured (issue 14): run by bench/gpu.sh on a machine with an NVIDIA GPU.

Three measures on real recorded speech (tests/data/fetch_real.py) with one model, a large one
when given (`--model`: a CTranslate2 folder or a name scribefleet resolves offline):

  ratio   the 11-minute recording of bench_transcribe.py's real corpus: plain faster-whisper
          (a WhisperModel loop, model loaded once), faster-whisper's BatchedInferencePipeline,
          `scribefleet transcribe --device cuda` batched (its default) and sequential
          (--batch-size 1): wall seconds with model load, audio-s/s, ratio to plain, WER
  busy    `scribefleet transcribe --device cuda` of 20 distinct files (the real recording
          rotated, about 54 s each) on GPU 0 while NVML samples the GPU's utilization every
          0.1 s: the device-busy fraction, i.e. the mean utilization from the first to the last
          busy sample (model load before, exit after excluded; goal 0.95), and over the whole
          command
  slots   the same 20 files with --slots-per-gpu 1, 2 and 4 on GPU 0: wall seconds, audio-s/s
          and the peak GPU memory NVML saw

It ends with one summary table. Only GPU 0 is used (SCRIBEFLEET_GPUS=0 for scribefleet).
Usage: python bench/bench_gpu.py [--model PATH] [--compute-type float16] [--only ratio,busy,slots]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_transcribe import SR, build_real_corpus, wer  # noqa: E402

BUSY_GOAL = 0.95
DEVICE = "cuda"  # --device cpu only to smoke-test this script where there is no GPU


def audio_seconds(folder: Path) -> float:
    total = 0.0
    for f in folder.glob("*.wav"):
        with wave.open(str(f)) as w:
            total += w.getnframes() / w.getframerate()
    return total


def build_batch(folder: Path, source: Path, files: int) -> None:
    """`files` recordings of distinct content (so no two share a checkpoint): `source` rotated."""
    with wave.open(str(source)) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    folder.mkdir(parents=True, exist_ok=True)
    step = len(samples) // files
    for i in range(files):
        with wave.open(str(folder / f"clip{i:02d}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SR)
            w.writeframes(np.concatenate([np.roll(samples, -i * step), np.zeros(SR, dtype=np.int16)]).tobytes())


class GpuSampler:
    """NVML utilization (percent) and memory used (MB) of one GPU, sampled in a thread."""

    def __init__(self, index: int = 0, every_s: float = 0.1) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml, self._handle, self._every_s = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index), every_s
        self.samples: list[tuple[float, int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
            used_mb = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20
            self.samples.append((time.monotonic(), int(util), used_mb))

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def busy(self) -> tuple[float, float]:
        """(mean utilization from the first to the last busy sample, mean over every sample), as fractions."""
        utils = [u for _, u, _ in self.samples]
        if not utils:
            return 0.0, 0.0
        busy_at = [i for i, u in enumerate(utils) if u > 0]
        window = utils[busy_at[0] : busy_at[-1] + 1] if busy_at else utils
        return sum(window) / len(window) / 100, sum(utils) / len(utils) / 100

    def peak_mb(self) -> float:
        return max((m for _, _, m in self.samples), default=0.0)


def model_folder(name: str) -> str:
    """The model's folder, so faster-whisper and scribefleet load the very same files (offline)."""
    if (Path(name).expanduser() / "model.bin").is_file():
        return str(Path(name).expanduser().resolve())
    from scribefleet.config import Settings
    from scribefleet.pipeline.models import resolve_model

    return str(resolve_model(name, Settings()).path)


def plain(folder: Path, model: str, ct: str, batch_size: int | None) -> tuple[float, dict[str, str]]:
    """faster-whisper itself on the GPU: a WhisperModel loop, or its BatchedInferencePipeline."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    t0 = time.perf_counter()
    whisper = WhisperModel(model, device=DEVICE, compute_type=ct)
    runner = BatchedInferencePipeline(whisper) if batch_size else whisper
    hyps = {}
    for f in sorted(folder.glob("*.wav")):
        segments, _ = runner.transcribe(str(f), batch_size=batch_size) if batch_size else runner.transcribe(str(f))
        hyps[f.name] = "".join(s.text for s in segments)
    return time.perf_counter() - t0, hyps


def scribefleet(folder: Path, out: Path, model: str, ct: str, extra: list[str]) -> tuple[float, dict[str, str]]:
    """`scribefleet transcribe` as a whole command on GPU 0; (wall seconds, texts by file)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "scribefleet.cli.main", "transcribe", str(folder), "--out", str(out),
           "--model", model, "--device", DEVICE, "--compute-type", ct, "--format", "txt,json", *extra]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "SCRIBEFLEET_GPUS": "0"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    hyps = {f.with_suffix(".wav").name: json.loads(f.read_text())["text"] for f in out.glob("*.json")}
    return wall, hyps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny.en", help="a CTranslate2 model folder (a large one) or a model name")
    ap.add_argument("--compute-type", default="float16")
    ap.add_argument("--batch-size", type=int, default=8, help="the library's batched pipeline (scribefleet's default is 8)")
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--slots", default="1,2,4", help="--slots-per-gpu values to time")
    ap.add_argument("--only", default="ratio,busy,slots")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "gpu")
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global DEVICE  # noqa: PLW0603 - one setting for the whole run
    DEVICE = args.device
    parts = {p.strip() for p in args.only.split(",")}
    model, ct, work = model_folder(args.model), args.compute_type, args.work
    summary: list[tuple[str, str, str]] = []

    real = work / "corpus-real"
    shutil.rmtree(real, ignore_errors=True)
    refs = build_real_corpus(real)
    long_dir = work / "corpus-long"
    shutil.rmtree(long_dir, ignore_errors=True)
    long_dir.mkdir(parents=True)
    shutil.copy(real / "long.wav", long_dir / "long.wav")

    if "ratio" in parts:
        audio_s = audio_seconds(long_dir)
        contenders = {
            "plain faster-whisper": lambda: plain(long_dir, model, ct, None),
            f"faster-whisper batched ({args.batch_size})": lambda: plain(long_dir, model, ct, args.batch_size),
            "scribefleet batched": lambda: scribefleet(long_dir, work / "out-batched", model, ct, []),
            "scribefleet sequential": lambda: scribefleet(long_dir, work / "out-seq", model, ct, ["--batch-size", "1"]),
        }
        results = {name: fn() for name, fn in contenders.items()}
        base = audio_s / results["plain faster-whisper"][0]
        print(f"\nratio: one {audio_s / 60:.1f}-minute recording of real speech, {model} {ct} on GPU 0")
        for name, (wall, hyps) in results.items():
            speed = audio_s / wall
            w = wer({"long.wav": refs["long.wav"]}, hyps)
            print(f"  {name:<34} {wall:7.1f} s {speed:8.1f} audio-s/s  ratio {speed / base:5.2f}  WER {w:.3f}")
            summary.append((f"ratio {name}", f"{speed / base:.2f}", f"{speed:.1f} audio-s/s, WER {w:.3f}"))

    batch_dir = work / "corpus-batch"
    if parts & {"busy", "slots"}:
        shutil.rmtree(batch_dir, ignore_errors=True)
        build_batch(batch_dir, real / "sonnet001.wav", args.files)
        batch_audio_s = audio_seconds(batch_dir)

    if "busy" in parts:
        with GpuSampler() as sampler:
            wall, _ = scribefleet(batch_dir, work / "out-busy", model, ct, [])
        busy, whole = sampler.busy()
        mark = "met" if busy >= BUSY_GOAL else "NOT met"
        print(f"\nbusy: {args.files} files, {batch_audio_s:.0f} s of audio in {wall:.1f} s; device busy {busy:.3f} "
              f"(goal >= {BUSY_GOAL}: {mark}), {whole:.3f} over the whole command ({len(sampler.samples)} samples)")
        summary.append(("device-busy fraction", f"{busy:.3f}", f"goal >= {BUSY_GOAL}: {mark}; whole command {whole:.3f}"))

    if "slots" in parts:
        print(f"\nslots: {args.files} files, {batch_audio_s:.0f} s of audio, --slots-per-gpu N on GPU 0")
        first = None
        for n in [int(x) for x in args.slots.split(",")]:
            with GpuSampler() as sampler:
                wall, _ = scribefleet(batch_dir, work / f"out-slots{n}", model, ct, ["--slots-per-gpu", str(n)])
            speed = batch_audio_s / wall
            first = first or speed
            print(f"  {n} slot(s): {wall:7.1f} s {speed:8.1f} audio-s/s  x{speed / first:.2f}  peak GPU memory {sampler.peak_mb():.0f} MB")
            summary.append((f"{n} slot(s) per GPU", f"{speed:.1f}", f"audio-s/s, x{speed / first:.2f} of 1 slot, peak {sampler.peak_mb():.0f} MB"))

    print(f"\nsummary ({model}, {ct})")
    for name, value, note in summary:
        print(f"  {name:<40} {value:>8}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
