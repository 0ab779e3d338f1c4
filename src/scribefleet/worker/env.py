"""The environment a slot process is started with.

Seed 000's most expensive lesson: CUDA_VISIBLE_DEVICES and LD_LIBRARY_PATH
only work if they are set *before* the process that loads CUDA starts;
setting them in Python after imports silently leaves the GPU idle. So the
parent computes the whole environment here and passes it to the child's
exec; the slot never edits its own environment for these.

No secret of scribefleet's own (API tokens, the CLI's controller token, the
LLM key: every SecretStr setting, under each of its variable names) is
passed on: a slot, and the shell and llm tasks it runs, never see them in
their environment. A slot gets the LLM key it needs in its init message; a
plan that wants a shell command to have a secret passes it in that task's
`env` on purpose.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from scribefleet.config import Settings

# pip wheels that carry the CUDA libraries CTranslate2 dlopens at run time
NVIDIA_LIB_PACKAGES = ("cublas", "cudnn", "cuda_runtime", "cuda_nvrtc", "cufft", "curand")


def nvidia_lib_dirs() -> list[Path]:
    """The lib/ folders of pip-installed nvidia-* wheels (nvidia-cublas-cu12, nvidia-cudnn-cu12...)."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    dirs: list[Path] = []
    for root in spec.submodule_search_locations:
        for name in NVIDIA_LIB_PACKAGES:
            lib = Path(root) / name / "lib"
            if lib.is_dir():
                dirs.append(lib)
    return dirs


def secret_variables() -> frozenset[str]:
    """The environment variable names of every secret setting (SCRIBEFLEET_API_TOKENS, its aliases, ...)."""
    names: set[str] = {"WORKER_TOKEN", "REMOTE_WORKER_TOKEN", "SCRIBEFLEET_API_TOKEN_FILE"}
    prefix = Settings.model_config.get("env_prefix", "")
    for name, field in Settings.model_fields.items():
        if SecretStr not in getattr(field.annotation, "__args__", (field.annotation,)):
            continue
        names.add(f"{prefix}{name}".upper())
        alias = field.validation_alias
        names.update(str(c).upper() for c in getattr(alias, "choices", [alias] if isinstance(alias, str) else []))
    return frozenset(names)


def slot_environment(
    settings: Settings,
    *,
    gpu_index: int | None,
    cpu_threads: int,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment for a slot bound to GPU `gpu_index` (None = CPU slot)."""
    secrets = secret_variables()
    env = {k: v for k, v in (os.environ if base is None else base).items() if k.upper() not in secrets}
    if gpu_index is None:
        # a CPU slot must never grab a GPU behind our back
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu_index)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # same numbering as nvidia-smi / NVML
    libs = [str(p) for p in nvidia_lib_dirs()]
    if libs:
        old = env.get("LD_LIBRARY_PATH", "")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + ([old] if old else []))
    hf_home = settings.hf_home
    env["HF_HOME"] = str(hf_home)
    env["HF_HUB_CACHE"] = str(hf_home / "hub")
    env["TORCH_HOME"] = str(settings.cache_dir / "torch")
    if settings.offline:
        env["HF_HUB_OFFLINE"] = "1"
    threads = str(max(1, cpu_threads))
    env["OMP_NUM_THREADS"] = threads
    env["PYTHONUNBUFFERED"] = "1"
    # the slot imports scribefleet from wherever the parent did (editable installs, tests)
    src = str(Path(__file__).resolve().parents[2])
    if src not in env.get("PYTHONPATH", "").split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env
