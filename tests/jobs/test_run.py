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
    task = submit_file(speech["en05.wav"], out, TranscribeOptions(formats="json", device="cpu"), settings)
    setup_logging(out / ".scribefleet" / "logs" / "scribefleet.log")
    assert run_queued(out, settings) == 0
    with open_store(out) as store:
        assert store.task(task.id).state is TaskState.COMPLETE
        lines = "\n".join(task_log_lines(store, store.task(task.id)))
    assert f"task {task.key} (transcribe) dispatched to" in lines and f"task {task.key} completed on" in lines, lines
    assert json.loads((out / "en05.json").read_text())["text"].strip()
