"""The UI's view functions and templates, without a browser: API answers in, what pages draw out."""

from __future__ import annotations

from scribefleet.service import ui, ui_views as views

HOSTILE = "<img src=x onerror=alert(1)>&amp;'\".wav"

JOB = {
    "id": "a1b2c3d4e5f6", "batchId": "0f1e2d3c4b5a", "status": "complete", "executionMode": "local",
    "filename": HOSTILE, "progress": {"stage": "publish", "percent": 99.6, "stagePercent": 100.0},
    "worker": {"slot": "cpu0", "gpu": False, "lastSeenAt": "2026-11-23T13:37:29.123Z"},
    "lastErrorCode": None, "lastErrorMessage": None,
    "outputs": {"txt": "/api/jobs/a1b2c3d4e5f6/outputs/txt", "srt": "/api/jobs/a1b2c3d4e5f6/outputs/srt"},
}  # fmt: skip


def test_job_view_reads_the_api_shape() -> None:
    view = views.job_view(JOB)
    assert (view.id, view.name, view.status, view.stage, view.percent) == ("a1b2c3d4e5f6", HOSTILE, "complete", "publish", 100)
    assert view.outputs == [("srt", JOB["outputs"]["srt"]), ("txt", JOB["outputs"]["txt"])]  # in FORMATS order
    assert (view.batch_id, view.execution_mode, view.slot, view.is_terminal) == ("0f1e2d3c4b5a", "local", "cpu0", True)
    queued = views.job_view({"id": "x", "status": "queued", "progress": {"stage": None, "percent": 12.4}, "worker": None})
    assert (queued.name, queued.percent, queued.slot, queued.is_terminal) == ("x", 12, None, False)


def test_clock_and_transcript_segments() -> None:
    assert views.clock(3723.4567) == "01:02:03.457"
    assert views.clock(None) == "--:--:--"
    transcript = views.transcript_from_json(
        {"text": " Hello there.", "language": "en", "segments": [{"start": 0.0, "end": 1.52, "text": " Hello there."}]}
    )
    assert transcript.language == "en" and transcript.text == "Hello there."
    assert transcript.segments == [views.Segment("00:00:00.000", "00:00:01.520", "Hello there.")]


def test_runtime_view_of_the_documented_answer() -> None:
    runtime = {
        "slots": [{"name": "cpu0", "device": "cpu", "gpuIndex": None, "status": "busy", "busy": True,
                   "task": "a1b2c3d4e5f6", "models": ["tiny.en"], "tasksDone": 3, "error": None},
                  {"name": "cuda1", "device": "cuda", "status": "failed", "busy": False, "task": None, "models": [],
                   "error": {"code": "CUDA_UNAVAILABLE", "message": "libcublas.so.12 is missing"}}],
        "devices": {"gpus": [{"index": 0, "name": "NVIDIA H100", "memory_mb": 81559}], "cpu_cores": 16,
                    "problems": ["no cuDNN"]},
        "capacity": {"slots": 1, "busy": 1, "free": 0},
        "queue": {"queued": 4, "running": 1, "byKind": {"transcribe": 4}},
        "recentErrors": [{"jobId": "j1", "filename": "bad.mp3", "code": "MEDIA_UNREADABLE", "message": "no audio", "at": "t"}],
    }  # fmt: skip
    view = views.runtime_view(runtime)
    busy, failed = view.slots
    assert (busy.name, busy.device, busy.busy, busy.state, busy.task, busy.models, busy.done) == (
        "cpu0", "cpu", True, "busy", "a1b2c3d4e5f6", ["tiny.en"], "3"
    )
    assert (failed.state, failed.busy, failed.error) == ("failed", False, "CUDA_UNAVAILABLE libcublas.so.12 is missing")
    assert view.capacity_line == "slots: 1, busy: 1, free: 0"
    assert view.queue == [("queued", "4"), ("running", "1"), ("byKind.transcribe", "4")]
    assert view.devices.facts == [("cpu_cores", "16")] and view.devices.problems == ["no cuDNN"]
    (title, gpus), = view.devices.tables
    assert title == "gpus" and gpus.columns == ["index", "name", "memory_mb"] and gpus.rows == [["0", "NVIDIA H100", "81559"]]
    assert view.errors == [views.ErrorView("t", "MEDIA_UNREADABLE", "no audio", "j1", "bad.mp3")]


def test_templates_escape_user_text() -> None:
    job = views.job_view({**JOB, "status": "failed", "lastErrorCode": "MEDIA_UNREADABLE", "lastErrorMessage": HOSTILE})
    transcript = views.Transcript(segments=[views.Segment("00:00:00.000", "00:00:01.000", HOSTILE)])
    html = ui.TEMPLATES.get_template("job.html").render(page="job", csrf_token="t'\"<", job=job, transcript=transcript)
    assert "<img" not in html
    assert html.count("&lt;img src=x onerror=alert(1)&gt;&amp;amp;&#39;&#34;.wav") >= 3  # title, heading, error, segment
    assert 'content="t&#39;&#34;&lt;"' in html
    rows = ui.TEMPLATES.get_template("home.html").render(
        page="home", csrf_token=None, recent=[job], formats=["srt"], default_model="tiny.en", models=[HOSTILE]
    )
    assert "<img" not in rows and 'href="/ui/jobs/a1b2c3d4e5f6"' in rows


def test_remote_workers_on_the_runtime_page_and_the_remote_toggle() -> None:
    runtime = {"slots": [], "remoteWorker": {"mode": "optional", "connected": False, "workers": [
        {"url": "http://gpu:8477", "connected": False, "models": ["large-v3"], "lastSeenAt": None,
         "workerCapabilities": {"activeJobs": 1, "maxConcurrentJobs": 2, "gpu": True, "gpuName": HOSTILE},
         "lastError": {"code": "REMOTE_WORKER_UNREACHABLE", "message": "no answer"}}]}}  # fmt: skip
    rt = views.runtime_view(runtime)
    assert rt.remote is not None and rt.remote.rows[0][:3] == ["http://gpu:8477", "no", "1 of 2"]
    html = ui.TEMPLATES.get_template("_runtime.html").render(rt=rt)
    assert "Remote workers" in html and "REMOTE_WORKER_UNREACHABLE no answer" in html and "<img" not in html
    assert "Remote workers" not in ui.TEMPLATES.get_template("_runtime.html").render(rt=views.runtime_view({"slots": []}))
    home = {mode: ui.TEMPLATES.get_template("home.html").render(page="home", csrf_token=None, recent=[], formats=["srt"],
                                                                default_model="tiny.en", models=[], remote_mode=mode)
            for mode in ("off", "optional", "required")}  # fmt: skip
    assert 'name="remote"' in home["optional"] and 'name="remote"' not in home["off"] + home["required"]
    assert "Every job runs on the remote GPU worker" in home["required"]
