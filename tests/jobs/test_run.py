"""jobs/run.py: a whole transcribe run and the queued-jobs runner, in process, on real slots and the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import TEXTS, wer
from scribefleet.config import Settings
from scribefleet.jobs.create import submit_file
from scribefleet.jobs.lookup import open_store, task_log_lines
from scribefleet.jobs.run import run_queued, run_transcribe
from scribefleet.logs import setup_logging
from scribefleet.options import TranscribeOptions
from scribefleet.store.models import TaskState


def test_run_transcribe_runs_a_batch_and_a_rerun_has_nothing_to_do(tmp_path: Path, speech: dict[str, Path], settings: Settings) -> None:
    out = tmp_path / "out"
    options = TranscribeOptions(formats="txt", device="cpu")
    seen: list[str] = []
    store, batch_id = run_transcribe([str(speech["en04.wav"])], out, options, settings, slots=1,
                                     listeners=[lambda e: seen.append(e.type)])  # fmt: skip
    (task,) = store.tasks(batch_id=batch_id)
    assert task.state is TaskState.COMPLETE, task.error_message
    assert wer(TEXTS["en04.wav"], (out / "en04.txt").read_text()) <= 0.3
    assert seen, "the listeners hear the dispatcher"
    again, same = run_transcribe([str(speech["en04.wav"])], out, options, settings, slots=1)
    assert same == batch_id and again.task(task.id).attempts == 1  # finished work is not redone


def test_logs_of_a_submitted_job_have_the_runner_dispatch_lines(tmp_path: Path, speech: dict[str, Path], settings: Settings) -> None:
    out = tmp_path / "out"
    (task,) = submit_file(speech["en05.wav"], out, TranscribeOptions(formats="json", device="cpu"), settings)
    setup_logging(out / ".scribefleet" / "logs" / "scribefleet.log")
    assert run_queued(out, settings) == 0
    with open_store(out) as store:
        assert store.task(task.id).state is TaskState.COMPLETE
        lines = "\n".join(task_log_lines(store, store.task(task.id)))
    assert f"task {task.key} (transcribe) dispatched to" in lines and f"task {task.key} completed on" in lines, lines
    assert json.loads((out / "en05.json").read_text())["text"].strip()


def test_slots_for_plans_slots_per_gpu_each_pinned_to_its_gpu(settings: Settings) -> None:
    """Fake GPU facts in the hardware cache (what detect_hardware reads); the plan and each slot's device env."""
    import platform
    from datetime import datetime, timezone

    from scribefleet.jobs.run import slots_for
    from scribefleet.worker.env import slot_environment
    from scribefleet.worker.hardware import CACHE_FILE, Gpu, Hardware

    gpus = [Gpu(index=i, name="NVIDIA H100", memory_total_mb=81559, memory_free_mb=80000, uuid=f"GPU-{i}") for i in range(2)]
    facts = Hardware(gpus=gpus, cuda_driver_version="12.4", cuda_device_count=2, cpu_cores=8, cpu_model="test cpu",
                     hostname=platform.node(), detected_at=datetime.now(timezone.utc))  # fmt: skip
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    (settings.cache_dir / CACHE_FILE).write_text(facts.model_dump_json(), encoding="utf-8")
    shared = settings.model_copy(update={"slots_per_gpu": 2})
    specs = slots_for(shared, "cuda", None)
    assert [s.name for s in specs] == ["gpu0a", "gpu1a", "gpu0b", "gpu1b"]
    visible = {s.name: slot_environment(shared, gpu_index=s.gpu_index, cpu_threads=s.cpu_threads, base={})["CUDA_VISIBLE_DEVICES"]
               for s in specs}  # fmt: skip
    assert visible == {"gpu0a": "0", "gpu0b": "0", "gpu1a": "1", "gpu1b": "1"}
    assert [s.name for s in slots_for(shared, "auto", None, work=3)] == ["gpu0a", "gpu1a", "gpu0b"]  # no more than the work
    assert [s.name for s in slots_for(settings, "auto", None)] == ["gpu0", "gpu1"]  # one per GPU by default
