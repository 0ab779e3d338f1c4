"""Resume: a re-run starts after the last finished stage, and a long file after its last finished window.

Interruptions are real: the progress callback raises, as a dying slot would
stop mid-stage, and the next run_transcription on the same work dir carries on.
"""

from __future__ import annotations

import shutil
import wave
from pathlib import Path
from typing import Any

import pytest

from helpers import DATA, TEXTS, wer
from scribefleet.options import FORMATS, TranscribeOptions
from scribefleet.pipeline.checkpoint import WindowLog
from scribefleet.pipeline.job import TranscriptionJob, run_transcription
from scribefleet.pipeline.models import ModelCache
from pipeline.conftest import ProgressLog


class Interrupted(Exception):
    """Stands for the slot dying at this point."""


class InterruptingProgress(ProgressLog):
    """Records progress like ProgressLog, and raises Interrupted at the first call matching `when`."""

    def __init__(self, when: Any) -> None:
        super().__init__()
        self.when = when

    def __call__(self, stage: str, fraction: float, extra: dict[str, Any]) -> None:
        super().__call__(stage, fraction, extra)
        if self.when(stage, fraction, extra):
            raise Interrupted(f"interrupted at {stage} {fraction:.2f}")


def outputs_of(result: dict[str, Any]) -> dict[str, bytes]:
    return {fmt: Path(path).read_bytes() for fmt, path in result["outputs"].items()}


def test_rerun_needs_neither_input_nor_model(tmp_path, make_job, models, progress) -> None:
    source = tmp_path / "in" / "fox.wav"
    source.parent.mkdir()
    shutil.copy(DATA / "en01.wav", source)
    job = make_job(source)
    first = run_transcription(job, models, progress)
    expected = outputs_of(first)
    source.unlink()
    for path in job.outputs.values():
        path.unlink()

    events: list[tuple[str, str]] = []
    cold = ModelCache(1, on_change=lambda event, model_id: events.append((event, model_id)))
    again = ProgressLog()
    second = run_transcription(job, cold, again)
    assert second["resumed_from"] == "publish"
    assert outputs_of(second) == expected
    assert events == [] and cold.loaded == []  # the transcript was reused: no model needed
    assert again.started_stages == ["publish"]
    assert second["duration_s"] == first["duration_s"] and second["segments"] == first["segments"]

    shutil.rmtree(job.work_dir / "render")
    third = run_transcription(job, cold, ProgressLog())
    assert third["resumed_from"] == "render" and outputs_of(third) == expected


def test_a_new_transcript_is_rendered_anew(tmp_path, make_job, models, progress) -> None:
    job = make_job(DATA / "en04.wav", formats=("txt",))
    expected = outputs_of(run_transcription(job, models, progress))
    (job.work_dir / "transcript.json").unlink()
    (job.work_dir / "render" / "transcript.txt").write_text("rendered from an older transcript\n")
    result = run_transcription(job, models, ProgressLog())
    assert outputs_of(result) == expected
    assert result["resumed_from"] is None


def test_interrupted_after_decode_resumes_at_vad(tmp_path, make_job, models) -> None:
    source = tmp_path / "in" / "report.wav"
    source.parent.mkdir()
    shutil.copy(DATA / "en02.wav", source)
    job = make_job(source, formats=("txt",))
    with pytest.raises(Interrupted):
        run_transcription(job, models, InterruptingProgress(lambda stage, f, extra: stage == "vad"))
    assert (job.work_dir / "audio.npy").exists() and not (job.work_dir / "vad.json").exists()
    source.unlink()  # the decoded audio is checkpointed: the input is not read again
    progress = ProgressLog()
    result = run_transcription(job, models, progress)
    assert result["resumed_from"] == "vad"
    assert progress.started_stages == ["vad", "transcribe", "render", "publish"]
    assert wer(TEXTS["en02.wav"], job.outputs["txt"].read_text()) <= 0.3
    assert not (job.work_dir / "audio.npy").exists()


@pytest.fixture(scope="module")
def uninterrupted(long_recording, tmp_path_factory, models, model_path) -> tuple[dict[str, Any], ProgressLog]:
    """The long recording transcribed in 30 s windows in one go: the reference for resumed runs."""
    path, _ = long_recording
    root = tmp_path_factory.mktemp("uninterrupted")
    job = TranscriptionJob(
        input_path=path,
        work_dir=root / "work",
        outputs={f: root / "out" / f"long.{f}" for f in FORMATS},
        options=TranscribeOptions(),
        model_path=model_path,
        model_id="tiny.en",
        cpu_threads=2,
        window_s=30,
    )
    progress = ProgressLog()
    return run_transcription(job, models, progress), progress


@pytest.mark.slow
def test_long_recording_is_transcribed_in_windows(uninterrupted, long_recording) -> None:
    result, progress = uninterrupted
    path, said = long_recording
    assert progress.windows == {0, 1, 2}  # ~78 s in windows of ~30 s
    with wave.open(str(path)) as wav:
        assert result["duration_s"] == pytest.approx(wav.getnframes() / 16000, abs=0.001)
    text = Path(result["outputs"]["txt"]).read_text(encoding="utf-8")
    assert wer(said, text) <= 0.25, text


@pytest.mark.slow
def test_interrupted_run_resumes_after_its_last_window(tmp_path, make_job, models, long_recording, uninterrupted) -> None:
    path, _ = long_recording
    job = make_job(path, name="long", window_s=30)
    # the slot "dies" as soon as the second window reports progress: the first is in the log by then
    first = InterruptingProgress(lambda stage, f, extra: extra.get("window") == 1)
    with pytest.raises(Interrupted):
        run_transcription(job, models, first)
    log = WindowLog(job.work_dir / "windows.jsonl")
    assert [r["index"] for r in log.read()] == [0]
    assert not (job.work_dir / "transcript.json").exists()
    assert not any(p.exists() for p in job.outputs.values())
    with log.path.open("ab") as fh:
        fh.write(b'{"index": 1, "start_s": 2')  # and it died in the middle of appending, too

    resumed = ProgressLog()
    result = run_transcription(job, models, resumed)
    assert result["resumed_from"] == "transcribe"
    assert resumed.windows == {1, 2}  # window 0 was not transcribed again
    assert resumed.started_stages == ["transcribe", "render", "publish"]
    assert [r["index"] for r in log.read()] == [0, 1, 2]
    reference, _ = uninterrupted
    assert outputs_of(result) == outputs_of(reference)


@pytest.mark.slow
def test_window_log_of_another_plan_is_discarded(tmp_path, make_job, models, long_recording, uninterrupted) -> None:
    path, _ = long_recording
    job = make_job(path, name="replanned", window_s=30, formats=("txt",))
    log = WindowLog(job.work_dir / "windows.jsonl")
    # a window from a run with another window size: its bounds do not match this plan
    log.append({"index": 0, "start_s": 0.0, "end_s": 41.0, "language": "en", "segments": []})
    progress = ProgressLog()
    result = run_transcription(job, models, progress)
    assert progress.windows == {0, 1, 2}
    reference, _ = uninterrupted
    assert job.outputs["txt"].read_bytes() == Path(reference["outputs"]["txt"]).read_bytes()
    assert result["segments"] == reference["segments"]
