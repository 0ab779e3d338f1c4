"""How many slots this machine can hold: `--slots N` capped by its memory, cores and GPUs, never silently.

Each slot is a process with its own model instance, so `--slots 1000` started
a thousand of them on a 2-core machine: a load of 450, and the kernel's OOM
killer took a slot. `slot_budget` is the rule, a pure function of the facts:

* memory: no more slots than the memory available now holds, at an estimate
  per slot (`slot_memory_mb`): a CPU slot `CPU_SLOT_BASE_MB` plus its model's
  weights (about 0.5 GB with tiny.en, 3.5 GB with large-v3; docs/performance.md
  measured tiny.en at 0.3 GB resident, 0.4-0.5 GB at its peak), a GPU slot
  `GPU_SLOT_HOST_MB` of host memory (its weights live on the GPU);
  `SCRIBEFLEET_SLOT_MEMORY_MB` replaces the estimate;
* CPU slots: at most `CPU_SLOTS_PER_CORE` per core. A few more slots than cores
  is allowed on purpose: spare slots are lent to a long file (its windows are
  decoded on every free slot), and `--slots 4` on 2 cores is how to ask for that;
  hundreds only queue for the cores;
* GPU slots: at most `MAX_SLOTS_PER_GPU` per GPU (the `--slots-per-gpu` ceiling),
  and no more on a GPU than its memory holds models (`GPU_SLOT_BASE_MB` plus the
  weights each).

What is capped is said at start, in one WARNING naming what was asked, what is
used and why (`SlotBudget.warning`). A cluster engine (Ray) sizes its slots by
the cluster's resources, not by this machine's: the rule is the local engine's.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

#: a CPU slot's memory besides its model's weights: Python, CTranslate2, PyAV, a job's audio and activations
CPU_SLOT_BASE_MB = 400
#: a GPU slot's host memory: CUDA's libraries and context, a job's decoded audio (the weights are on the GPU)
GPU_SLOT_HOST_MB = 500
#: a GPU slot's GPU memory besides its model's weights: CUDA context, activations of a batch
GPU_SLOT_BASE_MB = 300
#: the weights of tiny.en (model.bin, 75 MB): the estimate where the model is not known yet (serve, plans)
DEFAULT_MODEL_MB = 75
CPU_SLOTS_PER_CORE = 2
MAX_SLOTS_PER_GPU = 26
_MIB = 1024 * 1024


@dataclass(frozen=True)
class SlotBudget:
    """How many slots of those asked for are started, and why not more."""

    asked: int
    used: int
    device: str  # "cpu" or "cuda"
    reasons: list[str] = field(default_factory=list)  # the limit(s) that decided `used`, when under `asked`

    @property
    def capped(self) -> bool:
        return self.used < self.asked

    def warning(self) -> str:
        """The line that says so at start."""
        kind = "GPU" if self.device == "cuda" else "CPU"
        return (f"{self.asked} slots asked for, {self.used} {kind} slot(s) started: " + "; ".join(self.reasons)
                + " (docs/configuration.md, 'How many slots')")  # fmt: skip


def slot_budget(asked: int, *, device: str, cpu_cores: int, gpu_memory_mb: list[int] | None = None,
                memory_mb: int | None, slot_mb: int, model_mb: int = DEFAULT_MODEL_MB) -> SlotBudget:
    """The slots of `asked` this machine holds. `device`: "cpu" or "cuda"; `gpu_memory_mb`: each usable GPU's total
    memory, MB (0: unknown, NVML could not tell); `memory_mb`: host memory available now (None: unknown);
    `slot_mb`: host memory one slot takes; `model_mb`: its model's weights (on the GPU, for a GPU slot)."""
    limits: list[tuple[int, str]] = []
    if memory_mb is not None:
        limits.append((max(1, memory_mb // slot_mb), f"{memory_mb / 1024:.1f} GB of memory is available and a slot "
                       f"takes about {slot_mb / 1024:.1f} GB (SCRIBEFLEET_SLOT_MEMORY_MB)"))  # fmt: skip
    if device == "cuda":
        gpus = gpu_memory_mb or []
        limits.append((max(1, len(gpus) * MAX_SLOTS_PER_GPU),
                       f"{len(gpus)} GPU(s) take at most {MAX_SLOTS_PER_GPU} slots each"))  # fmt: skip
        if gpus and all(gpus):
            per_model = GPU_SLOT_BASE_MB + model_mb
            fits = sum(max(1, total // per_model) for total in gpus)
            limits.append((fits, f"the GPUs' memory holds {fits} model instance(s) of about "
                           f"{per_model / 1024:.1f} GB"))  # fmt: skip
    else:
        limits.append((max(1, CPU_SLOTS_PER_CORE * cpu_cores), f"this machine has {cpu_cores} CPU core(s), and more "
                       f"than {CPU_SLOTS_PER_CORE} slots a core only wait for the cores"))  # fmt: skip
    used = min([asked, *(n for n, _ in limits)])
    return SlotBudget(asked, used, device, [why for n, why in limits if n == used < asked])  # what decided it


def slot_memory_mb(device: str, model_mb: int, setting_mb: int = 0) -> int:
    """Host memory one slot is counted at: `setting_mb` (SCRIBEFLEET_SLOT_MEMORY_MB) when given, else the estimate."""
    if setting_mb:
        return setting_mb
    return GPU_SLOT_HOST_MB if device == "cuda" else CPU_SLOT_BASE_MB + model_mb


def model_weights_mb(model_path: Path | None) -> int:
    """A CTranslate2 model folder's weights (model.bin), MB; the default model's where there is none to read."""
    if model_path is not None:
        with contextlib.suppress(OSError):
            return max(1, (Path(model_path) / "model.bin").stat().st_size // _MIB)
    return DEFAULT_MODEL_MB


def available_memory_mb() -> int | None:
    """Memory this process could still use, MB: the kernel's MemAvailable, or less under a cgroup (container)
    limit; None where neither can be read (not Linux)."""
    found: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) // 1024)  # kB
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            found.append(max(0, int(limit) - used) // _MIB)
    if not found:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // _MIB)
    return min(found) if found else None
