"""`scribefleet transcribe` end to end: real CLI processes, real slots, real model, real audio."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import srt

from helpers import TEXTS, wer

CLI = [sys.executable, "-m", "scribefleet.cli.main"]


def run_cli(*args: str, check: int | None = 0, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.fixture
def inbox(tmp_path: Path, speech: dict[str, Path]) -> Path:
    """A folder of recordings, nested, with a name full of spaces and unicode."""
    root = tmp_path / "in put"
    (root / "day 1").mkdir(parents=True)
    shutil.copy(speech["en01.wav"], root / "fox.wav")
    shutil.copy(speech["en02.wav"], root / "day 1" / "rapport café.wav")
    shutil.copy(speech["en03.wav"], root / "day 1" / "meeting.wav")
    (root / "notes.txt").write_text("not media, and not named like media: ignored in a folder")
    return root


def test_folder_in_outputs_out(inbox: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("transcribe", str(inbox), "-o", str(out), "--json")
    summary = json.loads(proc.stdout)
    assert summary["total"] == 3 and summary["complete"] == 3 and summary["failed"] == 0
    expected = {"fox": "en01.wav", "day 1/rapport café": "en02.wav", "day 1/meeting": "en03.wav"}
    for stem, fixture in expected.items():
        for fmt in ("srt", "vtt", "json", "txt", "tsv"):
            assert (out / f"{stem}.{fmt}").is_file(), f"missing {stem}.{fmt}"
        doc = json.loads((out / f"{stem}.json").read_text())
        assert doc["language"] == "en"
        assert wer(TEXTS[fixture], doc["text"]) <= 0.3
        subs = list(srt.parse((out / f"{stem}.srt").read_text()))
        assert subs and subs[-1].end.total_seconds() <= doc["duration"] + 0.5
    assert not (out / "notes.txt").exists() and not list(out.glob("notes*"))
    leftovers = [p for p in out.rglob("*") if p.is_file() and ".scribefleet" not in p.parts and p.suffix not in {".srt", ".vtt", ".json", ".txt", ".tsv"}]
    assert leftovers == [], f"temporary files left behind: {leftovers}"


def test_bad_inputs_fail_alone_with_codes(tmp_path: Path, speech: dict[str, Path]) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    shutil.copy(speech["en05.wav"], root / "good.wav")
    (root / "empty.mp3").write_bytes(b"")
    (root / "text.mp3").write_text("this is not audio at all\n" * 50)
    (root / "noise.wav").write_bytes(os.urandom(20000))
    out = tmp_path / "out"
    proc = run_cli("transcribe", str(root), str(tmp_path / "nope.wav"), "-o", str(out), "--json", "-f", "txt", "--allow-missing", check=1)
    jobs = {Path(j["input"]).name: j for j in json.loads(proc.stdout)["jobs"]}
    assert jobs["good.wav"]["state"] == "complete"
    assert (out / "good.txt").read_text().strip()
    assert jobs["nope.wav"]["error_code"] == "INPUT_NOT_FOUND"
    for name in ("empty.mp3", "text.mp3", "noise.wav"):
        assert jobs[name]["state"] == "failed", jobs[name]
        assert jobs[name]["error_code"] in {"MEDIA_UNREADABLE", "MEDIA_EMPTY"}, jobs[name]
        assert jobs[name]["attempts"] == 1, "a deterministic input error must not be retried"
    assert "MEDIA_UNREADABLE" in proc.stderr  # the summary table names the codes


def test_a_pipe_named_as_an_input_fails_alone_and_is_not_called_missing(tmp_path: Path, speech: dict[str, Path]) -> None:
    # a FIFO (or /dev/null) is there, so 'not found, nothing was started' for the whole command was wrong
    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(speech["en01.wav"], root / "good.wav")
    os.mkfifo(root / "a pipe in a folder is passed over.wav")
    os.mkfifo(tmp_path / "pipe.wav")
    out = tmp_path / "out"
    proc = run_cli("transcribe", str(root), str(tmp_path / "pipe.wav"), "-o", str(out), "--json", "-f", "txt", check=1)
    jobs = {Path(j["input"]).name: j for j in json.loads(proc.stdout)["jobs"]}
    assert set(jobs) == {"good.wav", "pipe.wav"} and jobs["good.wav"]["state"] == "complete"
    assert jobs["pipe.wav"]["error_code"] == "MEDIA_UNREADABLE" and "not a regular file" in jobs["pipe.wav"]["error_message"]


def test_usage_error_exits_2(tmp_path: Path, speech: dict[str, Path]) -> None:
    proc = run_cli("transcribe", str(speech["en01.wav"]), "-o", str(tmp_path / "o"), "--format", "docx", check=2)
    assert "INVALID_OPTIONS" in proc.stderr and "docx" in proc.stderr
    run_cli("transcribe", "--no-such-flag", "x", check=2)


def _full_disk() -> None:
    """In the child: every file it or its slots write stops growing at 64 KB, as on a full disk (EFBIG, no
    root or mount needed)."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_an_out_folder_that_cannot_be_written_is_an_error_with_a_code_not_a_traceback(
    tmp_path: Path, speech: dict[str, Path]
) -> None:
    a_file = tmp_path / "out.txt"
    a_file.write_text("a file where the output folder should go")
    proc = run_cli("transcribe", str(speech["en01.wav"]), "-o", str(a_file), check=1)
    assert "error [OUTPUT_WRITE_FAILED]" in proc.stderr and "Not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr
    # an out folder whose logs cannot be opened (read-only disk; here a file where the logs folder goes)
    blocked = tmp_path / "blocked" / ".scribefleet"
    blocked.mkdir(parents=True)
    (blocked / "logs").write_text("a file where the logs folder should go")
    proc = run_cli("transcribe", str(speech["en01.wav"]), "-o", str(blocked.parent), check=1)
    assert "error [OUTPUT_WRITE_FAILED]: could not open the log file" in proc.stderr and "Traceback" not in proc.stderr
    # the state store cannot grow (disk full): the run stops with the code, and runs on once there is room
    out = tmp_path / "out"
    full = subprocess.run([*CLI, "transcribe", str(speech["en01.wav"]), "-o", str(out), "-f", "txt"],
                          capture_output=True, text=True, timeout=300, preexec_fn=_full_disk)  # fmt: skip
    assert full.returncode == 1 and "error [OUTPUT_WRITE_FAILED]" in full.stderr, full.stderr
    assert "Traceback" not in full.stderr and "store.sqlite" in full.stderr
    run_cli("transcribe", str(speech["en01.wav"]), "-o", str(out), "-f", "txt")
    assert wer(TEXTS["en01.wav"], (out / "en01.txt").read_text()) <= 0.3


