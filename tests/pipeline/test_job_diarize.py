"""The diarize stage in a real job: labels in every format parsed back, its checkpoint, reruns, failures."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import srt
import webvtt

from helpers import DATA
from scribefleet.errors import DiarizationModelMissing
from scribefleet.options import TranscribeOptions
from scribefleet.pipeline.diarize import DiarizerConfig
from scribefleet.pipeline.job import run_transcription
from scribefleet.pipeline.models import ModelCache
from pipeline.conftest import ProgressLog

pytest.importorskip("resemblyzer", reason="the diarization extra is not installed: pip install -e '.[diarization]'")

TRUTH = [tuple(t) for t in json.loads((DATA / "dialogue.json").read_text())["turns"]]


def true_speaker(start: float, end: float) -> str:
    """Who the recording's truth says speaks most between start and end."""
    overlap = {name: 0.0 for _, _, name in TRUTH}
    for s, e, name in TRUTH:
        overlap[name] += max(0.0, min(e, end) - max(s, start))
    return max(overlap, key=lambda name: overlap[name])


@pytest.fixture
def dialogue_job(tmp_path: Path, make_job):
    """A diarized, word-timestamped job on the two-voice dialogue, with the known voices enrolled."""
    source = tmp_path / "in" / "dialogue.flac"
    source.parent.mkdir()
    shutil.copy(DATA / "dialogue.flac", source)
    options = TranscribeOptions(diarize=True, word_timestamps=True, speaker_names=DATA / "enroll")
    return make_job(source, name="dialogue", options=options).model_copy(update={"cpu_threads": 1})


@pytest.fixture
def diarized(dialogue_job, models):
    progress = ProgressLog()
    return dialogue_job, run_transcription(dialogue_job, models, progress), progress


def test_every_format_carries_the_speakers(diarized) -> None:
    job, result, progress = diarized
    assert result["speakers"] == ["Marcus", "Fiona"]
    assert progress.started_stages == ["decode", "vad", "transcribe", "diarize", "render", "publish"]
    diarize_fractions = [f for stage, f, _ in progress.calls if stage == "diarize"]
    assert diarize_fractions == sorted(diarize_fractions) and diarize_fractions[-1] == 1.0
    outputs = {fmt: Path(p) for fmt, p in result["outputs"].items()}

    transcript = json.loads(outputs["json"].read_text())
    segments = transcript["segments"]
    assert transcript["speakers"] == ["Marcus", "Fiona"]
    right = [seg["speaker"] == true_speaker(seg["start"], seg["end"]) for seg in segments]
    assert sum(right) >= 0.8 * len(segments), [(s["speaker"], s["text"]) for s in segments]
    words = [w for seg in segments for w in seg["words"]]
    assert all(w["speaker"] in ("Marcus", "Fiona") for w in words)
    right_words = [w["speaker"] == true_speaker(w["start"], w["end"]) for w in words]
    assert sum(right_words) >= 0.8 * len(words)

    cues = list(srt.parse(outputs["srt"].read_text()))
    assert [c.content.replace("\n", " ") for c in cues] == [f"[{s['speaker']}] {s['text'].strip()}" for s in segments]
    assert all(len(line) <= 42 for c in cues for line in c.content.splitlines() if " " in line)  # subtitle lines
    captions = list(webvtt.from_string(outputs["vtt"].read_text()))
    assert [c.voice for c in captions] == [s["speaker"] for s in segments]
    assert [c.text.replace("\n", " ") for c in captions] == [s["text"].strip() for s in segments]
    lines = outputs["txt"].read_text().splitlines()
    assert lines == [f"[{s['speaker']}] {s['text'].strip()}" for s in segments]
    rows = list(csv.DictReader(io.StringIO(outputs["tsv"].read_text()), delimiter="\t", quoting=csv.QUOTE_NONE))
    assert [r["speaker"] for r in rows] == [s["speaker"] for s in segments]
    assert [r["text"] for r in rows] == [s["text"].strip() for s in segments]

    work = job.work_dir
    assert json.loads((work / "diarize.json").read_text())["speakers"] == ["Marcus", "Fiona"]
    assert not (work / "audio.npy").exists()  # kept only until the speakers are known
    assert "speaker" not in json.loads((work / "transcript.json").read_text())["segments"][0]


def test_rediarize_without_transcribing_again(diarized, tmp_path: Path) -> None:
    job, first, _ = diarized
    transcript = job.work_dir / "transcript.json"
    before = transcript.read_bytes()
    events: list[tuple[str, str]] = []
    cold = ModelCache(1, on_change=lambda event, model_id: events.append((event, model_id)))
    # the same speakers, now without names: only diarize (which decodes again) and what follows run
    options = job.options.model_copy(update={"speaker_names": None})
    again = job.model_copy(update={"options": options, "rerun_stages": ("diarize",), "rerun_id": "r1"})
    progress = ProgressLog()
    result = run_transcription(again, cold, progress)
    assert result["rerun_stages"] == ["diarize", "render", "publish"]
    assert progress.started_stages == ["decode", "diarize", "render", "publish"]  # vad.json is kept
    assert events == []  # no speech model loaded
    assert transcript.read_bytes() == before
    assert result["speakers"] == ["SPEAKER_00", "SPEAKER_01"]
    assert Path(result["outputs"]["srt"]).read_text().count("[SPEAKER_0") == first["segments"]
    assert not (job.work_dir / "audio.npy").exists()


