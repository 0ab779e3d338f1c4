"""The web UI end to end: a real controller on uvicorn, real headless Chromium, the real tiny.en model.

The browser does what a person does: logs in with a token, picks or drops
files, watches their progress arrive over SSE, downloads a subtitle file,
reads a transcript, cancels jobs and looks at the runtime page. Every wait is
on a page condition with a generous deadline (a slow, shared 2-core machine
is waited for, never slept for).
"""

from __future__ import annotations

import re
import wave
from urllib.parse import urlsplit
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import srt

from helpers import DATA, TEXTS, wer

from service.browser import PAGE_WAIT_S, RunningController, browser, controller, playwright_driver, wait_until  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow

WAIT_MS = PAGE_WAIT_S * 1000
#: a job row in a final state
ENDED = '[data-status="complete"], [data-status="failed"], [data-status="canceled"], [data-status="skipped"]'
#: a file name that is markup, a quote and an entity at once: it must show as text, never run
HOSTILE_NAME = "<img src=x onerror=window.__pwned=1>&amp;'b.wav"
#: every status a job row had, recorded by the page itself (it proves updates came without a reload)
RECORD_STATUSES = """() => {
  window.__seen = {};
  new MutationObserver((changes) => {
    for (const c of changes) {
      const row = c.target.closest && c.target.closest("tr.job");
      if (!row || !row.dataset.jobId) continue;
      (window.__seen[row.dataset.jobId] = window.__seen[row.dataset.jobId] || []).push(row.dataset.status);
    }
  }).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ["data-status"]});
}"""


def log_in(page: Any, server: RunningController, path: str = "/ui/") -> None:
    """Opens `path`, is sent to the login page, logs in with the token and lands on `path`."""
    page.goto(server.url + path)
    page.wait_for_url(re.compile(r"/ui/login\?next="))
    page.fill("#token", server.token)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(re.compile(re.escape(path) + "$"))


