"""Which ready transcribe tasks ride along with one placed on a slot (dispatch/groups.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scribefleet.dispatch.groups import attach, group_key
from scribefleet.options import TranscribeOptions
from scribefleet.store import Store, Task


@pytest.fixture
def make(tmp_path: Path):
    store = Store.open(tmp_path)
    batch = store.ensure_batch("b", "plan", {}, None)

    def task(key: str, kind: str = "transcribe", content: str | None = None, audio_s: float | None = None,
             **options: Any) -> Task:
        spec: dict[str, Any] = {
            "input_path": f"/in/{key}.wav", "display": key, "work_dir": f"/w/{key}", "outputs": {"txt": f"/o/{key}.txt"},
            "options": TranscribeOptions(**options).model_dump(mode="json"), "model_path": "/m/tiny.en",
            "model_id": "tiny.en", "window_s": 600.0, "max_file_mb": 2000,
        }  # fmt: skip
        if kind == "url":
            spec.pop("input_path")
            spec["url"], kind = "https://example.org/a.mp3", "transcribe"
        if kind == "shell":
            spec = {"run": "true"}
        task_id = store.add_task(batch, key, kind, spec, content_key=content or key)
        store.note_audio_s(task_id, audio_s)  # its header's length, as jobs/create.py records it
        return store.task(task_id)

    yield task
    store.close()


def test_files_with_the_same_model_and_options_join_evenly_up_to_the_limit(make) -> None:
    a, b = make("a"), make("b")
    rest = [make(f"t{i}", formats="srt" if i % 2 else "txt") for i in range(7)]  # formats do not matter
    members = attach([(a, "cpu0"), (b, "cpu1")], [a, b, *rest], [], group_max=4)
    assert [t.key for t in members[a.id]] == ["t0", "t2", "t4"] and [t.key for t in members[b.id]] == ["t1", "t3", "t5"]
    assert attach([(a, "cpu0")], [a, *rest], [], group_max=1) == {}  # 1 turns grouping off


def test_what_decodes_differently_or_cannot_share_stays_alone(make) -> None:
    lead = make("lead")
    others = [
        make("model", model="base"), make("sequential", batch_size=1), make("novad", vad=False),
        make("beam", beam_size=1), make("diarized", diarize=True), make("url", kind="url"), make("shell", kind="shell"),
        make("same-content", content="lead"), make("busy-content", content="running"), make("solo"),
    ]  # fmt: skip
    solo = {others[-1].id}
    assert attach([(lead, "cpu0")], [lead, *others], ["running"], group_max=8, solo=solo) == {}
    assert all(group_key(others[i]) is None for i in (1, 2, 4, 5, 6))
    assert attach([(others[-1], "cpu0")], [others[-1], make("fine")], [], group_max=8, solo=solo) == {}  # nor leads


def test_a_long_file_stays_out_of_groups_so_it_can_be_spread(make) -> None:
    """Long: long enough for a plan over two slots of WINDOWS_PER_SLOT windows of MIN_WINDOW_S each (6 min)."""
    from scribefleet.pipeline.spread_plan import MIN_WINDOW_S, SPREAD_MIN_AUDIO_S, WINDOWS_PER_SLOT

    assert SPREAD_MIN_AUDIO_S == 2 * WINDOWS_PER_SLOT * MIN_WINDOW_S == 360.0
    short, unknown, just_short = make("short", audio_s=20.0), make("unknown"), make("just", audio_s=359.0)
    long = make("long", audio_s=SPREAD_MIN_AUDIO_S)
    assert group_key(long) is None and group_key(short) == group_key(unknown) == group_key(just_short) is not None
    members = attach([(short, "cpu0")], [short, long, unknown, just_short], [], group_max=8)
    assert [t.key for t in members[short.id]] == ["unknown", "just"]  # never a member
    assert attach([(long, "cpu0")], [long, short, unknown], [], group_max=8) == {}  # nor a lead


@pytest.mark.local_only("SIGKILLs the slot process; loads the model in a slot")
def test_a_slot_killed_mid_group_loses_no_file_and_each_completes_once(fleet, tmp_path: Path) -> None:
    import os
    import signal

    from data.fetch_real import fetch
    from data.real_clips import cut_clips
    from scribefleet.jobs.create import add_transcribe_task
    from scribefleet.pipeline.models import resolve_model

    refs = cut_clips(fetch(), tmp_path / "clips", repeats=1, min_s=5.0, max_s=15.0, limit=4)
    resolved, options = resolve_model("tiny.en", fleet.settings), TranscribeOptions(formats="txt")
    for name in refs:
        clip = tmp_path / "clips" / name
        add_transcribe_task(
            fleet.store, fleet.batch_id, name, input_path=clip, display=name, digest=None,
            outputs={"txt": tmp_path / "out" / f"{clip.stem}.txt"}, options=options, resolved=resolved, settings=fleet.settings,
        )  # fmt: skip
    killed: list[int] = []

    def kill_slot_once_a_file_decodes(event) -> None:
        if event.type == "task_progress" and event.data.get("stage") == "transcribe" and not killed:
            killed.append(fleet.engine.slot(event.data["slot"]).pid)
            os.kill(killed[0], signal.SIGKILL)

    fleet.run(slots=1, listeners=[kill_slot_once_a_file_decodes])
    tasks = [fleet.task(name) for name in refs]
    assert killed and all(t.is_complete and t.attempts == 2 for t in tasks), [(t.key, t.state, t.attempts) for t in tasks]
    for t in tasks:
        types = fleet.event_types(t.key)
        assert types.count("dispatched") == 2 and types.count("completed") == 1 and "retry" in types
        assert (tmp_path / "out" / f"{Path(t.key).stem}.txt").read_text().strip()
    assert any(t.result.get("resumed_from") for t in tasks)  # what the killed attempt finished was kept
    log = fleet.log_text
    assert "more of its group" in log and "slot cpu0 crashed (killed by SIGKILL)" in log
