"""`scribefleet transcribe --no-vad` on silence, noise and music end to end: empty outputs, guards in status --json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cli.test_transcribe import run_cli
from helpers import TEXTS, wer
from pipeline.nonspeech import chords, pink_noise, silence, write_wav


@pytest.mark.slow
def test_no_words_without_speech_and_status_shows_the_guards(tmp_path: Path, speech: dict[str, Path]) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    write_wav(inbox / "silence.wav", silence())
    write_wav(inbox / "noise.wav", pink_noise())
    write_wav(inbox / "music.wav", chords())
    shutil.copy(speech["en03.wav"], inbox / "speech.wav")
    out = tmp_path / "out"
    summary = json.loads(run_cli("transcribe", str(inbox), "-o", str(out), "--no-vad", "--json").stdout)
    assert summary["complete"] == 4, summary
    for stem in ("silence", "noise", "music"):
        doc = json.loads((out / f"{stem}.json").read_text())
        assert (doc["text"], doc["segments"]) == ("", []), (stem, doc["segments"])
        assert (out / f"{stem}.srt").read_text().strip() == "" and (out / f"{stem}.txt").read_text().strip() == ""
    assert wer(TEXTS["en03.wav"], json.loads((out / "speech.json").read_text())["text"]) <= 0.25

    status = json.loads(run_cli("status", str(out), "--json").stdout)
    guards = {Path(job["input"]).stem: job["guards"] for job in status["jobs"]}
    assert guards == {Path(job["input"]).stem: job["guards"] for job in summary["jobs"]}
    assert guards["silence"]["outside_speech"] >= 1  # tiny.en wrote " You" on the silence
    assert guards["speech"] == dict.fromkeys(("no_speech", "outside_speech", "phrases", "loops", "repeats"), 0)
    for stem, counts in guards.items():  # what the job's transcript counted is what status shows
        assert counts == json.loads((out / f"{stem}.json").read_text())["guards"]