def test_a_long_unicode_name_gets_its_outputs(tmp_path: Path, speech: dict[str, Path]) -> None:
    # 80 Chinese characters: 244 bytes, a name the disk takes; the outputs' temporary files ('.<name>.XXXX.tmp')
    # were over the 255-byte limit, so every output failed with OUTPUT_WRITE_FAILED (File name too long)
    name = "会" * 80
    shutil.copy(speech["en01.wav"], tmp_path / f"{name}.wav")
    out = tmp_path / "out"
    run_cli("transcribe", str(tmp_path / f"{name}.wav"), "-o", str(out), "-f", "srt,json")
    doc = json.loads((out / f"{name}.json").read_text())
    assert wer(TEXTS["en01.wav"], doc["text"]) <= 0.3
    assert list(srt.parse((out / f"{name}.srt").read_text()))


def test_unknown_language_is_refused_before_any_work(tmp_path: Path, speech: dict[str, Path]) -> None:
    out = tmp_path / "o"
    proc = run_cli("transcribe", str(speech["en01.wav"]), "-o", str(out), "--language", "xx", check=2)
    assert "INVALID_OPTIONS" in proc.stderr and "unknown language 'xx'" in proc.stderr
    assert not out.exists()


def test_a_warning_about_the_model_reaches_the_summary(tmp_path: Path, speech: dict[str, Path]) -> None:
    # tiny.en cannot speak German: the job completes in English and the run summary says so
    proc = run_cli("transcribe", str(speech["en01.wav"]), "-o", str(tmp_path / "o"), "-l", "de", "-f", "json", "--json")
    (job,) = json.loads(proc.stdout)["jobs"]
    assert job["state"] == "complete" and job["language"] == "en"
    (warning,) = job["warnings"]
    assert "English-only" in warning and "--language de" in warning
    assert f"warning: {job['name']}: {warning}" in " ".join(proc.stderr.split())
    assert json.loads((tmp_path / "o" / "en01.json").read_text())["warnings"] == [warning]


