"""jobs/views.py: one view of a task, written as the CLI's JSON and as the API's, and read back from the API's."""

from __future__ import annotations

from pathlib import Path

from scribefleet.jobs.views import TaskView, task_view
from scribefleet.store.store import Store


def test_one_view_two_spellings(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    batch_id = store.ensure_batch("k", "api", {}, None)
    spec = {"display": "talk.wav", "input_path": "/in/talk.wav", "outputs": {"srt": "/o/talk.srt"}, "options": {"model": "tiny.en"}}
    task = store.task(store.add_task(batch_id, "x/talk.wav", "transcribe", spec))
    view = task_view(task)
    cli = view.as_json(state_dir=str(tmp_path))
    assert cli["id"] == cli["job_id"] == task.id and cli["state"] == cli["status"] == "queued"
    assert (cli["name"], cli["input"], cli["state_dir"], cli["outputs"]) == ("talk.wav", "/in/talk.wav", str(tmp_path), {})
    api = view.as_api_json()
    assert (api["id"], api["batchId"], api["filename"], api["status"], api["worker"]) == (task.id, batch_id, "talk.wav", "queued", None)
    assert api["progress"] == {"stage": None, "percent": 0.0, "stagePercent": 0.0, "elapsedS": None, "etaS": None}
    assert api["options"] == {"model": "tiny.en"}
    back = TaskView.from_api({**api, "status": "complete", "outputs": {"srt": f"/api/jobs/{task.id}/outputs/srt"}}, "http://c")
    assert (back.id, back.name, back.batch_id, back.is_terminal) == (task.id, "talk.wav", batch_id, True)
    assert back.outputs == {"srt": f"http://c/api/jobs/{task.id}/outputs/srt"}


def test_stage_history_from_the_store_events_of_two_attempts(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    batch_id = store.ensure_batch("k", "transcribe", {}, None)
    task_id = store.add_task(batch_id, "talk.wav", "transcribe", {"display": "talk.wav"}, max_attempts=3)
    store.mark_running(task_id, "cpu0")
    for stage in ("decode", "vad", "transcribe"):
        store.record_progress(task_id, stage, 0.0)
    store.requeue(task_id, "SLOT_CRASHED", "the slot died")  # attempt 1 ends inside transcribe
    store.mark_running(task_id, "cpu0")
    for stage in ("decode", "vad", "transcribe"):  # checkpoints: decode and vad are reported done at once
        store.record_progress(task_id, stage, 1.0 if stage != "transcribe" else 0.0)
    running = {s["stage"]: (s["state"], s["attempts"]) for s in task_view(store.task(task_id), store.events(task_id=task_id)).stages}
    assert running == {"fetch": ("unused", 0), "decode": ("done", 2), "vad": ("done", 2), "transcribe": ("running", 2),
                       "diarize": ("unused", 0), "render": ("pending", 0), "publish": ("pending", 0)}
    store.record_progress(task_id, "render", 0.0)
    store.record_progress(task_id, "publish", 0.0)
    store.complete(task_id, {"stages_run": ["transcribe", "render", "publish"], "timings_s": {"transcribe": 2.5}})
    view = task_view(store.task(task_id), store.events(task_id=task_id))
    done = {s["stage"]: (s["state"], s["attempts"], s["time_s"]) for s in view.stages}
    assert done["decode"] == ("skipped", 2, 0.0) and done["transcribe"] == ("done", 2, 2.5)
    assert view.as_json()["stages"] == list(view.stages) and view.as_api_json()["stages"][3]["timeS"] == 2.5
    assert "stages" not in task_view(store.task(task_id)).as_json()  # lists leave them out


def test_a_url_jobs_percent_moves_while_it_downloads_and_never_goes_back(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    batch_id = store.ensure_batch("k", "api", {}, None)
    url_task = store.add_task(batch_id, "u", "transcribe", {"display": "a", "url": "http://h/a.wav", "outputs": {}})
    file_task = store.add_task(batch_id, "f", "transcribe", {"display": "b", "input_path": "/b.wav", "outputs": {}})
    store.mark_running(url_task, "cpu0")
    seen = []
    for stage, fraction in (("fetch", 0.0), ("fetch", 0.5), ("fetch", 1.0), ("decode", 0.0), ("transcribe", 0.5),
                            ("publish", 1.0)):
        store.record_progress(url_task, stage, fraction)
        seen.append(task_view(store.task(url_task)).percent)
    assert seen[1] > seen[0] == 0.0 and seen == sorted(seen) and seen[-1] == 100.0
    store.mark_running(file_task, "cpu1")
    store.record_progress(file_task, "transcribe", 0.5)
    assert task_view(store.task(file_task)).percent == 52.5  # a file's stages keep their spans


def test_elapsed_and_eta_of_a_file_and_its_batch_from_audio_done(tmp_path: Path) -> None:
    """One computation: a running file's ETA is its audio left over its rate; the batch's sums its files'."""
    from scribefleet.jobs.views import batch_progress

    store = Store.open(tmp_path)
    batch_id = store.ensure_batch("k", "transcribe", {}, None)
    ids = [store.add_task(batch_id, f"f{i}.wav", "transcribe", {"display": f"f{i}.wav"}) for i in range(3)]
    started = store.mark_running(ids[0], "cpu0").started_at
    store.record_progress(ids[0], "decode", 0.0)
    view = task_view(store.task(ids[0]), now=started + 5)
    assert (view.elapsed_s, view.eta_s) == (5, None)  # nothing of the audio done yet: no ETA
    store.record_progress(ids[0], "transcribe", 0.25, audio_s=600.0)
    view = task_view(store.task(ids[0]), now=started + 30)
    # 150 s of audio in 30 s: 5 audio-s/s; 450 s left -> 90 s
    assert view.duration_s == 600.0 and view.eta_s == 90.0
    assert view.as_json()["eta_s"] == 90 and view.as_api_json()["progress"]["elapsedS"] == 30
    assert TaskView.from_api(view.as_api_json()).eta_s == 90.0
    views = [task_view(store.task(i), now=started + 30) for i in ids]
    batch = batch_progress(views, now=started + 30)
    # the two files not decoded yet count as the mean known length (600 s): 150 of 1800 s done in 30 s
    assert (batch.files, batch.files_done, batch.audio_s, batch.audio_done_s) == (3, 0, 1800.0, 150.0)
    assert batch.elapsed_s == 30 and batch.eta_s == 330.0
    store.fail(ids[2], "MEDIA_UNREADABLE", "not audio")  # out of the sums
    store.record_progress(ids[0], "render", 0.0)
    batch = batch_progress([task_view(store.task(i), now=started + 60) for i in ids], now=started + 60)
    assert (batch.files, batch.audio_s, batch.audio_done_s, batch.eta_s) == (2, 1200.0, 600.0, 60.0)
    assert batch.as_api_json()["etaS"] == 60
    store.complete(ids[0], {"duration_s": 600.0})
    done = task_view(store.task(ids[0]), now=started + 999)
    assert done.eta_s == 0.0 and done.elapsed_s is not None and done.elapsed_s < 999  # stops at its end


def test_eta_helpers() -> None:
    from scribefleet.jobs.eta import audio_fraction, clock, eta_s

    assert audio_fraction("transcribe", "vad", 1.0) == 0.0 and audio_fraction("transcribe", "transcribe", 0.4) == 0.4
    assert audio_fraction("transcribe", "publish", 0.0) == 1.0 and audio_fraction("transcribe", "diarize", 0.5) is None
    assert audio_fraction("shell", "run", 0.5) == 0.5
    assert eta_s(10.0, 0.5) == 10.0 and eta_s(10.0, 0.0) is None and eta_s(10.0, 1.0) == 0.0
    assert [clock(s) for s in (None, 42, 185, 3725)] == ["?", "42s", "3m05s", "1h02m"]


def test_no_eta_until_there_is_evidence_of_a_rate(tmp_path: Path) -> None:
    """An 11-minute file 10 s in, its first batch of clips still decoding, once showed "ETA 1h55m": an
    extrapolation from ~0 is noise, so no ETA (None, shown "?") until 30 s of audio or a file is done."""
    from scribefleet.jobs.eta import MIN_EVIDENCE_AUDIO_S, eta_s, has_evidence
    from scribefleet.jobs.views import batch_progress

    store = Store.open(tmp_path)
    batch_id = store.ensure_batch("k", "transcribe", {}, None)
    long_id = store.add_task(batch_id, "long.wav", "transcribe", {"display": "long.wav"})
    started = store.mark_running(long_id, "cpu0").started_at
    store.record_progress(long_id, "transcribe", 1.0 / 660, audio_s=660.0)  # 1 s of 11 minutes
    view = task_view(store.task(long_id), now=started + 10)
    assert view.elapsed_s == 10 and view.eta_s is None
    assert view.as_api_json()["progress"]["etaS"] is None and view.as_json()["eta_s"] is None
    batch = batch_progress([view], now=started + 10)
    assert batch.audio_done_s == 1.0 and batch.eta_s is None and batch.as_api_json()["etaS"] is None
    store.record_progress(long_id, "transcribe", MIN_EVIDENCE_AUDIO_S / 660, audio_s=660.0)  # one Whisper input
    view = task_view(store.task(long_id), now=started + 60)
    assert view.eta_s == 1260.0  # 30 s of audio in 60 s: 630 s left at 0.5 audio-s/s
    assert batch_progress([view], now=started + 60).eta_s == 1260.0
    # a batch: a finished file is evidence even with less audio than that done
    short_id = store.add_task(batch_id, "short.wav", "transcribe", {"display": "short.wav"})
    store.mark_running(short_id, "cpu1")
    store.complete(short_id, {"duration_s": 5.0})
    store.record_progress(long_id, "transcribe", 0.0, audio_s=660.0)  # (a retried attempt back at 0)
    views = [task_view(store.task(i), now=started + 20) for i in (long_id, short_id)]
    assert views[0].eta_s is None and batch_progress(views, now=started + 20).eta_s is not None
    # where the length is unknown (another kind, files counted): 5 % of the work
    assert not has_evidence(0.04) and has_evidence(0.05) and eta_s(10.0, 0.04) is None and eta_s(10.0, 0.05) == 190.0
    assert not has_evidence(0.01, 600.0) and has_evidence(0.05, 600.0) and has_evidence(0.01, files_done=1)
