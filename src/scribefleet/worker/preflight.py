"""Proving, inside a fresh process, that a device can really run the model.

Invariant 6 of the design: a GPU slot that cannot use its GPU says so at start
instead of running silently on the CPU. Three layers:

* `cuda_libraries()` dlopens the CUDA libraries CTranslate2 needs. ctypes uses
  the dynamic loader's search path, which is fixed when the process starts;
  that is exactly why slots get LD_LIBRARY_PATH from their parent
  (`worker/env.py`) and why the doctor asks a child process, not itself.
* `preflight(device)` runs inside a slot at start: for cuda it checks that the
  slot is pinned to one GPU, that the driver is there and new enough, that
  CTranslate2 sees the GPU and that the libraries load; otherwise it raises
  CudaUnavailable saying exactly why and what to do.
* `prove_device(...)` starts `python -m scribefleet.worker.preflight prove ...`
  with a slot's environment, which loads the model, transcribes ~2 s of audio
  and, for cuda, reads through NVML that the process really holds GPU memory.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import mmap
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from scribefleet.config import Settings
from scribefleet.errors import (
    CudaUnavailable, ModelLoadFailed, ModelNotFound, OutOfMemory, ScribefleetError, SlotCrashed,
    TaskTimeout, TranscriptionFailed, UsageError,
)
from scribefleet.worker.env import slot_environment
from scribefleet.worker.hardware import MIN_CUDA_DRIVER, cpu_core_count, gpu_process_memory_mb

FIX_PIP = (
    "pip install nvidia-cublas-cu12 nvidia-cudnn-cu12==9.* into scribefleet's environment; "
    "scribefleet adds their lib folders to LD_LIBRARY_PATH of every slot"
)
FIX_DRIVER = "install the NVIDIA driver (nvidia-smi must work), or use --device cpu"
#: (soname, what it is); cuDNN ones are required only when this CTranslate2 build uses cuDNN
CUDA_LIBRARIES = (
    ("libcuda.so.1", "NVIDIA driver"),
    ("libcublas.so.12", "cuBLAS (nvidia-cublas-cu12)"),
    ("libcublasLt.so.12", "cuBLAS (nvidia-cublas-cu12)"),
    ("libcudnn.so.9", "cuDNN 9 (nvidia-cudnn-cu12)"),
    ("libcudnn_ops.so.9", "cuDNN 9 (nvidia-cudnn-cu12)"),
    ("libcudnn_cnn.so.9", "cuDNN 9 (nvidia-cudnn-cu12)"),
)
#: GPU memory a loaded model must add before we believe it is on the GPU (NVML pid fallback)
MIN_GPU_MEMORY_RISE_MB = 32
PROOF_AUDIO_S = 2.0
SAMPLE_RATE = 16000


class LibCheck(BaseModel):
    """Whether one shared library could be loaded in this process, and from where."""

    name: str
    found: bool
    path: Path | None = None
    error: str | None = None
    required: bool = True
    what: str = ""


class _LinkMap(ctypes.Structure):
    _fields_ = [("l_addr", ctypes.c_void_p), ("l_name", ctypes.c_char_p)]


def _loaded_path(lib: ctypes.CDLL, name: str) -> Path | None:
    """The file a dlopen()ed library came from (dlinfo, else /proc/self/maps)."""
    for libc_name in (None, "libdl.so.2"):
        try:
            dlinfo = ctypes.CDLL(libc_name).dlinfo
        except (OSError, AttributeError):
            continue
        link_map = ctypes.POINTER(_LinkMap)()
        if dlinfo(ctypes.c_void_p(lib._handle), 2, ctypes.byref(link_map)) == 0 and link_map:  # 2 = RTLD_DI_LINKMAP
            return Path(os.fsdecode(link_map.contents.l_name))
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            if line.rstrip().endswith("/" + name):
                return Path(line.split(None, 5)[-1])
    except OSError:
        pass
    return None


def check_library(name: str, *, required: bool = True, what: str = "") -> LibCheck:
    """dlopen `name` the way CTranslate2 would, honouring this process's LD_LIBRARY_PATH."""
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        return LibCheck(name=name, found=False, error=str(exc), required=required, what=what)
    return LibCheck(name=name, found=True, path=_loaded_path(lib, name), required=required, what=what)