def test_unknown_model_is_refused_before_any_work(tmp_path: Path, speech: dict[str, Path]) -> None:
    proc = run_cli("transcribe", str(speech["en01.wav"]), "-o", str(tmp_path / "o"), "--model", "no-such-model", check=1)
    assert "MODEL_NOT_FOUND" in proc.stderr


def test_rerun_skips_finished_and_same_content_is_transcribed_once(tmp_path: Path, speech: dict[str, Path]) -> None:
    root = tmp_path / "dups"
    root.mkdir()
    shutil.copy(speech["en06.wav"], root / "a.wav")
    shutil.copy(speech["en06.wav"], root / "copy of a.wav")
    out = tmp_path / "out"
    first = json.loads(run_cli("transcribe", str(root), "-o", str(out), "--json", "-f", "json,srt").stdout)
    assert first["complete"] == 2
    a, b = (json.loads((out / n).read_text()) for n in ("a.json", "copy of a.json"))
    assert a == b
    from scribefleet.store.store import Store

    store = Store.open(out / ".scribefleet")
    results = [t.result for t in store.tasks(batch_id=first["batch_id"])]
    assert sorted(r.get("resumed_from") or "" for r in results)[-1] in {"transcribe", "render", "publish"}, results
    mtime = (out / "a.srt").stat().st_mtime_ns
    again = json.loads(run_cli("transcribe", str(root), "-o", str(out), "--json", "-f", "json,srt").stdout)
    assert again["batch_id"] == first["batch_id"] and again["complete"] == 2
    assert (out / "a.srt").stat().st_mtime_ns == mtime, "a finished job was redone"
    forced = json.loads(run_cli("transcribe", str(root), "-o", str(out), "--json", "-f", "json,srt", "--force").stdout)
    assert forced["complete"] == 2
    redone = [t.result for t in Store.open(out / ".scribefleet").tasks(batch_id=forced["batch_id"])]
    assert any("transcribe" in r["timings_s"] for r in redone), "--force did not transcribe again"


def test_status_reads_the_batch(tmp_path: Path, speech: dict[str, Path]) -> None:
    out = tmp_path / "out"
    (tmp_path / "in").mkdir()
    shutil.copy(speech["en07.wav"], tmp_path / "in" / "x.wav")
    (tmp_path / "in" / "bad.ogg").write_bytes(b"OggS" + os.urandom(300))
    run_cli("transcribe", str(tmp_path / "in"), "-o", str(out), "-f", "txt", check=1)
    status = json.loads(run_cli("status", str(out), "--json").stdout)
    states = {Path(j["input"]).name: (j["state"], j["error_code"]) for j in status["jobs"]}
    assert states["x.wav"] == ("complete", None)
    assert states["bad.ogg"][0] == "failed" and states["bad.ogg"][1] in {"MEDIA_UNREADABLE", "MEDIA_EMPTY"}
    table = run_cli("status", str(out)).stdout
    assert "x.wav" in table and "complete" in table
    assert run_cli("status", str(tmp_path / "nothing-here"), check=1).returncode == 1


def test_status_shows_the_warning_of_a_cut_off_file(tmp_path: Path, speech: dict[str, Path]) -> None:
    """A file cut off completes; next morning `status` showed it as complete like the others, and only the
    run's summary (long scrolled away) or --json said it was a third of the recording."""
    whole = speech["en05.wav"].read_bytes()
    (tmp_path / "half.wav").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    run = run_cli("transcribe", str(tmp_path / "half.wav"), "-o", str(out), "-f", "txt")
    (job,) = json.loads(run_cli("status", str(out), "--json").stdout)["jobs"]
    (warning,) = job["warnings"]
    assert job["state"] == "complete" and "its header states" in warning and "cut off" in warning, job
    for shown in (run.stderr, run_cli("status", str(out)).stdout, run_cli("status", "half.wav", "--state", str(out)).stdout):
        assert warning in " ".join(shown.split()), shown


