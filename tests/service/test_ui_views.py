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
    assert transcript.segments == [views.Segment("00:00:00.000", "00:00:01.520", "Hello there.", 0.0, 1.52)]
    assert transcript.speakers == []


def test_speakers_get_colours_in_order_of_appearance_and_cues_come_sorted() -> None:
    data = {"segments": [
        {"start": 4.0, "end": 5.0, "text": "c", "speaker": "Fiona"},
        {"start": 0.0, "end": 1.0, "text": "a", "speaker": "Marcus"},
        {"start": 2.0, "end": 3.0, "text": "b", "speaker": "Fiona"},
        {"start": 6.0, "end": 7.0, "text": "d"},
    ]}  # fmt: skip
    transcript = views.transcript_from_json(data)
    assert transcript.speakers == ["Marcus", "Fiona"]
    assert [s.text for s in transcript.segments] == ["a", "b", "c", "d"]
    assert [(s.speaker, s.colour) for s in transcript.segments] == [("Marcus", 0), ("Fiona", 1), ("Fiona", 1), (None, 0)]
    many = views.transcript_from_json({"segments": [{"start": i, "end": i + 1, "text": "x", "speaker": f"S{i}"}
                                                    for i in range(views.SPEAKER_COLOURS + 1)]})
    assert [s.colour for s in many.segments][-2:] == [views.SPEAKER_COLOURS - 1, 0]


def test_the_player_plays_what_the_media_route_serves() -> None:
    job = {"id": "a/b", "filename": "talk.MP4"}
    assert views.media_view(job, 206, "") == views.Media(url="/api/jobs/a%2Fb/media", element="video")
    assert views.media_view({**job, "filename": "talk.flac"}, 200, "").element == "audio"
    gone = views.media_view(job, 404, "job x was made from a URL")
    assert gone.url is None and gone.note == "job x was made from a URL"


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
        page="home", csrf_token=None, jobs=views.jobs_page({"items": [{**JOB, "status": "failed"}], "total": 1},
                                                           {"failed": 1}, "", 0, 20),
        formats=["srt"], default_model="tiny.en", models=[HOSTILE],
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
    home = {mode: ui.TEMPLATES.get_template("home.html").render(page="home", csrf_token=None, jobs=views.jobs_page({}, {}, "", 0, 20), formats=["srt"],
                                                                default_model="tiny.en", models=[], remote_mode=mode)
            for mode in ("off", "optional", "required")}  # fmt: skip
    assert 'name="remote"' in home["optional"] and 'name="remote"' not in home["off"] + home["required"]
    assert "Every job runs on the remote GPU worker" in home["required"]


def test_the_job_list_pages_and_filters() -> None:
    rows = [{**JOB, "id": f"job{i:02d}"} for i in range(20)]
    counts = {"queued": 3, "running": 1, "complete": 40, "failed": 4, "canceled": 0, "skipped": 0, "queued_remote": 0}
    page = views.jobs_page({"items": rows, "total": 48}, counts, "", 20, 20)
    assert (page.first, page.last, page.total, page.is_live) == (21, 40, 48, False)
    assert (page.newer_url, page.older_url) == ("/ui/", "/ui/?offset=40")
    shown = [(f.status, f.count, f.current) for f in page.filters]
    assert shown == [("", 48, True), ("queued", 3, False), ("running", 1, False), ("complete", 40, False),
                     ("failed", 4, False), ("canceled", 0, False)]  # fmt: skip
    failed = views.jobs_page({"items": rows[:4], "total": 4}, counts, "failed", 0, 20)
    assert (failed.newer_url, failed.older_url, failed.is_live) == (None, None, False)
    assert [f.url for f in failed.filters if f.current] == ["/ui/?status=failed"]
    assert views.jobs_page({"items": rows, "total": 48}, counts, "complete", 20, 20).older_url == "/ui/?status=complete&offset=40"
    assert views.jobs_page({"items": rows, "total": 48}, counts, "", 0, 20).is_live
    # what a hand-made URL may say is read safely
    assert [views.page_offset(v, 20) for v in ("", "45", "-3", "x", "9" * 40)] == [0, 40, 0, 0, 10**9 // 20 * 20]
    assert [views.chosen_status(v) for v in ("failed", "nope", "failed,complete", None)] == ["failed", "", "", ""]