@lru_cache(maxsize=1)
def ctranslate2_needs_cudnn() -> bool:
    """Whether the installed CTranslate2 library loads cuDNN (recent PyPI wheels do not)."""
    spec = importlib.util.find_spec("ctranslate2")
    if spec is None or spec.origin is None:
        return False
    pkg = Path(spec.origin).parent
    for lib in [*pkg.glob("libctranslate2*.so*"), *pkg.parent.joinpath("ctranslate2.libs").glob("libctranslate2*.so*")]:
        with lib.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data.find(b"libcudnn") >= 0:
                return True
    return False


def cuda_libraries() -> list[LibCheck]:
    """Try to load every CUDA library CTranslate2 needs, in this process."""
    needs_cudnn = ctranslate2_needs_cudnn()
    return [
        check_library(name, required=needs_cudnn or "cudnn" not in name, what=what)
        for name, what in CUDA_LIBRARIES
    ]


def cuda_driver_version() -> tuple[int, int] | None:
    """(major, minor) CUDA version the loaded driver supports, None without a driver."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return version.value // 1000, version.value % 1000 // 10


def preflight(device: str, *, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Facts about `device` as this process sees it; raises CudaUnavailable when cuda cannot work."""
    import ctranslate2

    # the process's own environment is the thing under test here, not configuration
    env = os.environ if environ is None else environ
    facts: dict[str, Any] = {"device": device, "pid": os.getpid(), "ctranslate2": ctranslate2.__version__}
    if device == "cpu":
        facts["compute_types"] = sorted(ctranslate2.get_supported_compute_types("cpu"))
        facts["omp_num_threads"] = env.get("OMP_NUM_THREADS")
        return facts
    if device != "cuda":
        raise UsageError(f"unknown device {device!r}; choose cpu or cuda")
    visible = env.get("CUDA_VISIBLE_DEVICES")
    libs = cuda_libraries()
    count = ctranslate2.get_cuda_device_count()
    driver = cuda_driver_version()
    facts.update(
        cuda_visible_devices=visible, cuda_device_count=count,
        cuda_driver_version=f"{driver[0]}.{driver[1]}" if driver else None,
        libraries=[lib.model_dump(mode="json") for lib in libs],
    )
    reasons = _cuda_reasons(visible, count, driver, libs)
    if reasons:
        raise CudaUnavailable("CUDA cannot be used by this slot: " + " ".join(reasons), **facts)
    facts["compute_types"] = sorted(ctranslate2.get_supported_compute_types("cuda", 0))
    return facts


def _cuda_reasons(
    visible: str | None, count: int, driver: tuple[int, int] | None, libs: list[LibCheck]
) -> list[str]:
    reasons = []
    if not visible or "," in visible:
        reasons.append(
            f"CUDA_VISIBLE_DEVICES is {'unset' if visible is None else repr(visible)}, not one GPU: the slot is not pinned to a device. "
            "Fix: start slots through scribefleet, which sets it before the process starts."
        )
    if driver is None:
        reasons.append(f"No NVIDIA driver (libcuda.so.1 cannot be loaded). Fix: {FIX_DRIVER}.")
    elif driver < MIN_CUDA_DRIVER:
        reasons.append(
            f"The NVIDIA driver supports CUDA {driver[0]}.{driver[1]} but CTranslate2 needs CUDA 12. "
            "Fix: upgrade the driver to 525 or newer."
        )
    elif count < 1:
        reasons.append(
            f"CTranslate2 sees no GPU (CUDA_VISIBLE_DEVICES={visible!r} names no usable device). "
            "Fix: check nvidia-smi and the GPU index."
        )
    missing = [lib.name for lib in libs if lib.required and not lib.found and lib.name != "libcuda.so.1"]
    if missing:
        reasons.append(f"{', '.join(missing)} cannot be loaded. Fix: {FIX_PIP}.")
    return reasons