def test_status_and_logs_read_an_out_folder_that_cannot_be_written(tmp_path: Path, speech: dict[str, Path]) -> None:
    """An OUT folder archived on a read-only disk: status and logs only read it, so they show its jobs (they
    failed with OUTPUT_WRITE_FAILED: SQLite cannot make its WAL's shared-memory file there). A folder where
    that file goes stands in for the read-only disk here, as permissions do not stop root; cancel, which
    writes, still says it cannot."""
    out = tmp_path / "out"
    run_cli("transcribe", str(speech["en07.wav"]), "-o", str(out), "-f", "txt")
    (out / ".scribefleet" / "store.sqlite-shm").mkdir()
    (job,) = json.loads(run_cli("status", str(out), "--json").stdout)["jobs"]
    assert job["state"] == "complete" and job["name"] == "en07.wav"
    assert "completed on cpu0" in run_cli("logs", "en07.wav", "--state", str(out)).stdout
    assert "error [OUTPUT_WRITE_FAILED]" in run_cli("cancel", "en07.wav", "--state", str(out), check=1).stderr


def test_two_cpu_slots_share_the_batch(tmp_path: Path, speech: dict[str, Path]) -> None:
    root = tmp_path / "four"
    root.mkdir()
    for n in ("en08.wav", "en09.wav", "en10.wav", "en11.wav"):
        shutil.copy(speech[n], root / n)
    out = tmp_path / "out"
    summary = json.loads(run_cli("transcribe", str(root), "-o", str(out), "--slots", "2", "--json", "-f", "txt").stdout)
    assert summary["complete"] == 4
    from scribefleet.store.store import Store

    slots = {t.slot for t in Store.open(out / ".scribefleet").tasks(batch_id=summary["batch_id"])}
    assert slots == {"cpu0", "cpu1"}, slots
    for n in ("en08", "en09", "en10", "en11"):
        assert wer(TEXTS[f"{n}.wav"], (out / f"{n}.txt").read_text()) <= 0.3


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and ".scribefleet" not in p.parts}


@pytest.mark.slow
def test_kill_9_then_rerun_equals_uninterrupted(tmp_path: Path, speech: dict[str, Path], monkeypatch) -> None:
    # grouped files share Whisper inputs, and which files share them depends on what was queued at the time:
    # byte-equal outputs are promised only without groups (tests/dispatch/test_groups.py kills a group)
    monkeypatch.setenv("SCRIBEFLEET_GROUP_MAX", "1")
    root = tmp_path / "batch"
    root.mkdir()
    names = ["en01.wav", "en02.wav", "en03.wav", "en04.wav", "long_pauses.wav"]
    for n in names:
        shutil.copy(speech[n], root / n)
    reference = tmp_path / "reference"
    run_cli("transcribe", str(root), "-o", str(reference), "-f", "json,srt,txt")
    want = _outputs(reference)

    out = tmp_path / "out"
    args = [*CLI, "transcribe", str(root), "-o", str(out), "-f", "json,srt,txt"]
    for kill_after_outputs in (1, 4):  # kill -9 twice at different points of the batch
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if len([p for p in out.glob("*.txt")]) >= kill_after_outputs:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        # no half-written output is ever visible, whatever the moment of death
        for p in out.glob("*.json"):
            json.loads(p.read_text())
        for p in out.glob("*.srt"):
            list(srt.parse(p.read_text()))
    done_before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.txt")}
    run_cli("transcribe", str(root), "-o", str(out), "-f", "json,srt,txt")
    assert _outputs(out) == want
    for name, mtime in done_before.items():
        assert (out / name).stat().st_mtime_ns == mtime, f"{name} was redone after the restart"


def test_rerun_retries_failures_and_restores_deleted_outputs(tmp_path: Path, speech: dict[str, Path]) -> None:
    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(speech["en12.wav"], root / "good.wav")
    (root / "later.wav").write_bytes(os.urandom(5000))  # broken now, replaced by a real recording below
    out = tmp_path / "out"
    first = json.loads(run_cli("transcribe", str(root), "-o", str(out), "--json", "-f", "txt,srt", check=1).stdout)
    assert first["failed"] == 1
    shutil.copy(speech["en04.wav"], root / "later.wav")
    (out / "good.srt").unlink()
    second = json.loads(run_cli("transcribe", str(root), "-o", str(out), "--json", "-f", "txt,srt").stdout)
    assert second["batch_id"] == first["batch_id"] and second["complete"] == 2
    assert wer(TEXTS["en04.wav"], (out / "later.txt").read_text()) <= 0.3
    assert list(srt.parse((out / "good.srt").read_text()))