def test_a_failed_diarization_keeps_the_transcript_and_the_audio(dialogue_job, models) -> None:
    broken = dialogue_job.model_copy(update={"diarizer": DiarizerConfig(backend="pyannote")})
    with pytest.raises(DiarizationModelMissing, match="SCRIBEFLEET_HF_TOKEN"):
        run_transcription(broken, models, ProgressLog())
    work = dialogue_job.work_dir
    assert (work / "transcript.json").exists() and (work / "audio.npy").exists()
    assert not (work / "diarize.json").exists()
    # fixed (the offline backend): it resumes at diarize, with neither decoding nor transcribing again
    progress = ProgressLog()
    result = run_transcription(dialogue_job, ModelCache(1), progress)
    assert progress.started_stages == ["diarize", "render", "publish"]
    assert result["speakers"] == ["Marcus", "Fiona"]


def test_a_checkpoint_of_another_backend_is_redone(diarized, models) -> None:
    job, _, _ = diarized
    stored = json.loads((job.work_dir / "diarize.json").read_text())
    (job.work_dir / "diarize.json").write_text(json.dumps({**stored, "backend": "pyannote"}))
    progress = ProgressLog()
    run_transcription(job, models, progress)
    assert progress.started_stages == ["decode", "diarize", "render", "publish"]


def test_diarize_added_or_changed_later_never_transcribes_again(dialogue_job, models) -> None:
    """Speakers are not in the options key: a transcribed file is only diarized, and re-diarized on new counts."""
    plain = dialogue_job.model_copy(update={"options": TranscribeOptions(word_timestamps=True)})
    run_transcription(plain, models, ProgressLog())
    srt_path = plain.outputs["srt"]
    unlabelled = srt_path.read_text()
    assert "[SPEAKER" not in unlabelled and "[Marcus]" not in unlabelled
    transcript = plain.work_dir / "transcript.json"
    before = transcript.read_bytes()

    def run(**speaker_options) -> tuple[dict, ProgressLog]:
        options = TranscribeOptions(word_timestamps=True, diarize=True, **speaker_options)
        progress = ProgressLog()
        return run_transcription(plain.model_copy(update={"options": options}), models, progress), progress

    two, progress = run(speakers=2)
    assert progress.started_stages == ["decode", "diarize", "render", "publish"]  # vad.json is kept
    assert two["speakers"] == ["SPEAKER_00", "SPEAKER_01"]
    assert srt_path.read_text().count("[SPEAKER_0") == two["segments"]

    _, progress = run(speakers=2)  # asked again: nothing but publish
    assert progress.started_stages == ["publish"]

    one, progress = run(speakers=1)  # another count: diarized again, not transcribed again
    assert progress.started_stages == ["decode", "diarize", "render", "publish"]
    assert one["speakers"] == ["SPEAKER_00"]
    assert "[SPEAKER_01]" not in srt_path.read_text()
    assert transcript.read_bytes() == before

    progress = ProgressLog()  # without diarize again: the same work dir renders without speakers
    run_transcription(plain, models, progress)
    assert progress.started_stages == ["render", "publish"]
    assert srt_path.read_text() == unlabelled


def test_other_enrollment_clips_name_the_voices_again(dialogue_job, models, tmp_path: Path) -> None:
    """The names folder's clips are part of what diarize.json was made for: a clip added to a person (or
    removed) names the voices again, without transcribing again. Only the folder's path once was, so a
    person's new clip changed nothing until the work dir was deleted."""
    people = tmp_path / "people"
    shutil.copytree(DATA / "enroll", people)
    job = dialogue_job.model_copy(update={"options": dialogue_job.options.model_copy(update={"speaker_names": people})})
    assert run_transcription(job, models, ProgressLog())["speakers"] == ["Marcus", "Fiona"]
    same = ProgressLog()
    run_transcription(job, models, same)
    assert "diarize" not in same.started_stages  # the same clips: the names stand
    (people / "Marcus.flac").unlink()
    progress = ProgressLog()
    result = run_transcription(job, models, progress)
    assert "diarize" in progress.started_stages and "transcribe" not in progress.started_stages
    assert result["speakers"] == ["SPEAKER_00", "Fiona"]
    (people / "Marcus").mkdir()
    shutil.copy(DATA / "enroll" / "Marcus.flac", people / "Marcus" / "office.flac")
    assert run_transcription(job, models, ProgressLog())["speakers"] == ["Marcus", "Fiona"]
