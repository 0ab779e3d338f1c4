"""One long recording on two slots: free slots are lent to its windows (dispatch/lending.py, pipeline/spread.py).

Real parts only: the bundled tiny.en model, real recorded speech (the LibriVox
sonnet read three times with pauses, about 2.8 minutes), two local CPU slot
processes with one thread each, and real SIGKILLs of a helper slot in the
middle of its window and of the owner slot once windows are finished.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from data.real_long import write_repeated
from helpers import wer
from scribefleet.config import Settings
from scribefleet.dispatch.monitor import DispatchEvent
from scribefleet.jobs.run import run_transcribe
from scribefleet.options import TranscribeOptions
from scribefleet.store.models import Task, TaskState

REPEATS = 3


@pytest.fixture(scope="module")
def long_speech(real_speech: dict[str, tuple[Path, str]], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The sonnet read REPEATS times with 1.5 s pauses between: (recording, reference text)."""
    wav, _ = real_speech["sonnet001"]
    path = tmp_path_factory.mktemp("long") / "sonnet-x3.wav"
    return path, write_repeated(path, REPEATS, [wav])


def _settings(root: Path) -> Settings:
    return Settings(cache_dir=root / "cache", cpu_threads=1, _env_file=None)


def _run(wav: Path, out: Path, slots: int, listener: Any = None, **options: Any) -> tuple[Task, str]:
    """Transcribe `wav` on `slots` CPU slots of one thread each; (the task, its text)."""
    opts = TranscribeOptions(formats="txt", device="cpu", **options)
    listeners = [listener] if listener is not None else []
    store, batch_id = run_transcribe([str(wav)], out, opts, _settings(out.parent), slots=slots, listeners=listeners)
    (task,) = store.tasks(batch_id=batch_id)
    assert task.state is TaskState.COMPLETE, task.error_message
    return task, (out / f"{wav.stem}.txt").read_text()


def _records(task: Task) -> list[dict[str, Any]]:
    path = Path(task.spec["work_dir"]) / "windows.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _plan(task: Task) -> list[list[float]]:
    return json.loads((Path(task.spec["work_dir"]) / "spread.json").read_text())["windows"]


def _slot_pid(state_dir: Path, name: str) -> int:
    """The pid of slot `name` of the engine whose state dir is `state_dir` (from /proc: no handle on the engine here)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"scribefleet.worker.slot" in argv and _arg(argv, b"--name") == name.encode() \
                and _arg(argv, b"--state-dir") == str(state_dir).encode():
            return int(entry.name)
    raise LookupError(f"no slot {name} of {state_dir} is running")


def _arg(argv: list[bytes], flag: bytes) -> bytes | None:
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


@pytest.fixture(scope="module")
def one_slot(long_speech: tuple[Path, str], model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The transcript of the long recording with the same window plan, every window decoded by its owner alone."""
    from scribefleet.pipeline.job import TranscriptionJob, run_transcription
    from scribefleet.pipeline.models import ModelCache

    wav, _ = long_speech
    tmp = tmp_path_factory.mktemp("one")
    job = TranscriptionJob(
        input_path=wav, work_dir=tmp / "work", outputs={"txt": tmp / "one.txt"}, model_path=model_path,
        model_id="tiny.en", options=TranscribeOptions(formats="txt", device="cpu"), cpu_threads=1,
        spread_slots=2, slot_name="alone",  # nobody is lent: the owner takes every window of the plan
    )  # fmt: skip
    result = run_transcription(job, ModelCache(1), lambda *_: None)
    assert set(result["spread"]["by_slot"]) == {"alone"}
    return (tmp / "one.txt").read_text()


def test_a_long_file_is_decoded_on_both_slots_and_reads_as_on_one(
    long_speech: tuple[Path, str], one_slot: str, tmp_path: Path
) -> None:
    wav, reference = long_speech
    events: list[DispatchEvent] = []
    task, text = _run(wav, tmp_path / "out", slots=2, listener=events.append)
    records = _records(task)
    assert sorted(r["index"] for r in records) == list(range(len(_plan(task)))), "every window once"
    assert len(records) >= 3
    assert {r["slot"] for r in records} == {"cpu0", "cpu1"}, [(r["index"], r["slot"]) for r in records]
    assert task.result["spread"]["by_slot"] == {s: sum(r["slot"] == s for r in records) for s in ("cpu0", "cpu1")}
    assert task.attempts == 1
    lent = [e for e in events if e.type == "slot_lent"]
    assert lent and all(e.task is not None and e.task.id == task.id for e in lent)
    assert text == one_slot, "stitched in order, in one language: as if one slot had decoded every window"
    assert wer(reference, text) <= 0.2


