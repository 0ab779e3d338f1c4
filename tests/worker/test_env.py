"""The environment a slot starts with: device pinning and the pip CUDA libraries' folders."""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scribefleet.config import Settings
from scribefleet.worker.env import slot_environment
from scribefleet.worker.preflight import check_library


def test_gpu_slot_is_pinned_to_its_gpu(settings: Settings) -> None:
    env = slot_environment(settings, gpu_index=1, cpu_threads=4, base={"CUDA_VISIBLE_DEVICES": "0,1,2"})
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # the numbering of nvidia-smi and NVML
    assert env["OMP_NUM_THREADS"] == "4"


def test_no_secret_setting_reaches_a_slot(settings: Settings) -> None:
    secrets = {
        "SCRIBEFLEET_API_TOKENS": "a" * 20, "SCRIBEFLEET_TOKEN": "b" * 20, "SCRIBEFLEET_LLM_API_KEY": "c" * 20,
        "WORKER_TOKEN": "d" * 20, "scribefleet_api_tokens": "e" * 20,
    }  # fmt: skip
    env = slot_environment(settings, gpu_index=None, cpu_threads=1, base={**secrets, "AWS_PROFILE": "media", "HOME": "/h"})
    assert not set(env) & set(secrets) and not any(v in env.values() for v in secrets.values())
    assert env["AWS_PROFILE"] == "media" and env["HOME"] == "/h"  # what tasks legitimately need stays


def test_cpu_slot_sees_no_gpu(settings: Settings) -> None:
    env = slot_environment(settings, gpu_index=None, cpu_threads=0, base={"CUDA_VISIBLE_DEVICES": "0"})
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["HF_HOME"] == str(settings.hf_home)


def _fake_nvidia_site(root: Path) -> Path:
    """A site folder holding nvidia/cublas/lib/libcublas.so.12 (a copy of zlib, loadable anywhere)."""
    zlib = ctypes.util.find_library("z")
    if zlib is None:
        pytest.skip("no zlib on this machine to stand in for libcublas")
    real = check_library(zlib).path
    assert real is not None and real.is_file()
    site = root / "site"
    (site / "nvidia").mkdir(parents=True)
    (site / "nvidia" / "__init__.py").write_text("")
    for package, name in (("cublas", "libcublas.so.12"), ("cudnn", "libcudnn.so.9")):
        lib = site / "nvidia" / package / "lib"
        lib.mkdir(parents=True)
        shutil.copy(real, lib / name)
    return site


def _run(code: str, env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_pip_cuda_lib_folders_reach_the_slot_before_it_starts(tmp_path: Path) -> None:
    site = _fake_nvidia_site(tmp_path)
    parent_env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    parent_env["PYTHONPATH"] = str(site)
    parent_env["LD_LIBRARY_PATH"] = "/opt/already/there"
    # a parent process that imports scribefleet with the fake wheels on its path computes the env
    slot_env = _run(
        "import json; from pathlib import Path; from scribefleet.config import Settings;"
        "from scribefleet.worker.env import slot_environment;"
        f"print(json.dumps(slot_environment(Settings(cache_dir=Path({str(tmp_path)!r})), gpu_index=0, cpu_threads=1)))",
        parent_env,
    )
    lib_path = slot_env["LD_LIBRARY_PATH"].split(os.pathsep)
    cublas, cudnn = site / "nvidia" / "cublas" / "lib", site / "nvidia" / "cudnn" / "lib"
    assert lib_path == [str(cublas), str(cudnn), "/opt/already/there"]

    # the slot started with that environment loads the library from the wheel's folder ...
    code = (
        "import json; from scribefleet.worker.preflight import check_library;"
        "print(check_library('libcublas.so.12').model_dump_json())"
    )
    found = _run(code, slot_env)
    assert found["found"] is True and Path(found["path"]).parent == cublas

    # ... while a process started without it cannot (setting os.environ later would be too late)
    without = _run(code, {**slot_env, "LD_LIBRARY_PATH": ""})
    assert without["found"] is False or Path(without["path"]).parent != cublas
