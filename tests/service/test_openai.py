"""The official `openai` client, unchanged, against /v1/audio/transcriptions and /v1/audio/translations."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import wave
from pathlib import Path

import httpx
import openai
import pytest
import srt
import webvtt

from helpers import TEXTS, wer
from service.harness import AUTH, DATA, TOKEN, Service

FIXTURE = "en08.wav"


@pytest.fixture
def client(live: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live}/v1", api_key=TOKEN, max_retries=0, timeout=300)


def test_transcriptions_in_every_response_format(client: openai.OpenAI, live: str) -> None:
    truth = TEXTS[FIXTURE]
    with (DATA / FIXTURE).open("rb") as fh:
        as_json = client.audio.transcriptions.create(model="whisper-1", file=fh)
    assert wer(truth, as_json.text) < 0.35
    with (DATA / FIXTURE).open("rb") as fh:
        text = client.audio.transcriptions.create(model="whisper-1", file=fh, response_format="text")
    assert isinstance(text, str) and text.strip() == as_json.text.strip()
    with (DATA / FIXTURE).open("rb") as fh:
        subtitles = client.audio.transcriptions.create(model="tiny.en", file=fh, response_format="srt", language="en")
    assert wer(truth, " ".join(c.content for c in srt.parse(subtitles))) < 0.35
    with (DATA / FIXTURE).open("rb") as fh:
        vtt = client.audio.transcriptions.create(model="whisper-1", file=fh, response_format="vtt", temperature=0.0)
    assert wer(truth, " ".join(c.text for c in webvtt.from_string(vtt))) < 0.35
    # every request was a job like any other
    jobs = httpx.get(f"{live}/api/jobs", headers=AUTH, params={"limit": 4}).json()["items"]
    assert [j["filename"] for j in jobs] == [FIXTURE] * 4 and all(j["status"] == "complete" for j in jobs)
    assert jobs[0]["options"]["temperature"] == 0.0 and jobs[1]["options"]["language"] == "en"


def test_verbose_json_with_word_timestamps(client: openai.OpenAI) -> None:
    with (DATA / FIXTURE).open("rb") as fh:
        verbose = client.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="verbose_json",
            timestamp_granularities=["word", "segment"], prompt="Glossary: quick, brown.",
        )  # fmt: skip
    assert verbose.language == "english" and 1.0 < verbose.duration < 10.0
    assert verbose.segments and verbose.segments[0].end > verbose.segments[0].start
    assert verbose.words and all(w.end >= w.start for w in verbose.words)
    assert wer(TEXTS[FIXTURE], " ".join(w.word.strip() for w in verbose.words)) < 0.35


def test_verbose_json_carries_the_speakers_as_an_extension(client: openai.OpenAI) -> None:
    pytest.importorskip("resemblyzer", reason="the diarization extra is not installed")
    import json

    truth = json.loads((DATA / "dialogue.json").read_text())["turns"]

    def true_speaker(start: float, end: float) -> str:
        overlap: dict[str, float] = {}
        for s, e, name in truth:
            overlap[name] = overlap.get(name, 0.0) + max(0.0, min(e, end) - max(s, start))
        return max(overlap, key=lambda name: overlap[name])

    with (DATA / "dialogue.flac").open("rb") as fh:
        verbose = client.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="verbose_json", timestamp_granularities=["word", "segment"],
            extra_body={"diarize": "true", "speakers": "2"},
        )  # fmt: skip
    segments, words = verbose.segments, verbose.words
    assert {seg.speaker for seg in segments} == {"SPEAKER_00", "SPEAKER_01"}
    assert words and all(w.speaker in ("SPEAKER_00", "SPEAKER_01") for w in words)
    # the labels are the recording's two voices: map each label to the voice it mostly is, then count agreement
    votes: dict[str, dict[str, float]] = {}
    for seg in segments:
        who = true_speaker(seg.start, seg.end)
        votes.setdefault(seg.speaker, {}).setdefault(who, 0.0)
        votes[seg.speaker][who] += seg.end - seg.start
    named = {label: max(v, key=lambda k: v[k]) for label, v in votes.items()}
    assert len(set(named.values())) == 2
    right = sum(named[seg.speaker] == true_speaker(seg.start, seg.end) for seg in segments)
    assert right >= 0.8 * len(segments)
    # OpenAI's diarizing model name asks for speakers too; srt carries them like the outputs
    with (DATA / "dialogue.flac").open("rb") as fh:
        subtitles = client.audio.transcriptions.create(
            model="gpt-4o-transcribe-diarize", file=fh, response_format="srt", extra_body={"speakers": "2"})
    assert {c.content.split("]")[0] for c in srt.parse(subtitles)} == {"[SPEAKER_00", "[SPEAKER_01"}
    # without diarization there is no speaker field at all
    with (DATA / FIXTURE).open("rb") as fh:
        plain = client.audio.transcriptions.create(model="whisper-1", file=fh, response_format="verbose_json")
    assert all("speaker" not in (seg.model_extra or {}) for seg in plain.segments)
    with (DATA / FIXTURE).open("rb") as fh, pytest.raises(openai.BadRequestError) as bad:
        client.audio.transcriptions.create(model="whisper-1", file=fh, extra_body={"diarize": "maybe"})
    assert bad.value.body["param"] == "diarize" and bad.value.body["code"] == "INVALID_OPTIONS"
    with (DATA / FIXTURE).open("rb") as fh, pytest.raises(openai.BadRequestError) as bad:
        client.audio.transcriptions.create(model="whisper-1", file=fh, extra_body={"speakers": "2"})
    assert "only apply with diarize" in bad.value.body["message"]


def test_translations(client: openai.OpenAI) -> None:
    with (DATA / "en09.wav").open("rb") as fh:
        translated = client.audio.translations.create(model="whisper-1", file=fh)
    assert wer(TEXTS["en09.wav"], translated.text) < 0.35
    with (DATA / "en09.wav").open("rb") as fh:
        as_srt = client.audio.translations.create(model="whisper-1", file=fh, response_format="srt")
    assert list(srt.parse(as_srt))


def test_errors_reach_the_client_as_openai_errors(client: openai.OpenAI, live: str) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as bad_media:
        client.audio.transcriptions.create(model="whisper-1", file=("notes.mp3", b"not audio at all" * 64))
    assert bad_media.value.status_code == 422 and bad_media.value.body["code"] == "MEDIA_UNREADABLE"
    with pytest.raises(openai.BadRequestError) as bad_format:
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"x"), response_format="docx")  # type: ignore[arg-type]
    assert bad_format.value.body == {
        "message": bad_format.value.body["message"], "type": "invalid_request_error", "param": "response_format",
        "code": "INVALID_OPTIONS",
    }  # fmt: skip
    for model in ("no-such-model", "~nosuchuser", "/tmp", "x" * 300, "../" * 40):
        with pytest.raises((openai.NotFoundError, openai.BadRequestError)) as unknown:
            client.audio.transcriptions.create(model=model, file=(FIXTURE, (DATA / FIXTURE).read_bytes()))
        assert unknown.value.body["code"] in ("MODEL_NOT_FOUND", "INVALID_OPTIONS"), unknown.value.body
        assert unknown.value.body["param"] == "model" and unknown.value.body["type"] == "invalid_request_error"
    stranger = openai.OpenAI(base_url=f"{live}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as unauthorized:
        stranger.audio.transcriptions.create(model="whisper-1", file=(FIXTURE, (DATA / FIXTURE).read_bytes()))
    assert unauthorized.value.body["code"] == "UNAUTHORIZED"
    assert unauthorized.value.body["type"] == "authentication_error" and set(unauthorized.value.body) == {
        "message", "type", "param", "code"
    }


def test_a_refused_request_keeps_no_upload(client: openai.OpenAI, running: Service) -> None:
    root = running.controller.uploads.root
    before = set(root.glob("*"))
    audio = (FIXTURE, (DATA / FIXTURE).read_bytes())
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="docx")  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(model="no-such-model", file=audio)
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper-1", file=audio, temperature=7)
    # the file arrived whole each time, but no job reads it and the client never learned its id
    assert set(root.glob("*")) == before


def test_the_upload_of_an_openai_job_is_deleted_when_the_job_ends(client: openai.OpenAI, running: Service,
                                                                   live: str) -> None:
    # the client never learns the job's id, so it cannot delete the upload: every one stayed in STATE/uploads
    root = running.controller.uploads.root
    before = set(root.glob("*"))
    with (DATA / FIXTURE).open("rb") as fh:
        done = client.audio.transcriptions.create(model="whisper-1", file=fh, response_format="srt")
    assert list(srt.parse(done))
    assert set(root.glob("*")) == before, "the completed job's upload stayed"
    with pytest.raises(openai.UnprocessableEntityError):
        client.audio.transcriptions.create(model="whisper-1", file=("notes.mp3", b"not audio at all" * 64))
    assert set(root.glob("*")) == before, "the failed job's upload stayed"
    # the jobs and their outputs stay, as the API documents; only the media is gone
    completed, failed = httpx.get(f"{live}/api/jobs", headers=AUTH, params={"limit": 2}).json()["items"][::-1]
    assert completed["filename"] == FIXTURE and completed["status"] == "complete", completed
    assert failed["filename"] == "notes.mp3" and failed["lastErrorCode"] == "MEDIA_UNREADABLE", failed
    assert httpx.get(f"{live}{completed['outputs']['srt']}", headers=AUTH).text == done
    assert completed["language"] == "en" and completed["audioDurationS"] > 1
    media = httpx.get(f"{live}/api/jobs/{completed['id']}/media", headers=AUTH)
    assert media.status_code == 404 and media.json()["error"]["code"] == "NOT_FOUND"


def test_models_lists_what_the_server_can_load(client: openai.OpenAI) -> None:
    listed = {m.id: m for m in client.models.list()}
    assert {"whisper-1", "tiny.en"} <= set(listed) and all(m.object == "model" for m in listed.values())
    assert not any("/" in name for name in listed)  # no server folder, no repo id unless an operator allowed it
    assert client.models.retrieve("tiny.en").id == "tiny.en"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.body["code"] == "NOT_FOUND" and missing.value.body["type"] == "invalid_request_error"


def job_upload(service: Service, job_id: str) -> str:
    task = service.controller.store.task(job_id)
    assert task is not None
    return str(task.spec["upload_id"])


def test_a_client_that_goes_away_cancels_its_job(live: str, running: Service, tmp_path: Path) -> None:
    with wave.open(str(DATA / "long_pauses.wav"), "rb") as src:
        params, frames = src.getparams(), src.readframes(src.getnframes())
    long_wav = tmp_path / "gone.wav"
    with wave.open(str(long_wav), "wb") as out:
        out.setparams(params)
        out.writeframes(frames * 4)
    impatient = openai.OpenAI(base_url=f"{live}/v1", api_key=TOKEN, max_retries=0, timeout=httpx.Timeout(30, read=1.0))
    with pytest.raises(openai.APITimeoutError), long_wav.open("rb") as fh:
        impatient.audio.transcriptions.create(model="whisper-1", file=fh, response_format="srt")
    deadline = time.monotonic() + 60
    while True:
        [job] = [j for j in httpx.get(f"{live}/api/jobs", headers=AUTH).json()["items"] if j["filename"] == "gone.wav"]
        if job["status"] == "canceled":
            break
        assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["lastErrorCode"] == "USER_CANCELED"
    # nobody waits for the canceled job any more: its upload goes as it ends, with no request to do it
    upload_id = job_upload(running, job["id"])
    deadline = time.monotonic() + 10  # deleted by the dispatcher's thread just after it stored the end
    while upload_id in running.controller.uploads.ids():
        assert time.monotonic() < deadline, f"the canceled job's upload {upload_id} stayed"
        time.sleep(0.05)


def test_a_job_canceled_by_an_operator_is_not_sent_again_by_the_client(live: str, tmp_path: Path) -> None:
    with wave.open(str(DATA / "long_pauses.wav"), "rb") as src:
        params, frames = src.getparams(), src.readframes(src.getnframes())
    long_wav = tmp_path / "operator-cancels.wav"
    with wave.open(str(long_wav), "wb") as out:
        out.setparams(params)
        out.writeframes(frames * 3)
    patient = openai.OpenAI(base_url=f"{live}/v1", api_key=TOKEN, timeout=300)  # the default: 2 retries
    raised: list[BaseException] = []

    def call() -> None:
        try:
            with long_wav.open("rb") as fh:
                patient.audio.transcriptions.create(model="whisper-1", file=fh)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            raised.append(exc)

    client_thread = threading.Thread(target=call)
    client_thread.start()

    def mine() -> list[dict]:
        return [j for j in httpx.get(f"{live}/api/jobs", headers=AUTH).json()["items"] if j["filename"] == long_wav.name]

    deadline = time.monotonic() + 120
    while not [j for j in mine() if j["status"] == "running"]:
        assert time.monotonic() < deadline and client_thread.is_alive(), (mine(), raised)
        time.sleep(0.1)
    [job] = mine()
    httpx.post(f"{live}/api/jobs/{job['id']}/cancel", headers=AUTH)
    client_thread.join(120)
    assert len(raised) == 1 and isinstance(raised[0], openai.ConflictError), raised
    assert raised[0].body["code"] == "USER_CANCELED"
    # the client has returned: had it retried, it would have waited for (and got) a second transcription
    assert [j["status"] for j in mine()] == ["canceled"], "the client sent the canceled job again"


def test_a_controller_that_starts_deletes_the_uploads_of_ended_openai_jobs(tmp_path: Path) -> None:
    # a job that ended while no controller watched (killed between the end and the delete, or an older scribefleet):
    # its upload stayed for ever
    from scribefleet.options import TranscribeOptions
    from scribefleet.service import jobs as J
    from scribefleet.service.controller import Controller
    from service.harness import service_settings

    settings = service_settings(tmp_path)
    state = tmp_path / "state"
    before = Controller(settings, state, slots=1, device="cpu")  # never started: nothing runs, nothing is deleted
    made = {}
    for name, owned in (("openai", True), ("plain", False)):
        upload = before.uploads.new_writer(f"{name}.wav")
        upload.write((DATA / FIXTURE).read_bytes())
        up = upload.finish()
        task = J.create_job(before, up.upload_id, TranscribeOptions(model="tiny.en"), None, owns_upload=owned)
        before.store.cancel(task.id, "USER_CANCELED", "ended before the restart")
        made[name] = up.upload_id
    open_upload = before.uploads.new_writer("still-queued.wav")
    open_upload.write(b"RIFF")
    queued = open_upload.finish()
    J.create_job(before, queued.upload_id, TranscribeOptions(model="tiny.en"), None, owns_upload=True)
    before.stop()
    assert set(before.uploads.ids()) == {made["openai"], made["plain"], queued.upload_id}

    after = Controller(settings, state, slots=1, device="cpu")
    after.start()
    try:
        # the ended OpenAI job's upload is gone; one a client uploaded itself (POST /api/uploads) and one whose job
        # has not ended are kept
        assert set(after.uploads.ids()) == {made["plain"], queued.upload_id}
        assert not (after.uploads.root / made["openai"]).exists()
    finally:
        after.stop()


def test_an_openai_job_resumed_by_a_restarted_controller_leaves_no_upload(tmp_path: Path) -> None:
    # the request that would have deleted the upload died with the controller; the job itself resumes and ends
    from service.harness import ServeProcess, serve_env

    with wave.open(str(DATA / "long_pauses.wav"), "rb") as src:
        params, frames = src.getparams(), src.readframes(src.getnframes())
    long_wav = tmp_path / "resumed.wav"
    with wave.open(str(long_wav), "wb") as out:
        out.setparams(params)
        out.writeframes(frames * 2)
    serve = ServeProcess(tmp_path / "state", serve_env(tmp_path)).start()
    try:
        serve.wait_ready()
        patient = openai.OpenAI(base_url=f"{serve.url}/v1", api_key=TOKEN, max_retries=0, timeout=300)

        def call() -> None:
            with long_wav.open("rb") as fh, contextlib.suppress(openai.APIError):
                patient.audio.transcriptions.create(model="whisper-1", file=fh)

        threading.Thread(target=call, daemon=True).start()
        deadline = time.monotonic() + 120
        while True:
            jobs = httpx.get(f"{serve.url}/api/jobs", headers=AUTH).json()["items"]
            if jobs and jobs[0]["status"] == "running":
                break
            assert time.monotonic() < deadline, jobs
            time.sleep(0.1)
        uploads = tmp_path / "state" / "uploads"
        assert list(uploads.glob("*.json")), "the running job's upload is there"
        serve.kill()  # SIGKILL, mid-job
        serve.start().wait_ready()
        deadline = time.monotonic() + 240
        while (job := httpx.get(f"{serve.url}/api/jobs/{jobs[0]['id']}", headers=AUTH).json())["status"] != "complete":
            assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.2)
        deadline = time.monotonic() + 10  # deleted by the dispatcher's thread just after it stored the end
        while list(uploads.iterdir()):
            assert time.monotonic() < deadline, list(uploads.iterdir())
            time.sleep(0.05)
        transcript = httpx.get(f"{serve.url}{job['outputs']['json']}", headers=AUTH)  # the outputs stay
        assert transcript.status_code == 200 and transcript.json()["text"].strip(), transcript.text
    finally:
        serve.kill(signal.SIGTERM)
