"""End to end on a real uvicorn on 127.0.0.1: upload, job, server-sent events to the end, download, parse."""

from __future__ import annotations

import json
from typing import Any

import httpx
import srt

from helpers import TEXTS, wer
from service.harness import AUTH, DATA


def read_sse(resp: httpx.Response) -> list[tuple[str, Any, str | None]]:
    """(event, data, id) of every event of a finished stream."""
    events: list[tuple[str, Any, str | None]] = []
    name, data, event_id = "message", "", None
    for line in resp.iter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if data:
                events.append((name, json.loads(data), event_id))
            name, data, event_id = "message", "", None
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line.startswith("id: "):
            event_id = line[4:]
    return events


def test_upload_job_events_download(live: str) -> None:
    with httpx.Client(base_url=live, headers=AUTH, timeout=60) as client:
        # half a minute of speech: the job runs for seconds, so the stream sees it move even when a loaded
        # machine is slow to open the stream (a 4 s file could be done before it, with no `progress` to see)
        with (DATA / "long_pauses.wav").open("rb") as fh:
            up = client.post("/api/uploads", files={"file": ("lecture.wav", fh, "audio/wav")}).json()
        job = client.post("/api/jobs", json={"uploadId": up["uploadId"], "options": {"formats": ["srt", "vtt"]}}).json()
        with client.stream("GET", f"/api/jobs/{job['id']}/events", timeout=300) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            events = read_sse(resp)
        names = [e[0] for e in events]
        assert names[0] == "job" and names[-1] == "end" and names[-2] == "job"
        assert events[-1][1] == {"status": "complete"} and events[-2][1]["status"] == "complete"
        history = [data["type"] for name, data, _ in events if name == "history"]
        assert history[0] == "task_added" and "dispatched" in history and history[-1] == "completed"
        assert [s for n, d, _ in events if n == "history" and d["type"] == "stage" for s in [d["data"]["stage"]]] == [
            "decode", "vad", "transcribe", "render", "publish"
        ]  # fmt: skip
        ids = [int(i) for n, _, i in events if n == "history" and i is not None]
        assert ids == sorted(ids) and len(ids) == len(history)
        # a reconnect with Last-Event-ID gets only what came after it
        with client.stream("GET", f"/api/jobs/{job['id']}/events", headers={"Last-Event-ID": str(ids[2])}) as again:
            replay = read_sse(again)
        assert [int(i) for n, _, i in replay if n == "history"] == ids[3:]
        done = events[-2][1]
        assert done["progress"]["etaS"] == 0 and isinstance(done["progress"]["elapsedS"], int)
        moving = [d for n, d, _ in events if n == "progress"]
        assert moving and all("elapsedS" in d and "etaS" in d for d in moving)
        subtitles = client.get(done["outputs"]["srt"])
        assert subtitles.status_code == 200
        cues = list(srt.parse(subtitles.text))
        assert wer(TEXTS["long_pauses.wav"], " ".join(c.content for c in cues)) < 0.35
        assert client.get(done["outputs"]["vtt"]).text.startswith("WEBVTT")


def test_batch_events_end_when_every_job_is_done(live: str) -> None:
    with httpx.Client(base_url=live, headers=AUTH, timeout=60) as client:
        batch = client.post("/api/batches", json={"name": "sse"}).json()
        for name in ("en06.wav", "en07.wav"):
            with (DATA / name).open("rb") as fh:
                up = client.post("/api/uploads", files={"file": (name, fh)}).json()
            client.post("/api/jobs", json={"uploadId": up["uploadId"], "batchId": batch["id"], "options": {"formats": "txt"}})
        with client.stream("GET", f"/api/batches/{batch['id']}/events", timeout=300) as resp:
            events = read_sse(resp)
        again = client.get(f"/api/batches/{batch['id']}").json()["progress"]
    assert events[-1] == ("end", {"counts": {"complete": 2}}, None)
    # the whole batch's files, audio, elapsed time and ETA (jobs/eta.py), whenever they change
    sums = [d for n, d, _ in events if n == "batch"]
    assert sums[0]["id"] == batch["id"] and sums[0]["files"] == 2 and sums[-1]["filesDone"] == 2
    assert sums[-1]["etaS"] == 0 and sums[-1]["audioS"] == sums[-1]["audioDoneS"] > 0 and sums[-1]["elapsedS"] >= 0
    assert again == {k: v for k, v in sums[-1].items() if k not in ("id", "counts")}
    assert sums[-1]["counts"] == {"complete": 2}  # the count of its jobs by status, as the jobs show it
    finals = {d["id"]: d["status"] for n, d, _ in events if n == "job"}
    assert len(finals) == 2 and set(finals.values()) == {"complete"}


def test_over_the_limit_over_http(live: str) -> None:
    """A real client streaming far more than the limit gets the 413 answer, not a broken connection."""
    boundary = "xyzboundary"

    def body() -> Any:
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.wav"\r\n\r\n'.encode()
        for _ in range(60):  # 60 MiB against the running controller's 20 MB limit
            yield b"\0" * (1024 * 1024)

    with httpx.Client(base_url=live, headers=AUTH, timeout=120) as client:
        resp = client.post(
            "/api/uploads", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "FILE_TOO_LARGE"


def test_health_needs_nothing_and_the_rest_needs_a_token(live: str) -> None:
    assert httpx.get(live + "/health").json()["status"] == "ok"
    refused = httpx.get(live + "/api/runtime")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "UNAUTHORIZED"