def test_a_second_run_on_the_same_out_is_refused(tmp_path: Path, speech: dict[str, Path]) -> None:
    from scribefleet.dispatch.lock import DispatcherLock

    out = tmp_path / "out"
    with DispatcherLock(out / ".scribefleet"):
        proc = run_cli("transcribe", str(speech["en01.wav"]), "-o", str(out), check=1)
    assert "STATE_LOCKED" in proc.stderr and str(os.getpid()) in proc.stderr


def test_missing_inputs_are_refused_before_anything_starts(tmp_path: Path, speech: dict[str, Path]) -> None:
    out = tmp_path / "out"
    proc = run_cli("transcribe", str(speech["en01.wav"]), str(tmp_path / "nope.wav"), str(tmp_path / "*.mp4"),
                   "-o", str(out), check=1)  # fmt: skip
    assert "INPUT_NOT_FOUND" in proc.stderr and "nope.wav" in proc.stderr and "*.mp4" in proc.stderr
    assert not (out / ".scribefleet" / "store.sqlite").exists(), "nothing may be recorded or started"
    assert not list((out / ".scribefleet" / "logs").glob("slot-*")), "no slot may have started"


def test_whisper_style_booleans_are_flags_not_inputs(tmp_path: Path, speech: dict[str, Path]) -> None:
    out = tmp_path / "out"
    proc = run_cli("transcribe", str(speech["en02.wav"]), "-o", str(out), "-f", "json", "--device", "cpu",
                   "--word_timestamps", "True", "--verbose", "False", "--vad", "False", "--json")  # fmt: skip
    summary = json.loads(proc.stdout)
    assert [Path(j["input"]).name for j in summary["jobs"]] == ["en02.wav"], "True/False were taken for inputs"
    doc = json.loads((out / "en02.json").read_text())
    assert doc["segments"] and all(s.get("words") for s in doc["segments"]), "--word_timestamps True was ignored"
    assert "DEBUG" not in proc.stderr  # --verbose False


def test_status_shows_ids_and_logs_and_cancel_take_the_shown_name(tmp_path: Path, speech: dict[str, Path]) -> None:
    root = tmp_path / "talks" / "day1"
    root.mkdir(parents=True)
    shutil.copy(speech["en03.wav"], root / "fox.wav")
    out = tmp_path / "out"
    summary = json.loads(run_cli("transcribe", str(tmp_path / "talks"), "-o", str(out), "-f", "txt", "--json").stdout)
    (job,) = summary["jobs"]
    assert job["name"] == "day1/fox.wav" and job["id"] == job["job_id"]
    table = run_cli("status", "--state", str(out)).stdout
    assert job["id"] in table and "day1/fox.wav" in table
    logs = run_cli("logs", "day1/fox.wav", "--state", str(out)).stdout
    assert f"task {job['id']} " in logs and "completed on" in logs
    assert "nothing to cancel" in run_cli("cancel", "day1/fox.wav", "--state", str(out)).stdout