def speechlike_audio(duration_s: float = PROOF_AUDIO_S) -> Any:
    """A voiced, syllable-shaped signal (float32, 16 kHz): enough to make the model decode."""
    import numpy as np

    t = np.arange(int(duration_s * SAMPLE_RATE), dtype=np.float32) / SAMPLE_RATE
    pitch_hz = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch_hz) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    return (0.3 * voice * syllables / np.max(np.abs(voice))).astype(np.float32)


def _wrap(exc: Exception, phase: str) -> ScribefleetError:
    """A foreign error from loading or running the model, as one of ours."""
    if isinstance(exc, ScribefleetError):
        return exc
    msg = str(exc)
    low = msg.lower()
    if "out of memory" in low:
        return OutOfMemory(f"the device ran out of memory while {phase}: {msg}")
    if any(word in low for word in ("cuda", "cublas", "cudnn")):
        return CudaUnavailable(f"CUDA failed while {phase}: {msg}. Fix: {FIX_PIP}; or use --device cpu.")
    if isinstance(exc, ValueError) and "compute type" in low:
        return UsageError(f"{msg}. Fix: choose a compute type that `scribefleet doctor` lists for the device.")
    if phase == "loading the model":
        return ModelLoadFailed(f"the model could not be loaded: {msg}")
    return TranscriptionFailed(f"the model failed while {phase}: {msg}")


def _prove_here(model: Path, device: str, compute_type: str, gpu_index: int | None,
                cpu_threads: int, audio: Path | None) -> dict[str, Any]:
    """Runs in the child: preflight, load, transcribe, and for cuda the NVML proof."""
    facts = preflight(device)
    if not model.is_dir():
        raise ModelNotFound(f"model folder {model} does not exist", model=str(model))
    from faster_whisper import WhisperModel, decode_audio

    before_mb = _gpu_used_mb(gpu_index) if device == "cuda" else None
    t0 = time.perf_counter()
    try:
        whisper = WhisperModel(str(model), device=device, device_index=0, cpu_threads=cpu_threads,
                               compute_type=_concrete_compute_type(compute_type, device))
    except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError for everything
        raise _wrap(exc, "loading the model") from exc
    t1 = time.perf_counter()
    try:
        samples = decode_audio(str(audio)) if audio else speechlike_audio()
        # no VAD: the proof must make the model itself run on the device
        segments, _info = whisper.transcribe(samples, beam_size=1, vad_filter=False)
        text = "".join(s.text for s in segments).strip()
    except Exception as exc:
        raise _wrap(exc, "transcribing") from exc
    result = {"device": device, "ok": True, "load_s": round(t1 - t0, 3),
              "infer_s": round(time.perf_counter() - t1, 3),
              "compute_type": whisper.model.compute_type, "text": text, "pid": os.getpid()}
    if device == "cuda":
        result.update(_gpu_proof(gpu_index, before_mb))
    result["facts"] = facts
    return result


def _concrete_compute_type(compute_type: str, device: str) -> str:
    """"auto" means what a transcription would use on this device."""
    if compute_type != "auto":
        return compute_type
    try:
        from scribefleet.pipeline.models import default_compute_type
    except ImportError:
        return "default"
    return default_compute_type(device)


def _gpu_used_mb(gpu_index: int | None) -> int | None:
    import pynvml

    try:
        return gpu_process_memory_mb(gpu_index, os.getpid())[1]
    except pynvml.NVMLError:
        return None


def _gpu_proof(gpu_index: int | None, before_mb: int | None) -> dict[str, Any]:
    import pynvml

    try:
        mine_mb, used_mb, util = gpu_process_memory_mb(gpu_index, os.getpid())
    except pynvml.NVMLError as exc:
        # CTranslate2 never falls back to the CPU by itself, so the run stands; say it is unverified
        return {"gpu_proof": "unverified", "gpu_proof_error": f"NVML failed: {exc}"}
    if mine_mb:
        return {"gpu_memory_mb": mine_mb, "gpu_proof": "nvml_process", "gpu_utilization_percent": util}
    # inside a container NVML reports host pids, so fall back to the device's memory rise
    if before_mb is not None and used_mb - before_mb >= MIN_GPU_MEMORY_RISE_MB:
        return {"gpu_memory_mb": used_mb - before_mb, "gpu_proof": "memory_rise", "gpu_utilization_percent": util}
    raise CudaUnavailable(
        f"the model reports device cuda, but GPU {gpu_index} memory did not rise ({before_mb} -> {used_mb} MiB) "
        "and NVML lists no memory for this process: the GPU is not really used. "
        f"Fix: check LD_LIBRARY_PATH of the slot and {FIX_PIP}.",
        gpu_index=gpu_index,
    )


