"""What hardware this machine has, and which slots to start on it.

`detect_hardware` gathers the facts once (NVIDIA GPUs through NVML, what
CTranslate2 can see and run, CPU cores, Apple silicon) and caches them as JSON
in `settings.cache_dir / "hardware.json"` for `settings.hardware_cache_ttl_s`.
Nothing here raises because a driver is missing: a machine without a GPU is a
fact, written down in `Hardware.problems` with what to do about it.

`plan_slots` turns those facts and the user's `--device` / `--slots` into the
list of `SlotSpec`s the local engine starts, no more than the machine holds
(`worker/budget.py`: memory, cores, GPUs; a WARNING says what was capped).
Whether a GPU slot can really use its GPU is proven later, inside the slot
(see `worker/preflight.py`).
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from scribefleet.config import Settings
from scribefleet.worker.budget import DEFAULT_MODEL_MB, available_memory_mb, slot_budget, slot_memory_mb
from scribefleet.worker.slot_spec import SlotSpec
from scribefleet.errors import CudaUnavailable, UsageError
from scribefleet.options import Device
from scribefleet.pipeline.models import cpu_core_count

log = logging.getLogger("scribefleet.hardware")

CACHE_FILE = "hardware.json"
#: the CTranslate2 4.x wheels are built against CUDA 12: older drivers cannot run them
MIN_CUDA_DRIVER = (12, 0)
MIB = 1024 * 1024

FIX_DRIVER = (
    "install the NVIDIA driver (nvidia-smi must work) if this machine has a GPU; "
    "otherwise scribefleet runs on the CPU"
)
FIX_DRIVER_TOO_OLD = "upgrade the NVIDIA driver to one that supports CUDA 12 (version 525 or newer)"


class Gpu(BaseModel):
    """One NVIDIA GPU as NVML reports it (index in nvidia-smi / PCI bus order)."""

    index: int
    name: str
    memory_total_mb: int
    memory_free_mb: int
    uuid: str


class Hardware(BaseModel):
    """Everything scribefleet needs to know about this machine's compute devices."""

    gpus: list[Gpu] = Field(default_factory=list)
    driver_version: str | None = None
    #: highest CUDA version the driver supports, e.g. "12.4"
    cuda_driver_version: str | None = None
    #: CUDA devices as CTranslate2 sees them (0 when the driver is missing or too old)
    cuda_device_count: int = 0
    cpu_cores: int
    cpu_model: str
    #: Apple silicon. CTranslate2 has no MPS backend, so slots there run on the CPU.
    mps_available: bool = False
    #: "cpu" / "cuda" -> compute types CTranslate2 supports there (cuda: its device 0)
    compute_types: dict[str, list[str]] = Field(default_factory=dict)
    problems: list[str] = Field(default_factory=list)
    hostname: str = ""
    detected_at: datetime

    @property
    def usable_gpu_indices(self) -> list[int]:
        """Physical indices of the GPUs CUDA slots may be pinned to."""
        if self.cuda_device_count <= 0:
            return []
        if self.gpus:
            return [g.index for g in self.gpus]
        # NVML unavailable (some containers) but CUDA works: trust CTranslate2's count
        return list(range(self.cuda_device_count))


def detect_hardware(settings: Settings, *, refresh: bool = False) -> Hardware:
    """The machine's hardware facts, from the cache when younger than the TTL."""
    path = settings.cache_dir / CACHE_FILE
    if not refresh:
        cached = _read_cache(path, settings.hardware_cache_ttl_s)
        if cached is not None:
            return cached
    hw = _detect()
    try:
        _write_atomic(path, hw.model_dump_json(indent=2))
    except OSError as exc:  # a read-only cache dir must not stop detection
        log.warning("could not write hardware cache %s: %s", path, exc)
    return hw