def test_stages_run_again_from_checkpoints_and_status_shows_each_stage(tmp_path: Path, speech: dict[str, Path]) -> None:
    out = tmp_path / "out"
    (tmp_path / "in").mkdir()
    shutil.copy(speech["en05.wav"], tmp_path / "in" / "talk.wav")
    args = ["transcribe", str(tmp_path / "in"), "-o", str(out), "-f", "srt,json"]
    run_cli(*args)
    (job,) = json.loads(run_cli("status", str(out), "--json").stdout)["jobs"]
    first = {s["stage"]: s for s in job["stages"]}
    assert all(first[s]["state"] == "done" and first[s]["attempts"] == 1 for s in ("decode", "vad", "transcribe"))
    (transcript,) = (out / ".scribefleet" / "work").glob("*/transcript.json")
    stamp = transcript.stat().st_mtime_ns
    srt_before = (out / "talk.srt").read_text()

    run_cli(*args, "--stages", "render")  # a finished job: only render and publish run again
    shown = json.loads(run_cli("status", job["id"], "--state", str(out), "--json").stdout)
    states = {s["stage"]: s["state"] for s in shown["stages"]}
    assert states == {"fetch": "unused", "decode": "skipped", "vad": "skipped", "transcribe": "skipped",
                      "diarize": "unused", "render": "done", "publish": "done"}
    assert transcript.stat().st_mtime_ns == stamp and (out / "talk.srt").read_text() == srt_before
    text = run_cli("status", job["id"], "--state", str(out)).stdout
    assert "render" in text and "skipped" in text and "attempts 1" in text

    run_cli(*args, "--stages", "transcribe")  # transcribes again (decoding again: audio.npy was dropped)
    shown = json.loads(run_cli("status", job["id"], "--state", str(out), "--json").stdout)
    assert {s["stage"]: s["state"] for s in shown["stages"]}["transcribe"] == "done"
    assert {s["stage"]: s["state"] for s in shown["stages"]}["vad"] == "skipped"
    assert transcript.stat().st_mtime_ns != stamp

    bad = run_cli(*args, "--stages", "asr", check=2)
    assert "INVALID_OPTIONS" in bad.stderr and "choose from fetch, decode, vad, transcribe" in bad.stderr
    run_cli("transcribe", str(tmp_path / "in"), "-o", str(tmp_path / "never"), "--stages", "", check=2)
    assert not (tmp_path / "never").exists()  # refused before anything is written


def test_diarize_flags_label_the_speakers_in_the_outputs(tmp_path: Path) -> None:
    from helpers import DATA

    out = tmp_path / "out"
    run_cli("transcribe", str(DATA / "dialogue.flac"), "-o", str(out), "-f", "srt,json", "--diarize", "--speakers", "2")
    cues = list(srt.parse((out / "dialogue.srt").read_text()))
    labels = {c.content.split("]")[0] + "]" for c in cues}
    assert labels == {"[SPEAKER_00]", "[SPEAKER_01]"}, labels
    assert json.loads((out / "dialogue.json").read_text())["speakers"] == ["SPEAKER_00", "SPEAKER_01"]
    bad = run_cli("transcribe", str(DATA / "dialogue.flac"), "-o", str(out), "--speakers", "2", check=2)
    assert "INVALID_OPTIONS" in bad.stderr


def test_a_check_of_several_flags_reads_as_a_sentence(tmp_path: Path) -> None:
    """A rule over several options (no single field) once printed as 'error [INVALID_OPTIONS]: : Value error, ...'."""
    from helpers import DATA

    for flags, said in ((["--speakers", "2"], "speakers only apply with diarize"),
                        (["--diarize", "--speakers", "2", "--max-speakers", "3"], "give either speakers")):  # fmt: skip
        bad = run_cli("transcribe", str(DATA / "en01.wav"), "-o", str(tmp_path / "out"), *flags, check=2)
        assert f"error [INVALID_OPTIONS]: {said}" in bad.stderr, bad.stderr
        assert "Value error" not in bad.stderr and ": :" not in bad.stderr
    bad = run_cli("transcribe", str(DATA / "en01.wav"), "-o", str(tmp_path / "out"), "--language", "xx", check=2)
    assert "error [INVALID_OPTIONS]: language: unknown language 'xx'" in bad.stderr, bad.stderr  # a field's name stays


def test_an_unusable_enrollment_clip_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """A stray notes.txt in --speaker-names once failed every job of the batch at `diarize`, each after its
    whole transcription; now the command is refused at once (exit 2), naming the file."""
    from helpers import DATA

    voices = tmp_path / "voices"
    voices.mkdir()
    shutil.copy(DATA / "enroll" / "Fiona.flac", voices / "Fiona.flac")
    (voices / "notes.txt").write_text("Fiona: the one with the deep voice")
    out = tmp_path / "out"
    bad = run_cli("transcribe", str(DATA / "dialogue.flac"), str(DATA / "en01.wav"), "-o", str(out), "--diarize",
                  "--speaker-names", str(voices), check=2)  # fmt: skip
    assert "INVALID_OPTIONS" in bad.stderr and "notes.txt cannot be used" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
    assert not list(out.rglob("*.srt")) and not list(out.rglob("transcript.json"))  # nothing was transcribed


