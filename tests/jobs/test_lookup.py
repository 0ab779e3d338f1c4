"""jobs/lookup.py: ids, keys and the names `status` shows all find their task; cancel without a dispatcher."""

from __future__ import annotations

from pathlib import Path

import pytest

from scribefleet.config import Settings
from scribefleet.errors import InputNotFound, NotFound
from scribefleet.jobs.lookup import cancel, find_target, open_store
from scribefleet.store.models import TaskState
from scribefleet.store.store import Store


def _store(tmp_path: Path) -> tuple[Store, str, str]:
    store = Store.open(tmp_path / "out" / ".scribefleet")
    batch_id = store.ensure_batch("k", "transcribe", {}, str(tmp_path / "out"))
    task_id = store.add_task(batch_id, "/in/day1/talk.mp3", "transcribe", {"display": "day1/talk.mp3", "outputs": {}})
    store.add_task(batch_id, "/in/other.mp3", "transcribe", {"display": "other.mp3", "outputs": {}})
    return store, batch_id, task_id


def test_id_key_and_shown_name_name_the_same_task(tmp_path: Path) -> None:
    store, batch_id, task_id = _store(tmp_path)
    for ident in (task_id, "/in/day1/talk.mp3", "day1/talk.mp3"):
        target = find_target(store, ident)
        assert target.task is not None and target.task.id == task_id, ident
    whole = find_target(store, batch_id)
    assert whole.task is None and len(whole.tasks(store)) == 2
    with pytest.raises(NotFound, match="'scribefleet status' lists them"):
        find_target(store, "talk.mp3")


def test_cancel_without_a_dispatcher_applies_at_once(tmp_path: Path, settings: Settings) -> None:
    store, batch_id, task_id = _store(tmp_path)
    ended = cancel(store, find_target(store, "day1/talk.mp3"), settings, wait_s=0)
    assert ended is not None and [t.state for t in ended] == [TaskState.CANCELED]
    assert cancel(store, find_target(store, task_id), settings) is None  # nothing left to cancel
    assert store.task(find_target(store, "other.mp3").id).state is TaskState.QUEUED


def test_open_store_of_a_folder_without_state(tmp_path: Path) -> None:
    with pytest.raises(InputNotFound, match="no scribefleet state"):
        open_store(tmp_path)
