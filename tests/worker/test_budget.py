"""How many slots a machine holds (worker/budget.py): the rule as numbers, and in plan_slots."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from scribefleet.config import Settings
from scribefleet.worker.budget import available_memory_mb, model_weights_mb, slot_budget, slot_memory_mb
from scribefleet.worker.hardware import plan_slots
from worker.test_hardware import _hw

GB = 1024


def test_a_thousand_cpu_slots_on_two_cores_are_capped_by_the_cores() -> None:
    """The incident: --slots 1000 on a 2-core machine, a load of 450 and a slot killed by the OOM killer."""
    budget = slot_budget(1000, device="cpu", cpu_cores=2, memory_mb=20 * GB, slot_mb=475)
    assert (budget.used, budget.capped) == (4, True)
    warning = budget.warning()
    assert warning.startswith("1000 slots asked for, 4 CPU slot(s) started: ") and "2 CPU core(s)" in warning, warning
    assert "memory" not in warning  # the limit that decided is named, not one it also went over


def test_a_moderate_excess_over_the_cores_stays_allowed() -> None:
    """Spare slots are lent to one long file: --slots 4 on 2 cores is asked for on purpose."""
    budget = slot_budget(4, device="cpu", cpu_cores=2, memory_mb=20 * GB, slot_mb=475)
    assert (budget.used, budget.capped, budget.reasons) == (4, False, [])


def test_memory_caps_slots_of_a_large_model() -> None:
    slot_mb = slot_memory_mb("cpu", model_mb=3 * GB)  # large-v3's weights
    budget = slot_budget(16, device="cpu", cpu_cores=32, memory_mb=14 * GB, slot_mb=slot_mb)
    assert budget.used == 14 * GB // slot_mb == 4
    assert budget.reasons == [f"14.0 GB of memory is available and a slot takes about {slot_mb / GB:.1f} GB "
                              "(SCRIBEFLEET_SLOT_MEMORY_MB)"]  # fmt: skip
    # however little memory is left, one slot runs; unknown memory limits nothing
    assert slot_budget(3, device="cpu", cpu_cores=8, memory_mb=100, slot_mb=475).used == 1
    assert slot_budget(3, device="cpu", cpu_cores=8, memory_mb=None, slot_mb=475).used == 3


def test_gpu_slots_are_bounded_per_gpu_and_by_its_memory() -> None:
    h100 = 81559
    assert slot_budget(1000, device="cuda", cpu_cores=2, gpu_memory_mb=[h100], memory_mb=None, slot_mb=500).used == 26
    large = slot_budget(20, device="cuda", cpu_cores=64, gpu_memory_mb=[24 * GB, 24 * GB], memory_mb=None,
                        slot_mb=500, model_mb=3 * GB)  # fmt: skip
    assert large.used == 2 * (24 * GB // (300 + 3 * GB)) == 14 and "GPUs' memory" in large.reasons[0]
    # the cores do not cap GPU slots (a slot per GPU on a small host is normal); the host memory does
    assert slot_budget(8, device="cuda", cpu_cores=2, gpu_memory_mb=[h100] * 8, memory_mb=64 * GB, slot_mb=500).used == 8
    assert slot_budget(8, device="cuda", cpu_cores=2, gpu_memory_mb=[0], memory_mb=2 * GB, slot_mb=500).used == 4


def test_the_estimate_comes_from_the_model_or_the_setting(model_path: Path) -> None:
    assert model_weights_mb(model_path) == 72  # tiny.en's model.bin
    assert 450 <= slot_memory_mb("cpu", model_weights_mb(model_path)) <= 550  # about 0.5 GB (docs/performance.md)
    assert slot_memory_mb("cpu", 72, setting_mb=2000) == 2000
    assert model_weights_mb(None) == model_weights_mb(Path("/nonexistent")) == 75
    assert (available_memory_mb() or 1) > 0


def test_plan_slots_caps_and_says_so(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(cache_dir=tmp_path, _env_file=None)
    with caplog.at_level(logging.WARNING, logger="scribefleet.hardware"):
        plan = plan_slots(_hw(cores=2), "cpu", 1000, settings, memory_mb=20 * GB)
        assert [s.name for s in plan] == ["cpu0", "cpu1", "cpu2", "cpu3"] and {s.cpu_threads for s in plan} == {1}
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
            "1000 slots asked for, 4 CPU slot(s) started: this machine has 2 CPU core(s), and more than 2 slots a "
            "core only wait for the cores (docs/configuration.md, 'How many slots')"]  # fmt: skip
        assert len(plan_slots(_hw(cores=2), "cpu", 4, settings, memory_mb=20 * GB)) == 4
        assert len(plan_slots(_hw(1, cores=2), "cuda", 1000, settings, memory_mb=64 * GB)) == 26
        tight = settings.model_copy(update={"slot_memory_mb": 10 * GB})
        assert len(plan_slots(_hw(cores=16), "cpu", 3, tight, memory_mb=20 * GB)) == 2
        assert len(plan_slots(_hw(2, cores=4), "auto", None, settings, memory_mb=64 * GB)) == 2  # defaults untouched
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 3  # each cut said, nothing else