def prove_device(
    model_path: Path,
    device: str,
    gpu_index: int | None,
    compute_type: str,
    settings: Settings,
    *,
    audio_path: Path | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Load the model on `device` in a fresh slot-like process and transcribe a little audio.

    Returns {device, gpu_index, ok, load_s, infer_s, compute_type, text, gpu_memory_mb?, error?}.
    """
    if device == "cuda" and gpu_index is None:
        raise UsageError("prove_device on cuda needs a gpu_index")
    threads = settings.cpu_threads or cpu_core_count()
    env = slot_environment(settings, gpu_index=gpu_index if device == "cuda" else None, cpu_threads=threads)
    args = ["prove", "--model", str(model_path), "--device", device, "--compute-type", compute_type,
            "--cpu-threads", str(threads)]
    if gpu_index is not None:
        args += ["--gpu-index", str(gpu_index)]
    if audio_path is not None:
        args += ["--audio", str(audio_path)]
    result = run_child(args, env, timeout_s)
    result.setdefault("device", device)
    result["gpu_index"] = gpu_index if device == "cuda" else None
    result.setdefault("compute_type", compute_type)
    return result


def check_device(device: str, gpu_index: int | None, settings: Settings, *, timeout_s: float = 120.0) -> dict[str, Any]:
    """`preflight(device)` in a fresh process with a slot's environment (no model load)."""
    env = slot_environment(settings, gpu_index=gpu_index if device == "cuda" else None, cpu_threads=1)
    result = run_child(["check", "--device", device], env, timeout_s)
    result.setdefault("device", device)
    result["gpu_index"] = gpu_index if device == "cuda" else None
    return result


def run_child(args: list[str], env: Mapping[str, str], timeout_s: float) -> dict[str, Any]:
    """Run this module as a child with `env` set before exec; its last stdout line is JSON."""
    cmd = [sys.executable, "-m", "scribefleet.worker.preflight", *args]
    try:
        proc = subprocess.run(cmd, env=dict(env), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        err = TaskTimeout(f"the preflight process ran longer than {timeout_s:.0f} s and was killed")
        return {"ok": False, "error": err.to_dict()}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr or proc.stdout).strip()[-2000:]
    err = SlotCrashed(f"the preflight process exited with code {proc.returncode} and no result: {tail}")
    return {"ok": False, "error": err.to_dict()}


def main(argv: list[str] | None = None) -> int:
    """`python -m scribefleet.worker.preflight libs|check|prove ...`: one JSON line on stdout."""
    parser = argparse.ArgumentParser(prog="python -m scribefleet.worker.preflight")
    sub = parser.add_subparsers(dest="op", required=True)
    sub.add_parser("libs")
    check = sub.add_parser("check")
    check.add_argument("--device", required=True)
    prove = sub.add_parser("prove")
    prove.add_argument("--model", type=Path, required=True)
    prove.add_argument("--device", required=True)
    prove.add_argument("--compute-type", default="auto")
    prove.add_argument("--gpu-index", type=int)
    prove.add_argument("--cpu-threads", type=int, default=0)
    prove.add_argument("--audio", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.op == "libs":
            out: dict[str, Any] = {"ok": True, "libraries": [c.model_dump(mode="json") for c in cuda_libraries()]}
        elif args.op == "check":
            out = {"ok": True, "facts": preflight(args.device)}
        else:
            out = _prove_here(args.model, args.device, args.compute_type, args.gpu_index,
                              args.cpu_threads, args.audio)
    except ScribefleetError as exc:
        out = {"ok": False, "error": exc.to_dict()}
    print(json.dumps(out, default=str), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