def long_speech(dest: Path, minutes: int = 30) -> Path:
    """`minutes` of real speech (the fixtures over and over) as Ogg/Opus: small to upload, long to run."""
    import av

    chunks = []
    for name in sorted(n for n in TEXTS if n.startswith("en")):
        with wave.open(str(DATA / name)) as wav:
            chunks.append(np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16))
    block = np.concatenate(chunks)
    with av.open(str(dest), "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=16000, layout="mono")
        stream.bit_rate = 12000
        stream.options = {"compression_level": "0"}  # libopus complexity 0: seconds, not half a minute
        for _ in range(minutes * 60 // (len(block) // 16000)):
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dest


def test_pages_need_a_session_and_a_wrong_token_is_refused(controller: RunningController, browser: Any) -> None:
    page = browser.new_page()
    for path in ("/ui/", "/ui/runtime", "/ui/jobs/nope"):
        page.goto(controller.url + path)
        assert "/ui/login?next=" in page.url, f"{path} was served without a session"
    page.fill("#token", "not-" + controller.token)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#flash:not([hidden])")
    assert "not accepted" in page.inner_text("#flash")
    assert "/ui/login" in page.url
    assert not [c for c in browser.cookies() if c["name"] == "scribefleet_session"]


#: `next` as it appears in the login link's query: tab, newline, backslash, encoded and protocol-relative forms
FOREIGN_NEXT = (
    "%2F%09%2Fevil.example%2F", "/%09/evil.example/", "%2F%0A%2Fevil.example%2F", "%2F%0D%0A%2Fevil.example",
    "%2F%5Cevil.example%2F", "/%5C/evil.example", "%5C%5Cevil.example", "%2F%2Fevil.example%2F", "//evil.example",
    "///evil.example", "%2F%2F%2Fevil.example", "http%3A%2F%2Fevil.example%2F", "https:evil.example",
    "javascript:alert(1)", "%2F%E2%80%AE%2Fevil.example", "%20%2F%2Fevil.example", "/%00/evil.example",
)  # fmt: skip


def test_login_sends_the_browser_to_this_site_only(controller: RunningController, browser: Any) -> None:
    page = browser.new_page()
    site = urlsplit(controller.url).netloc
    for raw in (*FOREIGN_NEXT, "%2Fui%2Fruntime"):
        page.goto(f"{controller.url}/ui/login?next={raw}")
        page.fill("#token", controller.token)
        page.click("#login-form button[type=submit]")
        page.wait_for_url(lambda url: "/ui/login" not in url, wait_until="commit")
        landed = urlsplit(page.url)
        assert landed.scheme == "http" and landed.netloc == site, f"next={raw} sent the browser to {page.url}"
        assert landed.path == ("/ui/runtime" if "runtime" in raw else "/ui/"), (raw, page.url)


def test_upload_watch_download_and_read(controller: RunningController, browser: Any, tmp_path: Path) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    log_in(page, controller)
    page.evaluate(RECORD_STATUSES)
    page.evaluate("window.__sameDocument = true")

    page.set_input_files("#file-input", str(DATA / "en01.wav"))
    assert "en01.wav" in page.inner_text("#file-list")
    page.uncheck('input[name="formats"][value="tsv"]')
    page.click("#submit-button")

    # a refused batch shows in the flash box, a failed upload or job as a failed row:
    # wait for any end, then say which
    page.wait_for_selector(f"#flash:not([hidden]), #batch-jobs tr.job:is({ENDED})", timeout=WAIT_MS)
    assert page.locator("#flash").is_hidden(), page.inner_text("#flash")
    row = page.locator("#batch-jobs tr.job").first
    assert row.get_attribute("data-status") == "complete", row.inner_text()
    job_id = row.get_attribute("data-job-id")
    page.wait_for_selector('#batch-panel .batch-summary[data-state="done"]', timeout=WAIT_MS)
    assert page.inner_text("#batch-panel .batch-counts") == "1 of 1 done"
    assert row.locator(".percent").inner_text() == "100%"
    # elapsed time (and ETA while running) of the job and of the batch, from the job view (jobs/eta.py)
    assert re.fullmatch(r"took \d+(s|m\d\ds)", row.locator(".times").inner_text()), row.inner_text()
    assert re.fullmatch(r"took \d+(s|m\d\ds)", page.inner_text("#batch-panel .batch-times"))
    # the page followed the job without reloading: it saw it unfinished, then complete
    assert page.evaluate("window.__sameDocument") is True
    seen = page.evaluate("window.__seen")[job_id]
    assert seen[-1] == "complete" and {"queued", "running"} & set(seen), seen

    row.locator(".name a").click()
    page.wait_for_url(re.compile(f"/ui/jobs/{job_id}$"))
    assert page.inner_text(".job-detail .status") == "complete"
    assert page.inner_text(".job-detail .times").startswith("took ")
    formats = [a.get_attribute("data-format") for a in page.locator("#downloads a.download").all()]
    assert formats == ["srt", "vtt", "json", "txt"]

    with page.expect_download() as info:
        page.click('#downloads a[data-format="srt"]')
    download = info.value
    assert download.suggested_filename == "en01.srt"
    target = tmp_path / "en01.srt"
    download.save_as(target)
    subtitles = list(srt.parse(target.read_text(encoding="utf-8")))
    assert subtitles and all(s.end > s.start for s in subtitles)
    assert wer(TEXTS["en01.wav"], " ".join(s.content for s in subtitles)) <= 0.25

    lines = page.locator("#transcript li.cue")
    assert lines.count() >= 1
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} → \d\d:\d\d:\d\d\.\d{3}", lines.first.locator(".time").inner_text())
    spoken = " ".join(lines.locator(".text").all_inner_texts())
    assert wer(TEXTS["en01.wav"], spoken) <= 0.25
    assert page.locator("#cancel-button").is_hidden()
    assert not errors, errors


def test_cancel_from_the_ui_and_see_the_runtime(controller: RunningController, browser: Any, tmp_path: Path) -> None:
    long_file = long_speech(tmp_path / "half an hour of speech.ogg")
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    log_in(page, controller)

    # a long job picked with the file input, then a short one dropped on the drop zone, whose name is markup
    page.set_input_files("#file-input", str(long_file))
    drop_file(page, "#dropzone", HOSTILE_NAME, (DATA / "en02.wav").read_bytes())
    assert page.locator("#file-list li").all_inner_texts()[1].startswith(HOSTILE_NAME)
    page.click("#submit-button")
    # both uploaded and their jobs created (a row without a job id stays only for a failed upload)
    page.wait_for_function(
        "!document.getElementById('flash').hidden || [...document.querySelectorAll('#batch-jobs tr.job')]"
        ".filter(r => r.dataset.jobId || r.dataset.status === 'failed').length === 2",
        timeout=WAIT_MS,
    )
    assert page.locator("#flash").is_hidden(), page.inner_text("#flash")
    rows = page.locator("#batch-jobs tr.job")
    assert all(rows.nth(i).get_attribute("data-job-id") for i in range(2)), rows.all_inner_texts()
    long_id, short_id = rows.nth(0).get_attribute("data-job-id"), rows.nth(1).get_attribute("data-job-id")
    assert rows.nth(1).locator(".name a").inner_text() == HOSTILE_NAME
    assert page.locator("#batch-jobs img").count() == 0 and page.evaluate("window.__pwned") is None

    # one slot, the long job first: the short one waits in the queue and is canceled there
    cancel_on_job_page(page, controller, short_id, expect_name=HOSTILE_NAME)
    # the long one is queued or running: canceled either way
    cancel_on_job_page(page, controller, long_id, expect_name=long_file.name)

    with controller.api() as api:
        for job_id in (short_id, long_id):
            job = api.get(f"/api/jobs/{job_id}").json()
            assert job["status"] == "canceled" and job["lastErrorCode"] == "USER_CANCELED", job

    page.click("nav >> text=Runtime")
    page.wait_for_url(re.compile("/ui/runtime$"))
    slot = page.locator('table.slots tr.slot[data-slot="cpu0"]')
    slot.wait_for()
    assert slot.locator(".slot-device").inner_text() == "cpu"
    assert slot.locator(".slot-gpu-memory").inner_text() == ""  # a CPU slot holds no GPU memory
    # the canceled job's slot is killed and restarted; the page refreshes itself until it is idle
    page.wait_for_selector('tr.slot[data-slot="cpu0"] .slot-state:text-is("idle")', timeout=WAIT_MS)
    assert "queued" in page.inner_text("dl.queue")
    assert not errors, errors


def drop_file(page: Any, target: str, name: str, data: bytes) -> None:
    """Drops one file on `target` the way a browser does: a `drop` event carrying a DataTransfer."""
    page.evaluate(
        """([selector, name, bytes]) => {
          const dt = new DataTransfer();
          dt.items.add(new File([new Uint8Array(bytes)], name, {type: "audio/wav"}));
          const zone = document.querySelector(selector);
          zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: dt, bubbles: true, cancelable: true}));
          zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        [target, name, list(data)],
    )


def cancel_on_job_page(page: Any, server: RunningController, job_id: str, *, expect_name: str) -> None:
    page.goto(f"{server.url}/ui/jobs/{job_id}")
    assert page.inner_text("h1.job-name") == expect_name
    assert page.inner_text(".job-detail .status") in ("queued", "running")
    page.click("#cancel-button")
    # the page follows the job and, once it ended, reloads to show its final state
    page.wait_for_selector('.job-detail[data-status="canceled"] .error-code:text("USER_CANCELED")', timeout=WAIT_MS)
    page.wait_for_selector("#cancel-button", state="hidden", timeout=WAIT_MS)
    assert page.locator("img").count() == 0 and page.evaluate("window.__pwned") is None


def test_a_pasted_url_becomes_a_job(controller: RunningController, browser: Any) -> None:
    pytest.importorskip("yt_dlp")
    from media_server import MediaServer

    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    log_in(page, controller)
    with MediaServer() as media:
        url = media.add("/talks/fox.wav", (DATA / "en01.wav").read_bytes(), "audio/wav")
        assert page.locator("#submit-button").is_disabled()
        page.fill("#url-input", url + "\n")
        page.click("#submit-button")
        page.wait_for_selector(f"#flash:not([hidden]), #batch-jobs tr.job:is({ENDED})", timeout=WAIT_MS)
        assert page.locator("#flash").is_hidden(), page.inner_text("#flash")
        row = page.locator("#batch-jobs tr.job").first
        assert row.get_attribute("data-status") == "complete", row.inner_text()
        assert "fox.wav" in row.locator(".name").inner_text()
        assert any(path == "/talks/fox.wav" for _, path, _ in media.requests)
    assert not errors, errors


def test_a_quoted_name_and_bad_files_show_as_they_are(controller: RunningController, browser: Any, tmp_path: Path) -> None:
    # Chromium sends a double quote of a file name as %22 (the HTML standard's form encoding): the page showed
    # `Café %22live%22 l'été.wav` and the downloads were named so
    quoted = tmp_path / "Café \"live\" l'été.wav"
    quoted.write_bytes((DATA / "en03.wav").read_bytes())
    not_media = tmp_path / "notes.txt"
    not_media.write_text("not audio at all\n")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    log_in(page, controller)
    page.set_input_files("#file-input", [str(quoted), str(not_media), str(empty)])
    page.click("#submit-button")
    page.wait_for_selector('#batch-panel .batch-summary[data-state="done"]', timeout=WAIT_MS)
    rows = {r.locator(".name").inner_text(): r for r in page.locator("#batch-jobs tr.job").all()}
    assert set(rows) == {quoted.name, "notes.txt", "empty.wav"}, list(rows)
    assert rows[quoted.name].get_attribute("data-status") == "complete"
    # each bad file fails alone, with its code and a message that says what to do
    assert rows["notes.txt"].get_attribute("data-status") == "failed"
    assert "MEDIA_UNREADABLE" in rows["notes.txt"].inner_text() and "ffmpeg" in rows["notes.txt"].inner_text()
    assert "MEDIA_EMPTY" in rows["empty.wav"].inner_text()

    rows[quoted.name].locator(".name a").click()
    page.wait_for_url(re.compile("/ui/jobs/"))
    assert page.inner_text("h1.job-name") == quoted.name
    with page.expect_download() as info:
        page.click('#downloads a[data-format="srt"]')
    assert info.value.suggested_filename == "Café \"live\" l'été.srt".replace('"', "_")  # Chromium's own choice
    assert list(srt.parse(Path(info.value.path()).read_text(encoding="utf-8")))
    assert not errors, errors


def test_files_can_be_chosen_with_the_keyboard(controller: RunningController, browser: Any) -> None:
    # the picker's input was `hidden` and the drop zone a focus stop that did nothing: no key could open it
    page = browser.new_page()
    log_in(page, controller)
    focused = []
    for _ in range(12):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id"))
        if focused[-1] == "file-input":
            break
    assert focused[-1] == "file-input", focused
    assert "dropzone" not in focused  # no stop that does nothing
    # a focused file input is what opens the picker on Enter or Space (the chooser event itself comes only now and
    # then in headless Chromium after other pages of the same driver, so the choice is made as a chooser would)
    assert page.evaluate("document.activeElement.type") == "file"
    page.locator("#file-input").set_input_files(str(DATA / "en01.wav"))
    assert page.inner_text("#file-list").startswith("en01.wav")
    assert page.locator("#submit-button").is_enabled()


def test_jobs_made_on_the_page_join_the_recent_jobs(controller: RunningController, browser: Any, tmp_path: Path) -> None:
    # the list said "No jobs yet." (or showed older jobs only) beside the batch the page had just made
    page = browser.new_page()
    log_in(page, controller)
    named = tmp_path / "recent-check.wav"
    named.write_bytes((DATA / "en04.wav").read_bytes())
    page.set_input_files("#file-input", str(named))
    page.click("#submit-button")
    page.wait_for_selector('#batch-panel .batch-summary[data-state="done"]', timeout=WAIT_MS)
    job_id = page.locator("#batch-jobs tr.job").first.get_attribute("data-job-id")
    first = page.locator("#recent-jobs tbody tr.job").first
    assert first.get_attribute("data-job-id") == job_id and first.locator(".name").inner_text() == named.name
    assert first.get_attribute("data-status") == "complete"  # followed like the batch's row
    assert page.locator("#no-jobs").is_hidden() and page.locator("#recent-jobs tbody tr.job").count() <= 20
    page.reload()  # and the server draws it there too
    assert page.locator("#recent-jobs tbody tr.job").first.get_attribute("data-job-id") == job_id


def test_a_batch_whose_files_were_refused_ends(controller: RunningController, browser: Any) -> None:
    # a file whose upload or job was refused (FILE_TOO_LARGE, MODEL_NOT_FOUND) was left out of "done": the
    # summary said "0 of 1 done", "running" for ever
    page = browser.new_page()
    log_in(page, controller)
    page.set_input_files("#file-input", str(DATA / "en05.wav"))
    page.fill('input[name="model"]', "no-such-model")
    page.click("#submit-button")
    page.wait_for_selector('#batch-jobs tr.job[data-status="failed"]', timeout=WAIT_MS)
    assert "MODEL_NOT_FOUND" in page.inner_text("#batch-jobs tr.job")
    page.wait_for_selector('#batch-panel .batch-summary[data-state="done"]', timeout=10_000)
    assert page.inner_text("#batch-panel .batch-counts") == "1 of 1 done"
    assert page.inner_text("#batch-panel .batch-state") == "done, 1 failed"


def test_a_pasted_line_that_is_no_url_is_said(controller: RunningController, browser: Any) -> None:
    # a line without http(s):// was dropped without a word (alone, the button stayed disabled; with files, only
    # the files ran)
    page = browser.new_page()
    log_in(page, controller)
    page.fill("#url-input", "www.example.com/talk.mp3\n")
    assert page.locator("#submit-button").is_enabled()
    page.click("#submit-button")
    page.wait_for_selector("#flash:not([hidden])", timeout=WAIT_MS)
    assert "Not a media URL: www.example.com/talk.mp3" in page.inner_text("#flash")
    assert page.locator("#batch-panel").is_hidden()  # nothing was sent
    assert page.input_value("#url-input") == "www.example.com/talk.mp3\n"  # kept, to be fixed


def test_every_job_of_a_big_batch_can_be_reached_page_by_page_and_by_status(
    controller: RunningController, browser: Any, tmp_path: Path
) -> None:
    # the home page listed the 20 newest jobs and nothing else: 28 of a batch of 48 could not be seen
    with controller.api() as api:
        def upload(name: str, body: bytes) -> str:
            return api.post("/api/uploads", files={"file": (name, body, "audio/wav")}).json()["uploadId"]

        broken, speech = upload("broken.wav", b"not audio at all" * 64), upload("en01.wav", (DATA / "en01.wav").read_bytes())
        batch = api.post("/api/batches", json={"name": "big"}).json()["id"]
        for upload_id in [speech] * 3 + [broken] * 22:  # one transcription (the same content), 22 quick failures
            resp = api.post("/api/jobs", json={"uploadId": upload_id, "batchId": batch, "options": {"formats": ["txt"]}})
            assert resp.status_code == 201, resp.text
        wait_until(lambda: (c := api.get(f"/api/batches/{batch}").json()["counts"])["queued"] + c["running"] == 0,
                   "the batch's 25 jobs to end")
        totals = {s: api.get("/api/jobs", params={"status": s, "limit": 1}).json()["total"]
                  for s in ("queued", "running", "complete", "failed", "canceled")}  # fmt: skip
        everything = api.get("/api/jobs", params={"limit": 500}).json()
        failed_ids = [j["id"] for j in api.get("/api/jobs", params={"status": "failed", "limit": 500}).json()["items"]]
    assert everything["total"] > 20 and totals["failed"] > 20

    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    log_in(page, controller)
    rows = page.locator("#recent-jobs tbody tr.job")

    def ids() -> list[str]:
        return [r.get_attribute("data-job-id") for r in rows.all()]

    def count(status: str) -> int:
        return int(page.inner_text(f'.status-filter a[data-status="{status}"] .count'))

    # the counts of every status, and of all jobs, as the API has them
    assert count("") == everything["total"] and all(count(s) == n for s, n in totals.items()), totals
    assert page.locator('.status-filter a[aria-current="page"]').get_attribute("data-status") == ""
    # page by page, newest first, every job once
    seen = ids()
    assert len(seen) == 20 and page.inner_text(".page-range") == f"1–20 of {everything['total']}"
    assert page.locator(".pager a.newer").count() == 0
    while page.locator(".pager a.older").count():
        page.click(".pager a.older")
        page.wait_for_url(re.compile(r"offset=\d+"))
        seen += ids()
    assert seen == [j["id"] for j in everything["items"]], "a job was left out or shown twice"
    page.click(".pager a.newer")
    page.wait_for_url(re.compile(r"offset=\d+|/ui/$"))
    # one status: only its jobs, paged too
    page.click('.status-filter a[data-status="failed"]')
    page.wait_for_url(re.compile(r"status=failed$"))
    assert page.locator('.status-filter a[aria-current="page"]').get_attribute("data-status") == "failed"
    shown = ids()
    assert len(shown) == 20 and all(r.get_attribute("data-status") == "failed" for r in rows.all())
    page.click(".pager a.older")
    page.wait_for_url(re.compile(r"status=failed&offset=20$"))
    shown += ids()
    assert shown == failed_ids and page.inner_text(".page-range") == f"21–{len(failed_ids)} of {len(failed_ids)}"
    page.click('.status-filter a[data-status="canceled"]')
    page.wait_for_url(re.compile(r"status=canceled$"))
    assert rows.count() == totals["canceled"] or page.inner_text("#no-jobs") == "No canceled jobs."

    # a job made on the page joins the first page of all jobs, and the counts follow it
    page.click('.status-filter a[data-status=""]')
    page.wait_for_url(re.compile(r"/ui/$"))
    page.set_input_files("#file-input", str(DATA / "en02.wav"))
    page.click("#submit-button")
    page.wait_for_selector('#batch-panel .batch-summary[data-state="done"]', timeout=WAIT_MS)
    made = page.locator("#batch-jobs tr.job").first.get_attribute("data-job-id")
    assert ids()[0] == made and len(ids()) == 20
    page.wait_for_function(
        "([all, done]) => document.querySelector('.status-filter a[data-status=\"\"] .count').textContent == all && "
        "document.querySelector('.status-filter a[data-status=\"complete\"] .count').textContent == done",
        arg=[str(everything["total"] + 1), str(totals["complete"] + 1)], timeout=WAIT_MS,
    )
    assert page.inner_text(".page-range") == f"1–20 of {everything['total'] + 1}"
    assert not errors, errors


def test_a_batch_page_sums_every_job_of_a_batch_bigger_than_a_page(
    controller: RunningController, browser: Any, tmp_path: Path
) -> None:
    """A batch page drew its first 200 jobs and summed only those: a batch of 201 stayed "200 of 201 done",
    "running", for good, and its 201st job could not be seen."""
    with controller.api() as api:
        def upload(name: str, body: bytes) -> str:
            return api.post("/api/uploads", files={"file": (name, body, "audio/wav")}).json()["uploadId"]

        # the controller's one slot busy with another batch's job until the page has opened
        held = upload("blocker.ogg", long_speech(tmp_path / "b.ogg", 3).read_bytes())
        blocker = api.post("/api/jobs", json={"uploadId": held, "options": {"formats": ["txt"]}}).json()["id"]
        wait_until(lambda: api.get(f"/api/jobs/{blocker}").json()["status"] == "running", "the blocker to run")
        speech = upload("long_pauses.wav", (DATA / "long_pauses.wav").read_bytes())
        broken = upload("broken.wav", b"not audio at all" * 64)
        batch = api.post("/api/batches", json={"name": "201"}).json()["id"]
        made = [api.post("/api/jobs", json={"uploadId": u, "batchId": batch, "options": {"formats": ["txt"]}})
                for u in [speech] + [broken] * 200]  # fmt: skip
        assert all(r.status_code == 201 for r in made), [r.text for r in made if r.status_code != 201][:1]
        first = made[0].json()["id"]  # the oldest job: on the second page, newest first

    page = browser.new_page()
    log_in(page, controller, f"/ui/batches/{batch}")
    summary = "#batch-page .batch-summary"
    assert page.inner_text("#batch-page .page-range") == "1–200 of 201"
    assert page.locator("#batch-jobs tr.job").count() == 200
    assert first not in [r.get_attribute("data-job-id") for r in page.locator("#batch-jobs tr.job").all()]
    assert page.inner_text(f"{summary} .batch-counts") == "0 of 201 done"
    assert page.locator(summary).get_attribute("data-state") == "running"
    with controller.api() as api:
        assert api.post(f"/api/jobs/{blocker}/cancel").json()["status"] == "canceled"
    # the summary follows every job of the batch live, the one on no row of this page too
    page.wait_for_selector(f'{summary}[data-state="done"]', timeout=WAIT_MS)
    assert page.inner_text(f"{summary} .batch-counts") == "201 of 201 done"
    assert page.inner_text(f"{summary} .batch-state") == "done, 200 failed"
    assert page.locator(f"{summary} .batch-progress").get_attribute("value") == "100"
    # the 201st job is on the next page; the server draws a finished batch's summary as the stream did
    page.click("#batch-page .pager a.older")
    page.wait_for_url(re.compile(r"offset=200$"))
    assert [r.get_attribute("data-job-id") for r in page.locator("#batch-jobs tr.job").all()] == [first]
    assert page.locator("#batch-jobs tr.job").first.get_attribute("data-status") == "complete"
    assert page.inner_text("#batch-page .page-range") == "201–201 of 201"
    assert page.inner_text(f"{summary} .batch-counts") == "201 of 201 done"
    assert page.inner_text(f"{summary} .batch-state") == "done, 200 failed"
    assert page.locator(f"{summary}").get_attribute("data-state") == "done"
    page.click("#batch-page .pager a.newer")
    page.wait_for_url(re.compile(re.escape(f"/ui/batches/{batch}") + "$"))
    assert page.locator("#batch-jobs tr.job").count() == 200
    page.close()
