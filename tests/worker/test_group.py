"""A real slot process running a group of transcribe tasks: real speech clips decoded in shared batches."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from helpers import assert_cues_in_order, read_cues, wer

from data.fetch_real import fetch
from data.real_clips import cut_clips, read_wav
from scribefleet.config import Settings
from scribefleet.engines.base import SlotSpec, SlotStatus
from scribefleet.engines.local import LocalEngine, SlotEvent
from scribefleet.jobs.create import transcribe_spec
from scribefleet.options import TranscribeOptions
from scribefleet.pipeline.models import resolve_model


def _events_until(engine: LocalEngine, task_id: str, within_s: float = 300.0) -> list[SlotEvent]:
    """Every event until the done or failed of `task_id` (engine.poll blocks until something happens)."""
    seen: list[SlotEvent] = []
    give_up = time.monotonic() + within_s
    while not any(e.type in ("done", "failed") and e.task_id == task_id for e in seen):
        assert time.monotonic() < give_up, f"saw only {[(e.type, e.task_id) for e in seen]}"
        seen.extend(engine.poll(give_up - time.monotonic()))
    return seen


def test_a_group_decodes_each_file_as_well_as_alone_keeps_its_checkpoints_and_a_bad_file_fails_alone(
    tmp_path: Path, settings: Settings
) -> None:
    refs = cut_clips(fetch(), tmp_path / "clips", repeats=1, min_s=5.0, max_s=20.0, limit=3)
    broken = tmp_path / "clips" / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file" * 100)
    resolved = resolve_model("tiny.en", settings)
    options = TranscribeOptions(formats="txt,srt")

    def run(task_id: str, clip: Path, where: str) -> dict[str, Any]:
        outputs = {fmt: tmp_path / where / "out" / f"{clip.stem}.{fmt}" for fmt in ("txt", "srt")}
        spec = transcribe_spec(clip, clip.name, tmp_path / where / "work" / clip.stem, outputs, options, resolved, settings)
        return {"task_id": task_id, "kind": "transcribe", "spec": spec, "attempt": 1, "log_path": str(tmp_path / "log")}

    clips = [tmp_path / "clips" / name for name in refs]
    engine = LocalEngine(settings, tmp_path / "state", [SlotSpec("cpu0", "cpu", cpu_threads=2)])
    engine.start()
    try:
        _events_until_ready(engine)
        for i, clip in enumerate(clips):  # alone, one after the other
            engine.assign("cpu0", run(f"alone{i}", clip, "alone"))
            assert [e for e in _events_until(engine, f"alone{i}") if e.type in ("done", "failed")][-1].type == "done"
        lead, *members = [run(f"g{i}", clip, "group") for i, clip in enumerate([*clips, broken])]
        engine.assign("cpu0", {**lead, "members": members})
        events = _events_until(engine, "g0")
        assert engine.slot("cpu0").status is SlotStatus.IDLE
    finally:
        engine.stop()
    ends = [e for e in events if e.type in ("done", "failed")]
    assert sorted(e.task_id for e in ends) == ["g0", "g1", "g2", "g3"] and ends[-1].task_id == "g0"  # the lead last
    outcome = {e.task_id: e for e in ends}
    assert outcome["g3"].type == "failed" and outcome["g3"].message["code"] == "MEDIA_UNREADABLE"
    texts = {where: [(tmp_path / where / "out" / f"{clip.stem}.txt").read_text() for clip in clips] for where in ("alone", "group")}
    references = [refs[clip.name] for clip in clips]
    # as well as alone, within one word in all and for each file: its clips share Whisper inputs with the
    # others' clips, and another context may change a word either way (one word of these 82 is 0.012 of WER)
    words = sum(len(r.split()) for r in references)
    assert wer(" ".join(references), " ".join(texts["group"])) <= wer(" ".join(references), " ".join(texts["alone"])) + 1.0 / words + 1e-9
    for i, clip in enumerate(clips):
        assert outcome[f"g{i}"].type == "done", outcome[f"g{i}"].message
        alone, grouped = wer(references[i], texts["alone"][i]), wer(references[i], texts["group"][i])
        assert grouped <= alone + 1.0 / len(references[i].split()) + 1e-9, (clip.name, alone, grouped)
        # its cues on its own time line: in order, none overlapping, none past its end
        cues = read_cues("srt", (tmp_path / "group" / "out" / f"{clip.stem}.srt").read_text())
        assert_cues_in_order(cues)
        assert cues and cues[-1][1] <= read_wav(clip).shape[0] / 16 + 1, (clip.name, cues[-1])
        work = tmp_path / "group" / "work" / clip.stem
        assert all((work / name).is_file() for name in ("vad.json", "windows.jsonl", "transcript.json")), clip.name
        assert {e.message["stage"] for e in events if e.type == "progress" and e.task_id == f"g{i}"} >= {"vad", "transcribe"}
    log = (tmp_path / "state" / "logs" / "slot-cpu0.log").read_text()
    assert "group done: 3 requests decoded in 1 shared pipeline calls" in log  # all three files in one call
    assert "decoded 3 clips of 3 files as 2 Whisper inputs" in log  # two short files' clips in one input


def _events_until_ready(engine: LocalEngine, within_s: float = 120.0) -> None:
    give_up = time.monotonic() + within_s
    while engine.slot("cpu0").status is not SlotStatus.IDLE:
        assert time.monotonic() < give_up, "the slot never said ready"
        engine.poll(give_up - time.monotonic())