def _read_cache(path: Path, ttl_s: float) -> Hardware | None:
    try:
        hw = Hardware.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, ValidationError):
        return None
    age_s = (datetime.now(timezone.utc) - hw.detected_at).total_seconds()
    # a cache dir shared over NFS must not hand one host's GPUs to another
    if hw.hostname != platform.node() or not 0 <= age_s < ttl_s:
        return None
    return hw


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _detect() -> Hardware:
    problems: list[str] = []
    nvml = _nvml_facts(problems)
    ct2_count, compute_types = _ctranslate2_facts(problems)
    gpus: list[Gpu] = nvml["gpus"]
    cuda_version = nvml["cuda_driver_version"]
    if gpus and cuda_version and _version_tuple(cuda_version) < MIN_CUDA_DRIVER:
        problems.append(
            f"The NVIDIA driver supports CUDA {cuda_version} but CTranslate2 needs CUDA "
            f"{MIN_CUDA_DRIVER[0]}.{MIN_CUDA_DRIVER[1]}: the GPUs cannot be used. Fix: {FIX_DRIVER_TOO_OLD}."
        )
    elif gpus and ct2_count == 0:
        problems.append(
            f"NVML sees {len(gpus)} GPU(s) but CTranslate2 sees none, so they cannot be used. "
            "Fix: check that CUDA_VISIBLE_DEVICES is not empty and that the driver works (nvidia-smi)."
        )
    mps = sys.platform == "darwin" and platform.machine() == "arm64"
    if mps:
        problems.append(
            "Apple MPS is available, but CTranslate2 (faster-whisper) has no MPS backend: "
            "slots run on the CPU here. Fix: none needed; use --device cpu or auto."
        )
    hw = Hardware(
        gpus=gpus,
        driver_version=nvml["driver_version"],
        cuda_driver_version=cuda_version,
        cuda_device_count=ct2_count,
        cpu_cores=cpu_core_count(),
        cpu_model=_cpu_model(),
        mps_available=mps,
        compute_types=compute_types,
        problems=problems,
        hostname=platform.node(),
        detected_at=datetime.now(timezone.utc),
    )
    log.info(
        "hardware: %d GPU(s), CTranslate2 CUDA devices %d, %d CPU cores (%s)",
        len(hw.gpus), hw.cuda_device_count, hw.cpu_cores, hw.cpu_model,
    )
    return hw


