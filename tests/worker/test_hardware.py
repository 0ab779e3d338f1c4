"""Hardware detection (real, on this machine), its cache, and slot planning."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timedelta, timezone

import ctranslate2
import pytest

from scribefleet.config import Settings
from scribefleet.errors import CudaUnavailable, UsageError
from scribefleet.worker.hardware import CACHE_FILE, Gpu, Hardware, detect_hardware, plan_slots


def _nvml_driver_present() -> bool:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


def _hw(gpus: int = 0, *, cuda_count: int | None = None, cores: int = 8) -> Hardware:
    """Hardware facts as data: `gpus` fake H100s (data, not a mock of detection)."""
    return Hardware(
        gpus=[
            Gpu(index=i, name="NVIDIA H100", memory_total_mb=81559, memory_free_mb=80000, uuid=f"GPU-{i:04d}")
            for i in range(gpus)
        ],
        cuda_driver_version="12.4" if gpus else None,
        cuda_device_count=gpus if cuda_count is None else cuda_count,
        cpu_cores=cores,
        cpu_model="test cpu",
        detected_at=datetime.now(timezone.utc),
    )


def test_detection_reports_this_machine(settings: Settings) -> None:
    hw = detect_hardware(settings)
    assert hw.cpu_cores == len(os.sched_getaffinity(0)) > 0
    assert hw.cpu_model
    assert hw.cuda_device_count == ctranslate2.get_cuda_device_count()
    assert set(hw.compute_types["cpu"]) == ctranslate2.get_supported_compute_types("cpu")
    assert hw.hostname == platform.node()
    assert abs((datetime.now(timezone.utc) - hw.detected_at).total_seconds()) < 60
    assert hw.mps_available is False  # Linux CI


@pytest.mark.skipif(_nvml_driver_present(), reason="this machine has an NVIDIA driver")
def test_no_driver_is_a_fact_with_a_fix_not_an_exception(settings: Settings) -> None:
    hw = detect_hardware(settings)
    assert hw.gpus == [] and hw.driver_version is None and hw.cuda_driver_version is None
    assert hw.usable_gpu_indices == []
    assert any("No NVIDIA driver" in p and "Fix:" in p for p in hw.problems)
    assert "cuda" not in hw.compute_types


def test_cache_is_used_within_ttl_and_refresh_detects_again(settings: Settings) -> None:
    first = detect_hardware(settings)
    path = settings.cache_dir / CACHE_FILE
    data = json.loads(path.read_text())
    assert data["cpu_cores"] == first.cpu_cores
    data["cpu_model"] = "from the cache"
    path.write_text(json.dumps(data))

    assert detect_hardware(settings).cpu_model == "from the cache"
    fresh = detect_hardware(settings, refresh=True)
    assert fresh.cpu_model == first.cpu_model
    assert json.loads(path.read_text())["cpu_model"] == first.cpu_model  # refresh rewrote the cache
    assert [p.name for p in settings.cache_dir.iterdir()] == [CACHE_FILE]  # no temp files left


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda d: d.update(detected_at=(datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()), id="expired"),
        pytest.param(lambda d: d.update(hostname="another-host"), id="other-host"),
        pytest.param(lambda d: d.pop("cpu_cores"), id="invalid"),
    ],
)
def test_stale_foreign_or_broken_cache_is_detected_again(settings: Settings, edit) -> None:
    real = detect_hardware(settings)
    path = settings.cache_dir / CACHE_FILE
    data = json.loads(path.read_text())
    data["cpu_model"] = "stale"
    edit(data)
    path.write_text(json.dumps(data))
    assert detect_hardware(settings).cpu_model == real.cpu_model


def test_zero_ttl_never_uses_the_cache(tmp_path) -> None:
    settings = Settings(cache_dir=tmp_path, hardware_cache_ttl_s=0, _env_file=None)
    detect_hardware(settings)
    data = json.loads((tmp_path / CACHE_FILE).read_text())
    data["cpu_model"] = "cached"
    (tmp_path / CACHE_FILE).write_text(json.dumps(data))
    assert detect_hardware(settings).cpu_model != "cached"


def test_garbage_cache_file_is_replaced(settings: Settings) -> None:
    settings.cache_dir.mkdir(parents=True)
    (settings.cache_dir / CACHE_FILE).write_text("{not json")
    hw = detect_hardware(settings)
    assert Hardware.model_validate_json((settings.cache_dir / CACHE_FILE).read_text()) == hw


@pytest.mark.parametrize(("cores", "slots", "threads"), [(2, None, 2), (2, 3, 1), (8, 2, 4), (8, 3, 2)])
def test_cpu_plan_divides_the_cores(settings: Settings, cores: int, slots: int | None, threads: int) -> None:
    plan = plan_slots(_hw(cores=cores), "cpu", slots, settings)
    assert [s.name for s in plan] == [f"cpu{i}" for i in range(slots or 1)]
    assert {(s.device, s.gpu_index, s.cpu_threads, s.resource) for s in plan} == {("cpu", None, threads, "cpu")}


def test_cpu_threads_setting_wins(tmp_path) -> None:
    settings = Settings(cache_dir=tmp_path, cpu_threads=3, _env_file=None)
    assert [s.cpu_threads for s in plan_slots(_hw(cores=8), "cpu", 2, settings)] == [3, 3]


def test_auto_without_gpu_is_one_cpu_slot_on_this_machine(settings: Settings) -> None:
    hw = detect_hardware(settings)
    if hw.usable_gpu_indices:
        pytest.skip("this machine has a usable GPU")
    plan = plan_slots(hw, "auto", None, settings)
    assert [(s.name, s.device, s.cpu_threads) for s in plan] == [("cpu0", "cpu", hw.cpu_cores)]


def test_cuda_without_gpu_raises_with_the_fix(settings: Settings) -> None:
    with pytest.raises(CudaUnavailable) as info:
        plan_slots(_hw(0), "cuda", None, settings)
    assert info.value.code == "CUDA_UNAVAILABLE"
    assert "no NVIDIA GPU" in info.value.message and "--device cpu" in info.value.message


def test_gpus_ctranslate2_cannot_see_are_not_planned(settings: Settings) -> None:
    hw = _hw(2, cuda_count=0)  # e.g. a driver too old for CUDA 12
    assert [s.device for s in plan_slots(hw, "auto", None, settings)] == ["cpu"]
    with pytest.raises(CudaUnavailable, match="none usable"):
        plan_slots(hw, "cuda", None, settings)


def test_auto_with_gpus_is_one_slot_per_gpu(settings: Settings) -> None:
    plan = plan_slots(_hw(2, cores=16), "auto", None, settings)
    assert [(s.name, s.device, s.gpu_index, s.cpu_threads, s.resource) for s in plan] == [
        ("gpu0", "cuda", 0, 8, "gpu"),
        ("gpu1", "cuda", 1, 8, "gpu"),
    ]


def test_n_slots_spread_round_robin_over_gpus(settings: Settings) -> None:
    plan = plan_slots(_hw(2, cores=16), "cuda", 5, settings)
    assert [s.name for s in plan] == ["gpu0", "gpu1", "gpu2", "gpu3", "gpu4"]
    assert [s.gpu_index for s in plan] == [0, 1, 0, 1, 0]
    assert {s.cpu_threads for s in plan} == {3}


def test_cpu_on_a_gpu_machine_and_visible_gpus(settings: Settings) -> None:
    hw = _hw(4)
    assert {s.device for s in plan_slots(hw, "cpu", 2, settings)} == {"cpu"}
    assert [s.gpu_index for s in plan_slots(hw, "auto", None, settings, visible_gpus=[1, 3])] == [1, 3]
    with pytest.raises(CudaUnavailable, match="allowed set"):
        plan_slots(hw, "cuda", None, settings, visible_gpus=[7])


@pytest.mark.parametrize(("device", "slots"), [("mps", None), ("cpu", 0), ("auto", -1)])
def test_bad_device_or_slots_is_a_usage_error(settings: Settings, device: str, slots: int | None) -> None:
    with pytest.raises(UsageError):
        plan_slots(_hw(1), device, slots, settings)



@pytest.mark.parametrize("variable", ["SCRIBEFLEET_GPUS", "CUDA_VISIBLE_DEVICES"])
@pytest.mark.parametrize(
    ("spec", "indices"),
    [("1", [1]), ("2,0", [0, 2]), ("GPU-0002", [2]), ("GPU-0001,7", [1]), ("", []), ("-1", []), ("0,bogus,2", [0])],
)
def test_allowed_gpus_restrict_the_plan(tmp_path, monkeypatch, variable: str, spec: str, indices: list[int]) -> None:
    monkeypatch.setenv(variable, spec)
    plan = plan_slots(_hw(3), "auto", None, Settings(cache_dir=tmp_path, _env_file=None))
    if indices:
        assert sorted(s.gpu_index for s in plan) == indices and {s.device for s in plan} == {"cuda"}
    else:
        assert [s.device for s in plan] == ["cpu"]


def test_slots_per_gpu_plans_that_many_slots_on_each_gpu(settings: Settings) -> None:
    shared = settings.model_copy(update={"slots_per_gpu": 2})
    plan = plan_slots(_hw(2, cores=16), "auto", None, shared)
    assert [(s.name, s.gpu_index) for s in plan] == [("gpu0a", 0), ("gpu1a", 1), ("gpu0b", 0), ("gpu1b", 1)]
    assert {s.cpu_threads for s in plan} == {4} and {s.device for s in plan} == {"cuda"}
    # --slots still caps the total; the first slots go one to each GPU
    assert [s.name for s in plan_slots(_hw(2), "cuda", 3, shared)] == ["gpu0a", "gpu1a", "gpu0b"]
    # named after the physical GPU, which the allowed set may pick
    assert [s.name for s in plan_slots(_hw(4), "auto", None, shared, visible_gpus=[3])] == ["gpu3a", "gpu3b"]
    # a CPU plan is not multiplied
    assert [s.name for s in plan_slots(_hw(0), "auto", None, shared)] == ["cpu0"]


def test_slots_per_gpu_from_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SCRIBEFLEET_SLOTS_PER_GPU", "3")
    plan = plan_slots(_hw(1), "auto", None, Settings(cache_dir=tmp_path, _env_file=None))
    assert [s.name for s in plan] == ["gpu0a", "gpu0b", "gpu0c"]
    monkeypatch.setenv("SCRIBEFLEET_SLOTS_PER_GPU", "0")
    with pytest.raises(ValueError):
        Settings(cache_dir=tmp_path, _env_file=None)


@pytest.mark.skipif(_nvml_driver_present(), reason="this machine has an NVIDIA driver")
def test_gpu_memory_per_process_is_none_without_nvml() -> None:
    from scribefleet.worker.hardware import gpu_memory_by_pid

    assert gpu_memory_by_pid([0]) is None


def test_runtime_slot_memory_without_nvml_is_null_and_shown_as_unknown() -> None:
    """A GPU slot whose memory NVML cannot tell: null in GET /api/runtime, "-" on the runtime page."""
    from scribefleet.engines.base import SlotHandle, SlotStatus
    from scribefleet.service.controller import _gpu_memory
    from scribefleet.service.ui_views import slot_view
    from scribefleet.worker.slot_spec import SlotSpec

    class _Running(SlotHandle):  # a slot handle with a process, as the local engine's
        @property
        def pid(self) -> int | None:
            return os.getpid()

    spec = SlotSpec("gpu0a", "cuda", gpu_index=0)
    held = _gpu_memory([spec], {"gpu0a": _Running(spec, SlotStatus.IDLE)})
    if not _nvml_driver_present():
        assert held == {}
    assert slot_view({"name": "gpu0a", "device": "cuda", "gpuMemoryMb": None}).gpu_memory == "-"
    assert slot_view({"name": "gpu0a", "device": "cuda", "gpuMemoryMb": 1234}).gpu_memory == "1234 MiB"
    assert slot_view({"name": "cpu0", "device": "cpu", "gpuMemoryMb": None}).gpu_memory == ""
