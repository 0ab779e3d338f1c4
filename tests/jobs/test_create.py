"""jobs/create.py: a transcribe batch and a submitted file, in a real store."""

from __future__ import annotations

import shutil
from pathlib import Path

from scribefleet.config import Settings
from scribefleet.jobs.create import create_batch, submit_file
from scribefleet.jobs.inputs import check_inputs
from scribefleet.options import TranscribeOptions
from scribefleet.pipeline.models import resolve_model
from scribefleet.store.models import TaskKind, TaskState
from scribefleet.store.store import Store


def test_same_content_under_two_names_shares_one_work_dir_and_a_rerun_finds_the_batch(
    tmp_path: Path, speech: dict[str, Path], settings: Settings
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    shutil.copy(speech["en01.wav"], inbox / "a.wav")
    shutil.copy(speech["en01.wav"], inbox / "copy.wav")
    shutil.copy(speech["en02.wav"], inbox / "b.wav")
    out = tmp_path / "out"
    options = TranscribeOptions(formats="txt,srt", device="cpu")
    resolved = resolve_model(options.model, settings)
    files = check_inputs([str(inbox)], out_dir=out)
    with Store.open(out / ".scribefleet") as store:
        batch_id = create_batch(store, files, options, resolved, settings, out)
        tasks = {Path(t.key).name: t for t in store.tasks(batch_id=batch_id)}
        assert set(tasks) == {"a.wav", "copy.wav", "b.wav"}
        assert all(t.kind == TaskKind.TRANSCRIBE.value and t.state is TaskState.QUEUED for t in tasks.values())
        assert tasks["a.wav"].spec["work_dir"] == tasks["copy.wav"].spec["work_dir"] != tasks["b.wav"].spec["work_dir"]
        assert tasks["a.wav"].spec["outputs"] == {"txt": str(out / "a.txt"), "srt": str(out / "a.srt")}
        assert tasks["b.wav"].spec["model_path"] == str(resolved.path) and tasks["b.wav"].resources == "any"
        assert create_batch(store, files, options, resolved, settings, out) == batch_id
        assert len(store.tasks(batch_id=batch_id)) == 3


def test_submit_file_adds_a_one_task_batch_each_time(tmp_path: Path, speech: dict[str, Path], settings: Settings) -> None:
    options = TranscribeOptions(formats="json")
    (first,) = submit_file(speech["en03.wav"], tmp_path / "out", options, settings)
    (second,) = submit_file(speech["en03.wav"], tmp_path / "out", options, settings)
    assert first.batch_id != second.batch_id and first.state is TaskState.QUEUED
    assert first.spec["work_dir"] == second.spec["work_dir"]  # the same content is transcribed once
    assert first.spec["outputs"] == {"json": str((tmp_path / "out" / "en03.json").resolve())}


def test_diarize_shares_the_work_dir_and_gets_its_stage_limit_on_top(
    tmp_path: Path, speech: dict[str, Path], settings: Settings
) -> None:
    files = check_inputs([str(speech["en01.wav"])], out_dir=tmp_path / "out")
    plain = TranscribeOptions(formats="txt", device="cpu")
    diarized = TranscribeOptions(formats="txt", device="cpu", diarize=True, speakers=2)
    resolved = resolve_model(plain.model, settings)
    with Store.open(tmp_path / "out" / ".scribefleet") as store:
        (a,) = store.tasks(batch_id=create_batch(store, files, plain, resolved, settings, tmp_path / "out"))
        (b,) = store.tasks(batch_id=create_batch(store, files, diarized, resolved, settings, tmp_path / "out"))
    # one transcript for both (speakers are the diarize stage's business), never run at once (same content key)
    assert a.spec["work_dir"] == b.spec["work_dir"] and a.content_key == b.content_key
    assert a.timeout_s == settings.transcribe_timeout_s
    assert b.timeout_s == settings.transcribe_timeout_s + settings.diarize_timeout_s
