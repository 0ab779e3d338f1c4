"""jobs/create.py: a transcribe batch and a submitted file, in a real store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import DATA
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


def test_each_file_gets_its_headers_audio_length_before_any_slot_decodes_it(
    tmp_path: Path, speech: dict[str, Path], settings: Settings
) -> None:
    """The dispatcher plans with it (a long file is spread, not grouped): read when the task is made, kept in
    the hash cache, and replaced by the length a slot measures."""
    import json

    inbox = tmp_path / "in"
    inbox.mkdir()
    shutil.copy(speech["en01.wav"], inbox / "a.wav")
    shutil.copy(DATA / "dialogue.flac", inbox / "b.flac")
    (inbox / "c.mp3").write_bytes(b"not audio")
    out = tmp_path / "out"
    options = TranscribeOptions(formats="txt", device="cpu")
    resolved = resolve_model(options.model, settings)
    files = check_inputs([str(inbox)], out_dir=out)
    with Store.open(out / ".scribefleet") as store:
        batch_id = create_batch(store, files, options, resolved, settings, out)
        lengths = {Path(t.key).name: t.audio_s for t in store.tasks(batch_id=batch_id)}
        assert lengths["a.wav"] == pytest.approx(3.44, abs=0.01) and lengths["b.flac"] == pytest.approx(38.39, abs=0.01)
        assert lengths["c.mp3"] is None  # the header says nothing: the decode stage reports why
        cache = json.loads((out / ".scribefleet" / "content-hashes.json").read_text())
        assert cache[str(inbox / "a.wav")][3] == lengths["a.wav"]
        # a cache entry written before lengths were kept (three fields) gets its length on the next run
        cache[str(inbox / "a.wav")] = cache[str(inbox / "a.wav")][:3]
        (out / ".scribefleet" / "content-hashes.json").write_text(json.dumps(cache))
        (a,) = [t for t in store.tasks(batch_id=batch_id) if t.key.endswith("a.wav")]
        store.mark_running(a.id, "cpu0")
        store.record_progress(a.id, "transcribe", 0.5, audio_s=3.5)  # what a slot measured wins
        create_batch(store, files, options, resolved, settings, out)
        assert store.task(a.id).audio_s == 3.5
        assert len(json.loads((out / ".scribefleet" / "content-hashes.json").read_text())[str(inbox / "a.wav")]) == 4


def test_a_task_made_from_an_upload_reads_its_length_too(tmp_path: Path, speech: dict[str, Path], settings: Settings) -> None:
    """The API's uploads and the remote worker's jobs come through add_transcribe_task without a length."""
    from scribefleet.jobs.create import add_transcribe_task

    options = TranscribeOptions(formats="txt")
    with Store.open(tmp_path / "state") as store:
        batch_id = store.ensure_batch("api", "api", {}, None)
        task_id, _ = add_transcribe_task(
            store, batch_id, "up/en02.wav", input_path=speech["en02.wav"], display="en02.wav", digest="d" * 64,
            outputs={"txt": tmp_path / "en02.txt"}, options=options, resolved=resolve_model(options.model, settings),
            settings=settings,
        )  # fmt: skip
        assert store.task(task_id).audio_s == pytest.approx(4.25, abs=0.01)
