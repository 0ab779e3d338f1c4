"""A real slot process running the transcribe kind: the model loads once and stays warm across tasks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scribefleet.config import Settings
from scribefleet.engines.base import SlotSpec
from scribefleet.engines.local import LocalEngine, SlotEvent
from scribefleet.options import TranscribeOptions


def run_until(engine: LocalEngine, count: int, types: tuple[str, ...], within_s: float = 120.0) -> list[SlotEvent]:
    """Every event until `count` of `types` have arrived (engine.poll blocks until something happens)."""
    seen: list[SlotEvent] = []
    give_up = time.monotonic() + within_s
    while sum(e.type in types for e in seen) < count:
        assert time.monotonic() < give_up, f"saw only {[e.type for e in seen]}"
        seen.extend(engine.poll(give_up - time.monotonic()))
    return seen


def test_transcribe_tasks_share_one_warm_model_and_bad_tasks_fail_alone(
    tmp_path: Path, settings: Settings, speech: dict[str, Path]
) -> None:
    pytest.importorskip("scribefleet.pipeline.job")
    from scribefleet.pipeline.models import resolve_model

    resolved = resolve_model("tiny.en", settings)
    options = TranscribeOptions(formats="txt", batch_size=1, vad=False, beam_size=1)

    def task(task_id: str, audio: str) -> dict:
        spec = {
            "input_path": str(speech[audio]), "display": audio, "work_dir": str(tmp_path / "work" / task_id),
            "outputs": {"txt": str(tmp_path / "out" / f"{task_id}.txt")}, "options": options.model_dump(mode="json"),
            "model_path": str(resolved.path), "model_id": resolved.model_id,
        }  # fmt: skip
        return {"task_id": task_id, "kind": "transcribe", "spec": spec, "attempt": 1}

    engine = LocalEngine(settings, tmp_path / "state", [SlotSpec("cpu0", "cpu", cpu_threads=1)])
    engine.start()
    try:
        run_until(engine, 1, ("ready",))
        events = []
        for message in (task("one", "en01.wav"), task("two", "en02.wav"), {"task_id": "odd", "kind": "nope", "spec": {}}):
            engine.assign("cpu0", message)
            events += run_until(engine, 1, ("done", "failed"))
    finally:
        engine.stop()
    outcome = {e.task_id: e for e in events if e.type in ("done", "failed")}
    assert outcome["one"].type == "done" and outcome["two"].type == "done"
    assert (tmp_path / "out" / "one.txt").read_text().strip() and (tmp_path / "out" / "two.txt").read_text().strip()
    assert [e.message["model"] for e in events if e.type == "model_loaded"] == ["tiny.en"]  # once, not per task
    assert engine.slot("cpu0").models == ["tiny.en"]
    assert {e.message["stage"] for e in events if e.type == "progress" and e.task_id == "one"} >= {"decode", "transcribe"}
    odd = outcome["odd"]
    assert odd.type == "failed" and odd.message["code"] == "TASK_FAILED" and "unknown task kind 'nope'" in odd.message["message"]
    log = (tmp_path / "state" / "logs" / "slot-cpu0.log").read_text()
    assert "slot cpu0 stopped: 2 tasks completed" in log


def test_a_burst_of_progress_ends_with_its_last_report(tmp_path: Path, settings: Settings) -> None:
    """Batched decoding reports a batch's segments at once: the slot sends the first at once and the last
    when the interval ends, never leaving the batch's end unsaid until the next batch."""
    from multiprocessing import Pipe

    from scribefleet.worker.slot import PROGRESS_EVERY_S, Slot

    parent, child = Pipe()
    slot = Slot("cpu0", "cpu", 1, settings, tmp_path, child)
    slot.current_task = "t1"
    for i in range(1, 11):  # ten segments of one batch, well within one interval
        slot._progress("t1", "transcribe", i / 20, {"audio_s": 60.0})
    assert [m["percent"] for m in _drain(parent, PROGRESS_EVERY_S * 4)] == [5.0, 50.0]
    slot._progress("t1", "transcribe", 1.0)  # the end of a stage always goes out at once
    slot._progress("t1", "render", 0.0)
    assert [(m["stage"], m["percent"]) for m in _drain(parent, 0.1)] == [("transcribe", 100.0), ("render", 0.0)]
    slot._progress("t1", "render", 0.5)  # held back, then the task ends: a report of a finished task is dropped
    slot._task_ended("t1")
    assert _drain(parent, PROGRESS_EVERY_S * 4) == []


def _drain(conn, wait_s: float) -> list[dict]:
    """What the slot sent within `wait_s` after the last message."""
    got = []
    while conn.poll(wait_s):
        got.append(conn.recv())
    return got


def test_the_slot_s_model_cache_takes_its_cpu_workers_from_the_settings(tmp_path: Path, settings: Settings) -> None:
    """SCRIBEFLEET_CPU_WORKERS reaches the cache a slot keeps its models in (pipeline/models.py clip_workers)."""
    from multiprocessing import Pipe

    from scribefleet.worker.slot import Slot

    _, child = Pipe()
    assert Slot("cpu0", "cpu", 2, settings, tmp_path, child).models().cpu_workers == 0  # the default: one per thread
    one = settings.model_copy(update={"cpu_workers": 1})
    assert Slot("cpu1", "cpu", 2, one, tmp_path, child).models().cpu_workers == 1
