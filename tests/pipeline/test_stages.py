"""Chosen stages run again (seed 004's --stages): a stage and what depends on it, from the other checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from helpers import DATA, TEXTS, wer
from scribefleet.pipeline.job import STAGES, run_transcription, stages_to_redo
from scribefleet.pipeline.models import ModelCache
from pipeline.conftest import ProgressLog


def test_a_chosen_stage_brings_what_depends_on_it() -> None:
    assert stages_to_redo(["render"]) == ["render", "publish"]
    assert stages_to_redo(["vad"]) == ["vad", "transcribe", "render", "publish"]
    assert stages_to_redo(["publish", "decode"]) == list(STAGES)
    assert stages_to_redo([]) == []


def test_unknown_stages_are_refused(make_job) -> None:
    with pytest.raises(ValidationError, match="unknown stage.*choose from decode, vad, transcribe"):
        make_job(DATA / "en01.wav", rerun_stages=("render", "asr"))


@pytest.fixture
def finished(tmp_path: Path, make_job, models):
    """A finished job (json and srt) whose input is still there."""
    source = tmp_path / "in" / "fox.wav"
    source.parent.mkdir()
    shutil.copy(DATA / "en01.wav", source)
    job = make_job(source, formats=("json", "srt"))
    run_transcription(job, models, ProgressLog())
    return job


def test_rerender_in_a_new_format_without_transcribing(finished, tmp_path: Path) -> None:
    transcript = finished.work_dir / "transcript.json"
    before = transcript.read_bytes()
    finished.input_path.unlink()  # not needed: only render and publish run
    events: list[tuple[str, str]] = []
    cold = ModelCache(1, on_change=lambda event, model_id: events.append((event, model_id)))
    outputs = dict(finished.outputs, vtt=tmp_path / "out" / "fox.vtt")
    job = finished.model_copy(update={"outputs": outputs, "rerun_stages": ("render",), "rerun_id": "r1"})
    progress = ProgressLog()
    result = run_transcription(job, cold, progress)
    assert result["stages_run"] == ["render", "publish"] and result["rerun_stages"] == ["render", "publish"]
    assert progress.started_stages == ["render", "publish"]
    assert events == []  # no model loaded
    assert transcript.read_bytes() == before
    assert outputs["vtt"].read_text().startswith("WEBVTT")


def test_retranscribe_decodes_again_and_keeps_vad(finished, models) -> None:
    job = finished.model_copy(update={"rerun_stages": ("transcribe",), "rerun_id": "r2"})
    transcript = finished.work_dir / "transcript.json"
    old = transcript.stat().st_mtime_ns
    progress = ProgressLog()
    result = run_transcription(job, models, progress)
    # audio.npy went when the first transcript was written: decode runs again to feed transcribe
    assert progress.started_stages == ["decode", "transcribe", "render", "publish"]
    assert result["stages_run"] == ["decode", "transcribe", "render", "publish"]
    assert transcript.stat().st_mtime_ns != old
    assert wer(TEXTS["en01.wav"], json.loads(transcript.read_text())["text"]) <= 0.3


def test_a_retried_attempt_of_the_same_request_resumes_instead_of_starting_over(finished, models) -> None:
    job = finished.model_copy(update={"rerun_stages": ("vad",), "rerun_id": "r3"})
    first = run_transcription(job, models, ProgressLog())
    assert first["stages_run"] == ["decode", "vad", "transcribe", "render", "publish"]
    again = run_transcription(job, models, ProgressLog())  # the slot died after finishing; attempt 2
    assert again["stages_run"] == ["publish"]
    other = run_transcription(job.model_copy(update={"rerun_id": "r4"}), models, ProgressLog())  # a new request
    assert other["stages_run"] == ["decode", "vad", "transcribe", "render", "publish"]
