"""A disk that fills up under a run: no file is failed for it (the disk is not the file's fault), files that each
fit get done, and a run that cannot go on stops with OUTPUT_WRITE_FAILED and resumes once there is room.

On a real small tmpfs (`small_disk`, root only), with real slots, the real model and real recordings.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from helpers import wer

CLI = [sys.executable, "-m", "scribefleet.cli.main"]


def transcribe(inputs: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "transcribe", str(inputs), "-o", str(out), "-f", "txt"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_a_run_with_no_room_stops_keeping_its_file_queued_and_resumes_with_room(
    tmp_path: Path, small_disk, real_speech: dict[str, tuple[Path, str]]  # noqa: ANN001
) -> None:
    wav, reference = real_speech["sonnet001"]  # 53 s: its decoded audio (1.7 MB) cannot fit on 1.2 MB
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(wav, inputs)
    out = small_disk("1200k") / "out"
    stopped = transcribe(inputs, out)
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("error [OUTPUT_WRITE_FAILED]: the disk of ") and " is full (" in last, last
    assert "run the same command again" in last and "Traceback" not in stopped.stderr, last
    assert "trying one waiting task alone" in stopped.stderr
    shown = subprocess.run([*CLI, "status", str(out), "--json"], capture_output=True, text=True, timeout=120)
    (job,) = json.loads(shown.stdout)["jobs"]
    assert (job["state"], job["attempts"]) == ("queued", 0), job  # not failed: the disk was full, not the file
    small_disk("100m")  # room
    done = transcribe(inputs, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert wer(reference, (out / f"{wav.stem}.txt").read_text()) <= 0.2


def test_files_that_fill_the_disk_together_are_done_one_after_another(tmp_path: Path, small_disk) -> None:  # noqa: ANN001
    """Six files decoding at once in one slot's group need 30 MB of decoded audio on a 14 MB disk; each alone
    needs 5 MB (a job deletes its decoded audio once transcribed). Those that found no room wait, and are done."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(7)
    for i in range(6):  # quiet noise: decoded and found to hold no speech in seconds
        sf.write(inputs / f"quiet{i}.wav", (rng.standard_normal(160 * 16000) * 0.003).astype(np.float32), 16000,
                 subtype="PCM_16")  # fmt: skip
    out = small_disk("14m") / "out"
    run = transcribe(inputs, out)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "found no room: the disk of" in run.stderr, run.stderr[-3000:]  # some did, at first
    assert sorted(p.name for p in out.glob("*.txt")) == [f"quiet{i}.txt" for i in range(6)]
    assert "6/6 done, 0 failed" in run.stdout + run.stderr
