"""A controller whose disk is full: the client is told so (507 OUTPUT_WRITE_FAILED), never that its request was
broken, nothing half-written stays, and no answer names a server path.

The state folder lies on a real small tmpfs mounted for the test (`small_disk`: root only; CI runs as root).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from scribefleet.service.app import create_app
from scribefleet.service.controller import Controller
from helpers import wer
from service.harness import AUTH, DATA, Service, service_settings, wait_job

pytestmark = pytest.mark.anyio


def _fill(disk: Path) -> None:
    """Every free byte of the disk taken."""
    with (disk / "filler").open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass


async def test_a_full_disk_is_the_controllers_problem_said_as_such(tmp_path: Path, small_disk) -> None:  # noqa: ANN001
    small_disk = small_disk("2m")
    settings = service_settings(tmp_path, max_file_mb=100)
    controller = Controller(settings, small_disk / "state", slots=1, device="cpu")
    try:
        async with Service(controller, create_app(controller, settings), settings).client() as client:
            # an upload bigger than the free space: 507, not "the multipart body is broken" (400)
            big = await client.post("/api/uploads", headers=AUTH, files={"file": ("big.wav", b"\0" * (3 << 20))})
            assert big.status_code == 507, big.text
            error = big.json()["error"]
            assert error["code"] == "OUTPUT_WRITE_FAILED" and "No space left" in error["message"], error
            assert controller.uploads.ids() == [] and list((small_disk / "state" / "uploads").iterdir()) == []
            # a job asked for when even the store cannot grow: 507 too, naming no server path
            fits = await client.post("/api/uploads", headers=AUTH,
                                     files={"file": ("en01.wav", (DATA / "en01.wav").read_bytes())})  # fmt: skip
            assert fits.status_code == 201, fits.text
            _fill(small_disk)
            refused = [await client.post("/api/jobs", headers=AUTH, json={"uploadId": fits.json()["uploadId"]})
                       for _ in range(3)]  # fmt: skip
            assert {r.status_code for r in refused} == {507}, [r.text for r in refused]
            assert all(r.json()["error"]["code"] == "OUTPUT_WRITE_FAILED" for r in refused)
            assert not any(str(small_disk) in r.text for r in refused), refused[0].text
            (small_disk / "filler").unlink()  # space again: the same request goes through
            made = await client.post("/api/jobs", headers=AUTH, json={"uploadId": fits.json()["uploadId"]})
            assert made.status_code == 201, made.text
    finally:
        controller.stop()


@asynccontextmanager
async def _running_on(disk: Path, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A started controller whose state folder is on `disk`, and a client of its app."""
    settings = service_settings(tmp_path, max_file_mb=100)
    controller = Controller(settings, disk / "state", slots=1, device="cpu")
    controller.start()
    try:
        async with Service(controller, create_app(controller, settings), settings).client() as client:
            yield client
    finally:
        controller.stop()


def _opus(wav: Path, dest: Path) -> Path:
    """`wav` as Ogg/Opus: a small upload whose decoded audio is ten times its size."""
    import av

    with av.open(str(wav)) as src, av.open(str(dest), "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=16000, layout="mono")
        stream.bit_rate = 24000
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        for frame in src.decode(audio=0):
            for piece in resampler.resample(frame):
                for packet in stream.encode(piece):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dest


async def test_a_job_with_no_room_waits_saying_why_and_runs_once_there_is_room(
    tmp_path: Path, small_disk, real_speech: dict[str, tuple[Path, str]]  # noqa: ANN001
) -> None:
    wav, reference = real_speech["sonnet001"]
    media = _opus(wav, tmp_path / "sonnet.ogg")  # ~0.2 MB; decoded 1.7 MB, more than the disk has
    disk = small_disk("1200k")
    async with _running_on(disk, tmp_path) as client:
        up = await client.post("/api/uploads", headers=AUTH, files={"file": ("sonnet.ogg", media.read_bytes())})
        assert up.status_code == 201, up.text
        made = await client.post("/api/jobs", headers=AUTH, json={"uploadId": up.json()["uploadId"],
                                                                   "options": {"formats": ["txt"]}})  # fmt: skip
        job_id = made.json()["id"]
        waiting = await wait_job(client, job_id, lambda j: (j.get("message") or "").startswith("Waiting for disk"))
        assert waiting["status"] == "queued" and waiting["attempts"] == 0, waiting  # not failed
        assert waiting["lastErrorCode"] == "OUTPUT_WRITE_FAILED" and str(disk) not in str(waiting), waiting
        small_disk("100m")  # room: the controller sees it and runs the job
        done = await wait_job(client, job_id)
        assert done["status"] == "complete", done
        assert wer(reference, (await client.get(done["outputs"]["txt"], headers=AUTH)).text) <= 0.2


async def test_a_store_with_no_room_stops_the_dispatcher_which_comes_back_with_room(
    tmp_path: Path, small_disk, caplog: pytest.LogCaptureFixture  # noqa: ANN001
) -> None:
    caplog.set_level(logging.INFO, logger="scribefleet")
    disk = small_disk("3m")
    async with _running_on(disk, tmp_path) as client:
        up = await client.post("/api/uploads", headers=AUTH, files={"file": ("en01.wav", (DATA / "en01.wav").read_bytes())})
        _fill(disk)  # the job's row still fits (SQLite's pages have room); marking it running does not
        made = await client.post("/api/jobs", headers=AUTH, json={"uploadId": up.json()["uploadId"]})
        if made.status_code == 507:  # the row did not fit either: make room for it alone
            (disk / "filler").unlink()
            made = await client.post("/api/jobs", headers=AUTH, json={"uploadId": up.json()["uploadId"]})
            _fill(disk)
        assert made.status_code == 201, made.text
        deadline = time.monotonic() + 60
        while "the dispatcher stopped [OUTPUT_WRITE_FAILED]" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text[-3000:]
            await asyncio.sleep(0.1)
        assert "Traceback" not in caplog.text  # one plain line a restart, not a crash's stack
        assert (await client.get(f"/api/jobs/{made.json()['id']}", headers=AUTH)).json()["status"] == "queued"
        (disk / "filler").unlink()  # room: the restarted dispatcher runs the job
        assert (await wait_job(client, made.json()["id"]))["status"] == "complete"
