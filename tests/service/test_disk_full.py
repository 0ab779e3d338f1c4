"""A controller whose disk is full: the client is told so (507 OUTPUT_WRITE_FAILED), never that its request was
broken, nothing half-written stays, and no answer names a server path.

The state folder lies on a real 2 MB tmpfs mounted for the test (root only; CI runs as root).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from scribefleet.service.app import create_app
from scribefleet.service.controller import Controller
from service.harness import AUTH, DATA, Service, service_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> None:
    """Every free byte of the disk taken."""
    with (disk / "filler").open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass


async def test_a_full_disk_is_the_controllers_problem_said_as_such(tmp_path: Path, small_disk: Path) -> None:
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
