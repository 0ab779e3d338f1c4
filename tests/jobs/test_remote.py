"""jobs/remote.py: the batch runner's state file, on its own (the runs against a controller: tests/cli/test_batch.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scribefleet.errors import StateLocked, UsageError
from scribefleet.jobs.remote import BatchState


def test_state_file_is_written_at_once_locked_and_tied_to_its_controller(tmp_path: Path) -> None:
    path = tmp_path / "batch_state.json"
    state = BatchState.load(path, controller="http://a", input_dir=tmp_path, options={"model": "tiny.en"})
    state.update("talk.wav", status="uploaded", uploadId="u1")
    assert json.loads(path.read_text())["files"]["talk.wav"] == {"status": "uploaded", "uploadId": "u1"}
    with pytest.raises(StateLocked):  # a second runner on the same state would submit twice
        BatchState.load(path, controller="http://a", input_dir=tmp_path, options={"model": "tiny.en"})
    state.unlock()
    with pytest.raises(UsageError, match="belongs to controller http://a"):
        BatchState.load(path, controller="http://b", input_dir=tmp_path, options={"model": "tiny.en"})


def test_other_options_start_the_files_over(tmp_path: Path) -> None:
    path = tmp_path / "batch_state.json"
    state = BatchState.load(path, controller="http://a", input_dir=tmp_path, options={"model": "tiny.en"})
    state.update(None, batchId="b1")
    state.update("talk.wav", status="complete", jobId="j1")
    state.unlock()
    again = BatchState.load(path, controller="http://a", input_dir=tmp_path, options={"model": "small"})
    assert again.files == {} and again.data["previousBatchId"] == "b1" and "batchId" not in again.data
    again.unlock()
