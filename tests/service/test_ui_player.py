"""The job page plays its media with the transcript following: real controller, real Chromium, real diarized job.

A two-voice recording is transcribed and diarized by the controller's own slot
(tiny.en, the offline speaker backend); the browser plays it, seeks it, clicks
cues, searches, and reads the speakers' colours. A 5,000-cue transcript (the
same job's JSON output rewritten on the controller's disk) must load and
follow a seek too.
"""

from __future__ import annotations

import bisect
import json
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import DATA
from service.browser import PAGE_WAIT_S, RunningController, browser, controller, playwright_driver  # noqa: F401  (fixtures)
from service.test_ui_browser import log_in

pytestmark = pytest.mark.slow
pytest.importorskip("resemblyzer", reason="the diarization extra is not installed: pip install -e '.[diarization]'")

WAIT_MS = PAGE_WAIT_S * 1000
CURRENT = "() => [...document.querySelectorAll('#cues > li.cue')].findIndex((c) => c.classList.contains('current'))"


def finished_job(server: RunningController, source: Path, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Upload `source` as `name`, create a job with `options`, wait until it completes."""
    with server.api() as api:
        with source.open("rb") as fh:
            up = api.post("/api/uploads", files={"file": (name, fh, "audio/flac")}).json()
        job = api.post("/api/jobs", json={"uploadId": up["uploadId"], "options": options}).json()
        deadline = time.monotonic() + PAGE_WAIT_S
        while job["status"] not in ("complete", "failed", "canceled", "skipped"):
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
            job = api.get(f"/api/jobs/{job['id']}").json()
        assert job["status"] == "complete", job
        job["transcript"] = api.get(job["outputs"]["json"]).json()
    return job


@pytest.fixture(scope="module")
def dialogue(controller: RunningController) -> dict[str, Any]:
    options = {"diarize": True, "speakers": 2, "formats": ["json", "srt"]}
    return finished_job(controller, DATA / "dialogue.flac", "dialogue.flac", options)


def open_job(browser: Any, server: RunningController, job_id: str) -> tuple[Any, list[str]]:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    log_in(page, server, f"/ui/jobs/{job_id}")
    page.wait_for_function("document.getElementById('media').readyState >= 1", timeout=WAIT_MS)  # metadata loaded
    return page, errors


def seek(page: Any, seconds: float) -> None:
    page.evaluate("(t) => { const m = document.getElementById('media'); m.pause(); m.currentTime = t; }", seconds)


def test_the_transcript_follows_playback_seeks_on_click_and_searches(
    controller: RunningController, browser: Any, dialogue: dict[str, Any]
) -> None:
    segments = dialogue["transcript"]["segments"]
    starts = [s["start"] for s in segments]
    assert len(segments) >= 4
    page, errors = open_job(browser, controller, dialogue["id"])
    cues = page.locator("#cues > li.cue")
    assert cues.count() == len(segments)
    assert page.locator("#media").evaluate("m => m.tagName") == "AUDIO"
    assert page.evaluate("document.getElementById('media').duration") == pytest.approx(dialogue["audioDurationS"], abs=0.5)

    # speakers in colour: one colour per speaker, the same on each of its cues, and in the legend
    speakers = cues.evaluate_all("cs => cs.map((c) => [c.dataset.speaker, getComputedStyle(c).borderLeftColor])")
    assert {name for name, _ in speakers} == {"SPEAKER_00", "SPEAKER_01"}
    colour = dict(speakers)
    assert all(colour[name] == c for name, c in speakers) and colour["SPEAKER_00"] != colour["SPEAKER_01"]
    legend = page.locator(".speaker-legend .speaker").evaluate_all("ls => ls.map((l) => [l.textContent, getComputedStyle(l).color])")
    assert dict(legend) == colour

    # seeking moves the highlight to the cue being spoken
    for k in (len(segments) - 1, 1, 2):
        seek(page, starts[k] + 0.05)
        page.wait_for_function(f"({CURRENT})() === {k}", timeout=WAIT_MS)
    # playing moves it on by itself
    seek(page, max(0.0, starts[3] - 0.6))
    page.wait_for_function(f"({CURRENT})() === 2", timeout=WAIT_MS)
    page.evaluate("() => { const m = document.getElementById('media'); m.muted = true; return m.play(); }")
    page.wait_for_function(f"({CURRENT})() >= 3", timeout=WAIT_MS)
    assert page.evaluate("document.getElementById('media').currentTime") >= starts[3]

    # a click on a cue seeks the media to its start
    page.evaluate("document.getElementById('media').pause()")
    cues.nth(len(segments) - 2).click()
    page.wait_for_function(f"({CURRENT})() === {len(segments) - 2}", timeout=WAIT_MS)
    assert page.evaluate("document.getElementById('media').currentTime") == pytest.approx(starts[-2], abs=0.05)
    assert page.locator("#cues > li.cue.current").get_attribute("aria-current") == "true"

    # search: only the cues with the words stay, marked; clearing shows all again
    word = max(segments[1]["text"].split(), key=len).strip(".,?!").lower()
    having = [i for i, s in enumerate(segments) if word in s["text"].lower()]
    page.fill("#transcript-search", word.upper())
    page.wait_for_function("document.querySelector('#transcript .search-count').textContent !== ''", timeout=WAIT_MS)
    shown = cues.evaluate_all("cs => cs.map((c, i) => c.hidden ? -1 : i).filter((i) => i >= 0)")
    assert shown == having
    marks = page.locator("#cues mark").all_inner_texts()
    assert marks and all(m.lower() == word for m in marks)
    assert page.inner_text("#transcript .search-count") == f"{len(having)} of {len(segments)} lines"
    page.fill("#transcript-search", "")
    page.wait_for_function("document.querySelector('#transcript .search-count').textContent === ''", timeout=WAIT_MS)
    assert page.locator("#cues > li.cue[hidden]").count() == 0 and page.locator("#cues mark").count() == 0
    assert [t.strip() for t in cues.locator(".text").all_inner_texts()] == [s["text"].strip() for s in segments]
    assert not errors, errors


def test_a_transcript_of_5000_cues_loads_and_follows(controller: RunningController, browser: Any) -> None:
    # the same media, a second job; its JSON output is then rewritten with 5,000 cues over the recording
    job = finished_job(controller, DATA / "dialogue.flac", "many-cues.flac", {"formats": ["json"]})
    (output,) = (controller.state_dir / "jobs").glob("*/many-cues.json")
    duration = job["audioDurationS"]
    step = duration / 5000
    segments = [
        {"id": i, "start": round(i * step, 3), "end": round((i + 1) * step, 3), "text": f" line {i} of many",
         "speaker": f"SPEAKER_0{i % 3}"}
        for i in range(5000)
    ]  # fmt: skip
    output.write_text(json.dumps({"text": "", "language": "en", "segments": segments, "speakers": ["SPEAKER_00"]}))
    page, errors = open_job(browser, controller, job["id"])
    assert page.locator("#cues > li.cue").count() == 5000
    starts = [s["start"] for s in segments]
    for k in (4500, 1250, 4990):
        t = (starts[k] + segments[k]["end"]) / 2  # mid-cue: clear of rounding at the cue's edges
        assert bisect.bisect_right(starts, t) - 1 == k
        seek(page, t)
        page.wait_for_function(f"({CURRENT})() === {k}", timeout=WAIT_MS)
    page.fill("#transcript-search", "line 4321 ")
    page.wait_for_function("document.querySelector('#transcript .search-count').textContent === '1 of 5000 lines'",
                           timeout=WAIT_MS)
    assert page.locator("#cues > li.cue:not([hidden])").get_attribute("data-start") == str(starts[4321])
    assert not errors, errors


def test_a_job_without_kept_media_says_why(controller: RunningController, browser: Any) -> None:
    # the upload deleted from the controller's folder: the page reads, and says there is nothing to play
    job = finished_job(controller, DATA / "en01.wav", "gone.wav", {"formats": ["json"]})
    (stored,) = (controller.state_dir / "uploads").glob("*/gone.wav")
    stored.unlink()
    page = browser.new_page()
    log_in(page, controller, f"/ui/jobs/{job['id']}")
    assert page.locator("#media").count() == 0
    assert "Nothing to play" in page.inner_text("#media-note") and "upload" in page.inner_text("#media-note")
    assert page.locator("#cues > li.cue").count() == len(job["transcript"]["segments"])


def test_the_home_form_asks_for_speakers(controller: RunningController, browser: Any) -> None:
    page = browser.new_page()
    log_in(page, controller)
    page.set_input_files("#file-input", str(DATA / "en01.wav"))
    page.check('input[name="diarize"]')
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/jobs")) as sent:
        page.click("#submit-button")
    assert sent.value.post_data_json["options"]["diarize"] is True