def test_piped_output_has_a_progress_line_per_running_file_with_elapsed_and_eta(
    tmp_path: Path, real_speech: dict[str, tuple[Path, str]]
) -> None:
    """Not a terminal: plain lines every SCRIBEFLEET_PROGRESS_LOG_S per running file and for the batch; the
    percent moves during batched decoding (batch by batch), not only from 0 to 100."""
    from data.real_long import write_repeated

    sonnet, _ = real_speech["sonnet001"]
    longer = tmp_path / "sonnets.wav"
    write_repeated(longer, 3, [sonnet])  # ~164 s: several batches of 2 clips
    env = {**os.environ, "SCRIBEFLEET_PROGRESS_LOG_S": "0.2"}
    proc = subprocess.run([*CLI, "transcribe", str(longer), "-o", str(tmp_path / "out"), "--batch-size", "2",
                           "--language", "en", "--format", "txt"], capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    import re

    lines = re.findall(r"\[progress\] sonnets\.wav: (\w+) (\d+)%, elapsed (\S+), ETA (\S+)$", proc.stderr, re.M)
    assert lines, proc.stderr
    decoding = [(int(pct), left) for stage, pct, _, left in lines if stage == "transcribe"]
    assert any(0 < pct < 100 and left != "?" for pct, left in decoding), proc.stderr  # moved, with an ETA
    assert [pct for pct, _ in decoding] == sorted(pct for pct, _ in decoding)  # never backwards
    assert re.search(r"\[progress\] batch: 0/1 done, .*\| elapsed \S+ \| ETA \S+$", proc.stderr, re.M), proc.stderr


def test_adding_diarize_to_a_transcribed_file_only_diarizes(tmp_path: Path) -> None:
    from helpers import DATA

    out = tmp_path / "out"
    args = ["transcribe", str(DATA / "dialogue.flac"), "-o", str(out), "-f", "srt"]
    run_cli(*args)
    (transcript,) = (out / ".scribefleet" / "work").glob("*/transcript.json")
    stamp = transcript.stat().st_mtime_ns
    assert "[SPEAKER" not in (out / "dialogue.srt").read_text()

    def stages_of_last_run() -> dict[str, str]:
        jobs = json.loads(run_cli("status", str(out), "--json").stdout)["jobs"]
        newest = max(jobs, key=lambda j: j["created_at"] if "created_at" in j else j["id"])
        shown = json.loads(run_cli("status", newest["id"], "--state", str(out), "--json").stdout)
        return {s["stage"]: s["state"] for s in shown["stages"]}

    run_cli(*args, "--diarize", "--speakers", "2")
    states = stages_of_last_run()
    assert states["transcribe"] == "skipped" and states["diarize"] == "done", states
    assert {c.content.split("]")[0] for c in srt.parse((out / "dialogue.srt").read_text())} == {
        "[SPEAKER_00", "[SPEAKER_01"}
    run_cli(*args, "--diarize", "--speakers", "1")  # another count: diarized again, still not transcribed
    states = stages_of_last_run()
    assert states["transcribe"] == "skipped" and states["diarize"] == "done", states
    assert {c.content.split("]")[0] for c in srt.parse((out / "dialogue.srt").read_text())} == {"[SPEAKER_00"}
    assert transcript.stat().st_mtime_ns == stamp


def test_slots_beyond_what_the_machine_holds_are_capped_with_a_warning(tmp_path: Path, speech: dict[str, Path]) -> None:
    """--slots 1000 started 1000 slot processes on 2 cores (a load of 450, a slot OOM-killed). Here the memory
    limit decides (a slot said to need 10 TB): one slot starts, the warning says why, the job completes."""
    out = tmp_path / "out"
    env = {**os.environ, "SCRIBEFLEET_SLOT_MEMORY_MB": str(10 * 1024 * 1024)}
    proc = subprocess.run([*CLI, "transcribe", str(speech["en01.wav"]), "-o", str(out), "--slots", "3", "--device",
                           "cpu", "-f", "txt", "--json"], capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" in proc.stderr and "3 slots asked for, 1 CPU slot(s) started: " in proc.stderr, proc.stderr
    assert "a slot takes about 10240.0 GB (SCRIBEFLEET_SLOT_MEMORY_MB)" in proc.stderr, proc.stderr
    assert json.loads(proc.stdout)["complete"] == 1
    assert sorted(p.name for p in (out / ".scribefleet" / "logs").glob("slot-*.log")) == ["slot-cpu0.log"]
