"""cli/progress.py: the terminal bars and the `[progress]` log lines tell no ETA before there is evidence of a rate.

The dispatcher's events as it emits them (dispatch/dispatcher.py `_emit`), for
tasks of a real store; the bars render to a rich console on a string.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from rich.console import Console

from scribefleet.cli.progress import BatchProgress
from scribefleet.dispatch.monitor import DispatchEvent
from scribefleet.store.models import Task
from scribefleet.store.store import Store

MINUTES_11 = 660.0


def _long_file(tmp_path: Path) -> Task:
    store = Store.open(tmp_path)
    batch_id = store.ensure_batch("k", "transcribe", {}, None)
    return store.task(store.add_task(batch_id, "long.wav", "transcribe", {"display": "long.wav"}))


def _events(progress: BatchProgress, task: Task, audio_done_s: float) -> None:
    """Dispatched, then the transcribe stage at `audio_done_s` of the 11 minutes."""
    progress.on_event(DispatchEvent("task_dispatched", task, {"slot": "cpu0"}))
    percent = 100.0 * audio_done_s / MINUTES_11
    progress.on_event(DispatchEvent("task_progress", task, {"slot": "cpu0", "stage": "transcribe", "percent": percent,
                                                            "audio_s": MINUTES_11}))  # fmt: skip


@pytest.mark.parametrize(("audio_done_s", "told"), [(1.0, False), (240.0, True)])
def test_log_lines_tell_an_eta_only_from_evidence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, audio_done_s: float, told: bool
) -> None:
    """1 s of 11 minutes transcribed (the first batch of clips still decoding): "ETA ?" for the file and the
    batch; a decoded batch of clips (240 s): an ETA."""
    task = _long_file(tmp_path)
    progress = BatchProgress(Console(file=io.StringIO()), log_every_s=3600)  # not a terminal: log lines
    with caplog.at_level(logging.INFO, logger="scribefleet.progress"), progress.live([task]):
        _events(progress, task, audio_done_s)
        progress._log_lines()  # what the ticker writes every SCRIBEFLEET_PROGRESS_LOG_S
    file_line, batch_line = [r.getMessage() for r in caplog.records][-2:]
    assert file_line.startswith("long.wav: transcribe ") and batch_line.startswith("batch: 0/1 done")
    for line in (file_line, batch_line):
        assert line.endswith("ETA ?") != told, line


def test_the_terminal_bars_say_eta_unknown_before_evidence(tmp_path: Path) -> None:
    task = _long_file(tmp_path)
    out = io.StringIO()
    progress = BatchProgress(Console(file=out, force_terminal=True, width=200))
    with progress.live([task]):
        _events(progress, task, 1.0)
    shown = out.getvalue()
    assert "transcribe | ETA ?" in shown and "audio-s/s | ETA ?" in shown, shown