def test_a_helper_killed_mid_window_costs_that_window_only(long_speech: tuple[Path, str], tmp_path: Path) -> None:
    wav, reference = long_speech
    out = tmp_path / "out"
    lent_pid: dict[str, int] = {}
    killed: dict[str, Any] = {}

    def listener(event: DispatchEvent) -> None:
        if event.type == "slot_lent":
            lent_pid[event.data["slot"]] = event.data["pid"]
        # sequential decoding reports every segment: the first one is well inside the helper's window
        elif event.type == "window_progress" and not killed:
            killed.update(slot=event.data["slot"], window=event.data["window"])
            os.kill(lent_pid[event.data["slot"]], signal.SIGKILL)

    task, text = _run(wav, out, slots=2, listener=listener, batch_size=1)
    assert killed, "a helper was lent and reported progress"
    records = _records(task)
    assert sorted(r["index"] for r in records) == list(range(len(_plan(task)))), "every window exactly once"
    assert task.attempts == 1, "a helper's death never fails the task"
    redone = next(r for r in records if r["index"] == killed["window"])
    assert redone["slot"] != killed["slot"], "the killed helper's window was decoded by the owner"
    assert wer(reference, text) <= 0.2


def test_a_killed_owner_resumes_with_the_same_plan_and_finished_windows(
    long_speech: tuple[Path, str], tmp_path: Path
) -> None:
    wav, reference = long_speech
    out = tmp_path / "out"
    state_dir = out.resolve() / ".scribefleet"
    before: dict[str, Any] = {}

    def listener(event: DispatchEvent) -> None:
        if before or event.type != "task_progress" or event.task is None or event.task.attempts != 1:
            return
        work_dir = Path(event.task.spec["work_dir"])
        records = [json.loads(x) for x in (work_dir / "windows.jsonl").read_text().splitlines() if x.strip()] \
            if (work_dir / "windows.jsonl").exists() else []
        if records:  # the owner's own progress: the slot in the event is the owner's
            before.update(records=records, plan=json.loads((work_dir / "spread.json").read_text()))
            os.kill(_slot_pid(state_dir, event.data["slot"]), signal.SIGKILL)

    task, text = _run(wav, out, slots=2, listener=listener)
    assert before, "the owner was killed once a window was finished"
    assert task.attempts == 2
    after = {r["index"]: r for r in _records(task)}
    assert sorted(after) == list(range(len(before["plan"]["windows"]))), "every window exactly once"
    assert _plan(task) == before["plan"]["windows"], "the resumed job kept its plan"
    for record in before["records"]:  # finished before the kill: reused as they were
        assert after[record["index"]] == record
    assert wer(reference, text) <= 0.2


def test_a_long_file_among_short_ones_is_spread_not_grouped(real_speech: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    """Issue 14's demanding user, scaled to a 2-core test: one long recording (6.4 minutes: long, by
    pipeline/spread_plan.py) and six short clips in one `transcribe` run on three slots, before any slot has
    decoded anything (the long file's length comes from its header when the task is made). The long file
    is first in the queue, so it used to lead a group of short clips and decode on its one slot while
    the others idled. Now it runs alone with a plan for all three slots, the clips decode in groups on
    the other two, and then those slots are lent to its windows."""
    from data.fetch_real import fetch
    from data.real_clips import cut_clips

    sonnet, _ = real_speech["sonnet001"]
    inbox = tmp_path / "in"
    reference = write_repeated(inbox / "a-long.wav", 7, [sonnet])  # sorted first: placed first
    refs = cut_clips(fetch(), inbox, repeats=1, min_s=5.0, max_s=12.0, limit=6)
    out = tmp_path / "out"
    on_slot: dict[str, set[str]] = {}
    shared: list[set[str]] = []

    def listener(event: DispatchEvent) -> None:  # who runs together on one slot (a group)
        if event.task is None or event.task.kind != "transcribe":
            return
        name = Path(event.task.key).name
        if event.type == "task_dispatched":
            running = on_slot.setdefault(event.data["slot"], set())
            if running:
                shared.append(running | {name})
            running.add(name)
        elif event.type in ("task_completed", "task_failed", "task_requeued"):
            for running in on_slot.values():
                running.discard(name)

    opts = TranscribeOptions(formats="txt", device="cpu")
    store, batch_id = run_transcribe([str(inbox)], out, opts, _settings(tmp_path), slots=3, listeners=[listener])
    tasks = {Path(t.key).name: t for t in store.tasks(batch_id=batch_id)}
    assert all(t.state is TaskState.COMPLETE for t in tasks.values()), [(t.key, t.error_message) for t in tasks.values()]
    assert shared and not any("a-long.wav" in group for group in shared), shared  # the clips grouped, not the long file
    long = tasks["a-long.wav"]
    assert long.audio_s == pytest.approx(383.4, abs=0.5)
    assert len(long.result["spread"]["by_slot"]) >= 2, long.result  # its windows decoded on more than its slot
    assert wer(reference, (out / "a-long.txt").read_text()) <= 0.2
    assert all(wer(refs[name], (out / f"{Path(name).stem}.txt").read_text()) <= 0.35 for name in refs)
