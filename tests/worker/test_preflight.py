"""Preflight inside a slot, and the proof that a device really runs the model."""

from __future__ import annotations

import os
from pathlib import Path

import ctranslate2
import pytest

from helpers import TEXTS, wer
from scribefleet.config import Settings
from scribefleet.errors import CudaUnavailable
from scribefleet.worker.preflight import (
    FIX_PIP, LibCheck, _cuda_reasons, check_library, cuda_libraries, preflight, prove_device, run_child,
)

HAS_CUDA = ctranslate2.get_cuda_device_count() > 0
DATA = Path(__file__).parents[1] / "data"


def _lib(name: str, found: bool) -> LibCheck:
    return LibCheck(name=name, found=found, path=Path("/x") / name if found else None)


ALL_LIBS = [_lib(n, True) for n in ("libcuda.so.1", "libcublas.so.12", "libcublasLt.so.12")]


def test_preflight_cpu_gives_facts() -> None:
    facts = preflight("cpu")
    assert facts["device"] == "cpu" and facts["pid"] == os.getpid()
    assert "float32" in facts["compute_types"]
    assert facts["ctranslate2"] == ctranslate2.__version__


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a usable GPU")
def test_preflight_cuda_here_says_why_and_the_fix() -> None:
    with pytest.raises(CudaUnavailable) as info:
        preflight("cuda", environ={"CUDA_VISIBLE_DEVICES": "0"})
    err = info.value
    assert err.code == "CUDA_UNAVAILABLE"
    assert "Fix:" in err.message
    assert err.details["cuda_device_count"] == 0
    assert {lib["name"] for lib in err.details["libraries"]} >= {"libcublas.so.12", "libcuda.so.1"}
    if not check_library("libcublas.so.12").found:
        assert "pip install nvidia-cublas-cu12 nvidia-cudnn-cu12==9.*" in err.message


def test_unpinned_cuda_slot_is_refused() -> None:
    with pytest.raises(CudaUnavailable, match="not pinned"):
        preflight("cuda", environ={"CUDA_VISIBLE_DEVICES": "0,1"})


@pytest.mark.parametrize(
    ("visible", "count", "driver", "libs", "expected"),
    [
        ("0", 1, (12, 4), ALL_LIBS, []),
        ("0", 0, None, ALL_LIBS, ["No NVIDIA driver"]),
        ("0", 0, (11, 8), ALL_LIBS, ["needs CUDA 12"]),
        ("3", 0, (12, 4), ALL_LIBS, ["sees no GPU"]),
        ("0", 1, (12, 4), [ALL_LIBS[0], _lib("libcublas.so.12", False)], [FIX_PIP]),
        (None, 1, (12, 4), ALL_LIBS, ["not pinned"]),
    ],
)
def test_each_cuda_failure_has_its_own_reason(visible, count, driver, libs, expected) -> None:
    reasons = _cuda_reasons(visible, count, driver, libs)
    assert len(reasons) == len(expected)
    for reason, words in zip(reasons, expected):
        assert words in reason and "Fix:" in reason


def test_library_checks_load_real_files() -> None:
    libm = check_library("libm.so.6")
    assert libm.found and libm.path is not None and libm.path.is_file()
    missing = check_library("libscribefleet-missing.so.9")
    assert not missing.found and missing.path is None and "libscribefleet-missing.so.9" in missing.error
    names = [c.name for c in cuda_libraries()]
    assert names[:3] == ["libcuda.so.1", "libcublas.so.12", "libcublasLt.so.12"] and "libcudnn.so.9" in names


def test_prove_cpu_really_transcribes(model_path: Path, settings: Settings) -> None:
    result = prove_device(model_path, "cpu", None, "int8", settings, audio_path=DATA / "en01.wav")
    assert result["ok"], result.get("error")
    assert result["device"] == "cpu" and result["gpu_index"] is None
    assert result["pid"] != os.getpid()  # a fresh process, like a slot
    assert result["compute_type"].startswith("int8")
    assert result["load_s"] > 0 and result["infer_s"] > 0
    assert wer(TEXTS["en01.wav"], result["text"]) <= 0.35


def test_prove_cpu_with_generated_audio(model_path: Path, settings: Settings) -> None:
    result = prove_device(model_path, "cpu", None, "auto", settings)
    assert result["ok"], result.get("error")
    assert result["facts"]["omp_num_threads"] == str(settings.cpu_threads or len(os.sched_getaffinity(0)))


@pytest.mark.parametrize(
    ("model", "compute_type", "code"),
    [("missing", "int8", "MODEL_NOT_FOUND"), ("empty", "int8", "MODEL_LOAD_FAILED"), ("real", "float99", "INVALID_OPTIONS")],
)
def test_prove_failures_have_stable_codes(model_path, settings, tmp_path, model, compute_type, code) -> None:
    path = {"missing": tmp_path / "nope", "empty": tmp_path, "real": model_path}[model]
    result = prove_device(path, "cpu", None, compute_type, settings)
    assert result["ok"] is False and result["error"]["code"] == code


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a usable GPU")
def test_prove_cuda_without_gpu_fails_with_cuda_unavailable(model_path: Path, settings: Settings) -> None:
    result = prove_device(model_path, "cuda", 0, "auto", settings)
    assert result["ok"] is False and result["error"]["code"] == "CUDA_UNAVAILABLE"
    assert result["error"]["details"]["cuda_visible_devices"] == "0"  # the parent pinned it before exec


def test_child_that_dies_without_a_result_is_a_crash() -> None:
    result = run_child(["prove", "--no-such-flag"], dict(os.environ), 60)
    assert result["ok"] is False and result["error"]["code"] == "SLOT_CRASHED"
    assert "exited with code 2" in result["error"]["message"] and "usage:" in result["error"]["message"]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_prove_cuda_holds_gpu_memory(model_path: Path, settings: Settings) -> None:
    result = prove_device(model_path, "cuda", 0, "auto", settings, audio_path=DATA / "en01.wav")
    assert result["ok"], result.get("error")
    assert result["gpu_proof"] in ("nvml_process", "memory_rise")
    assert result["gpu_memory_mb"] > 0
    assert wer(TEXTS["en01.wav"], result["text"]) <= 0.35


def test_child_past_its_limit_is_killed_as_a_timeout() -> None:
    result = run_child(["check", "--device", "cpu"], dict(os.environ), 0.01)
    assert result["ok"] is False and result["error"]["code"] == "TASK_TIMEOUT"