def _nvml_facts(problems: list[str]) -> dict:
    """GPUs, driver and CUDA driver version from NVML; a missing driver is a problem line."""
    import pynvml

    facts: dict = {"gpus": [], "driver_version": None, "cuda_driver_version": None}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        problems.append(f"No NVIDIA driver found (libnvidia-ml.so.1 is missing): no GPU can be used. Fix: {FIX_DRIVER}.")
        return facts
    except pynvml.NVMLError as exc:
        problems.append(f"The NVIDIA driver did not answer ({exc}): no GPU can be used. Fix: {FIX_DRIVER}.")
        return facts
    try:
        facts["driver_version"] = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        facts["cuda_driver_version"] = f"{cuda // 1000}.{cuda % 1000 // 10}"
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            facts["gpus"].append(
                Gpu(
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_total_mb=int(mem.total // MIB),
                    memory_free_mb=int(mem.free // MIB),
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                )
            )
    except pynvml.NVMLError as exc:
        problems.append(f"NVML failed while listing GPUs ({exc}). Fix: check the driver with nvidia-smi.")
    finally:
        pynvml.nvmlShutdown()
    if not facts["gpus"] and not problems:
        problems.append(f"The NVIDIA driver is installed but reports no GPU. Fix: {FIX_DRIVER}.")
    return facts


def _ctranslate2_facts(problems: list[str]) -> tuple[int, dict[str, list[str]]]:
    import ctranslate2

    types = {"cpu": sorted(ctranslate2.get_supported_compute_types("cpu"))}
    count = ctranslate2.get_cuda_device_count()
    if count > 0:
        try:
            types["cuda"] = sorted(ctranslate2.get_supported_compute_types("cuda", 0))
        except RuntimeError as exc:
            problems.append(f"CTranslate2 sees {count} CUDA device(s) but cannot query them: {exc}")
    return count, types


def gpu_process_memory_mb(gpu_index: int, pid: int) -> tuple[int | None, int, int | None]:
    """(MiB that `pid` holds on GPU `gpu_index` or None if NVML cannot tell, MiB used in all, utilization %)."""
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(gpu_index)
        used_mb = int(pynvml.nvmlDeviceGetMemoryInfo(handle).used // MIB)
        mine = None
        try:
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except pynvml.NVMLError:  # not supported on some (MIG, vGPU) devices
            procs = []
        for proc in procs:
            if proc.pid == pid and proc.usedGpuMemory is not None:
                mine = int(proc.usedGpuMemory // MIB)
        try:
            util = int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except pynvml.NVMLError:  # not supported on some (MIG, vGPU) devices
            util = None
        return mine, used_mb, util
    finally:
        pynvml.nvmlShutdown()


def gpu_memory_by_pid(gpu_indices: Iterable[int]) -> dict[int, int] | None:
    """MiB each process holds on the GPUs `gpu_indices` (physical), by pid, as NVML reports it; None
    when NVML cannot tell (no driver, or a device that does not list processes). A pid that holds
    nothing, or whose use NVML hides (some containers), is not in the dict."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    held: dict[int, int] = {}
    try:
        for index in sorted(set(gpu_indices)):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.usedGpuMemory is not None:
                    held[proc.pid] = held.get(proc.pid, 0) + int(proc.usedGpuMemory // MIB)
    except pynvml.NVMLError:  # an index NVML does not know, or MIG / vGPU devices
        return None
    finally:
        pynvml.nvmlShutdown()
    return held


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def allowed_gpu_indices(spec: str, hw: Hardware) -> list[int]:
    """Physical indices named by a CUDA_VISIBLE_DEVICES-style list of indices or UUIDs.

    As in CUDA, an empty list, "-1" or "none" means no GPU at all.
    """
    by_uuid = {g.uuid: g.index for g in hw.gpus if g.uuid}
    allowed: list[int] = []
    for item in (part.strip() for part in spec.split(",")):
        if item.isdigit():
            allowed.append(int(item))
        elif item.startswith(("GPU-", "MIG-")):
            match = next((idx for uuid, idx in by_uuid.items() if uuid.startswith(item)), None)
            if match is not None:
                allowed.append(match)
        elif item:
            break  # CUDA stops at the first invalid entry, and so do we
    return allowed


def plan_slots(
    hw: Hardware,
    device: str | Device,
    slots: int | None,
    settings: Settings,
    *,
    visible_gpus: list[int] | None = None,
    model_mb: int | None = None,
    memory_mb: int | None = None,
) -> list[SlotSpec]:
    """The slots to start for `--device` and `--slots` on this hardware.

    auto: `settings.slots_per_gpu` CUDA slots per usable GPU (default 1), else CPU slots.
    cuda: `slots` slots spread round-robin over the GPUs (default `slots_per_gpu` each);
    raises CudaUnavailable when there is none. Slots on one GPU share its CUDA_VISIBLE_DEVICES,
    each a process with its own model instance. cpu: `slots` CPU slots (default 1). `visible_gpus` restricts the GPUs
    used (e.g. the physical indices the user allowed).

    No more slots than the machine holds (`worker.budget.slot_budget`: `model_mb` is the weights of the model
    they will load, None for the default model's; `memory_mb` the memory available, None to read it now); a cut
    is logged as a WARNING that names what was asked, what is used and why.
    """
    try:
        device = Device(device)
    except ValueError:
        raise UsageError(f"unknown device {device!r}; choose auto, cpu or cuda") from None
    if slots is not None and slots < 1:
        raise UsageError(f"--slots must be 1 or more, not {slots}")
    gpus = hw.usable_gpu_indices
    if visible_gpus is None and settings.gpus is not None:
        visible_gpus = allowed_gpu_indices(settings.gpus, hw)
    if visible_gpus is not None:
        gpus = [g for g in gpus if g in visible_gpus]
    if device is Device.CUDA and not gpus:
        why = _why_no_cuda(hw) if not hw.usable_gpu_indices else (
            f"--device cuda was asked for, but none of the GPUs {hw.usable_gpu_indices} is in the "
            f"allowed set {visible_gpus}. Fix: allow one of them, or use --device cpu."
        )
        raise CudaUnavailable(why, problems=hw.problems)
    on_gpu = device is not Device.CPU and bool(gpus)
    n = slots or (len(gpus) * settings.slots_per_gpu if on_gpu else 1)
    n = _within_budget(hw, n, gpus if on_gpu else None, settings, model_mb, memory_mb)
    if not on_gpu:
        return _cpu_plan(hw, n, settings)
    per_gpu = settings.slots_per_gpu
    threads = settings.cpu_threads or max(1, hw.cpu_cores // n)
    return [
        SlotSpec(name=_gpu_slot_name(i, gpus[i % len(gpus)], i // len(gpus), per_gpu), device="cuda",
                 gpu_index=gpus[i % len(gpus)], cpu_threads=threads, labels=frozenset({"gpu"}))
        for i in range(n)
    ]


def _within_budget(hw: Hardware, n: int, gpus: list[int] | None, settings: Settings, model_mb: int | None,
                   memory_mb: int | None) -> int:
    """`n` slots, or as many as the machine holds (said in a WARNING); `gpus`: the GPUs of a GPU plan, else None."""
    device = "cuda" if gpus is not None else "cpu"
    weights = model_mb or DEFAULT_MODEL_MB
    by_index = {g.index: g.memory_total_mb for g in hw.gpus}
    budget = slot_budget(
        n, device=device, cpu_cores=hw.cpu_cores, model_mb=weights,
        gpu_memory_mb=[by_index.get(i, 0) for i in gpus] if gpus is not None else None,
        memory_mb=memory_mb if memory_mb is not None else available_memory_mb(),
        slot_mb=slot_memory_mb(device, weights, settings.slot_memory_mb),
    )  # fmt: skip
    if budget.capped:
        log.warning("%s", budget.warning())
    return budget.used


def _gpu_slot_name(i: int, gpu_index: int, nth: int, per_gpu: int) -> str:
    """gpu0, gpu1, ... (one slot per GPU, as always); with several per GPU, gpu0a, gpu0b, ... named after the
    GPU's physical index, so a name says which GPU it shares (gpu0.26 past the alphabet)."""
    if per_gpu == 1:
        return f"gpu{i}"
    return f"gpu{gpu_index}{chr(ord('a') + nth)}" if nth < 26 else f"gpu{gpu_index}.{nth}"


def _cpu_plan(hw: Hardware, n: int, settings: Settings) -> list[SlotSpec]:
    threads = settings.cpu_threads or max(1, hw.cpu_cores // n)
    return [
        SlotSpec(name=f"cpu{i}", device="cpu", cpu_threads=threads, labels=frozenset({"cpu"}))
        for i in range(n)
    ]


def _why_no_cuda(hw: Hardware) -> str:
    if hw.mps_available:
        why = "this is Apple silicon: CTranslate2 has no MPS backend and no CUDA here"
    elif not hw.gpus and hw.cuda_device_count == 0:
        why = "no NVIDIA GPU or driver was found"
    else:
        why = f"{len(hw.gpus)} GPU(s) found but none usable by CTranslate2"
    detail = f" ({hw.problems[0]})" if hw.problems else ""
    return (
        f"--device cuda was asked for, but {why}{detail}. "
        "Fix: use --device cpu (or auto), or run `scribefleet doctor --refresh` on a machine "
        "with a working NVIDIA driver to see what is missing."
    )
