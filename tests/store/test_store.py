"""Store: schema on first use, idempotent adds, transitions that are events, recovery, cancel requests."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from scribefleet.errors import ScribefleetError, StateIncompatible, UsageError
from scribefleet.store import Store, TaskState


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store.open(tmp_path / "state") as s:
        yield s


def test_schema_is_created_on_first_use_in_wal_mode(tmp_path: Path) -> None:
    Store.open(tmp_path / "state").close()
    conn = sqlite3.connect(tmp_path / "state" / "store.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"batches", "tasks", "task_needs", "events", "cancel_requests", "remote_jobs"} <= tables


def test_a_version_1_store_is_brought_up_to_date(tmp_path: Path) -> None:
    """A store written before the audio_s column (schema 1) opens, keeps its tasks and records audio lengths."""
    from scribefleet.store.schema import SCHEMA_V1

    (tmp_path / "state").mkdir()
    old = sqlite3.connect(tmp_path / "state" / "store.sqlite")
    old.executescript(SCHEMA_V1 + "PRAGMA user_version = 1;")
    old.execute("INSERT INTO batches (id, key, kind, created_at) VALUES ('b', 'k', 'transcribe', 0)")
    old.execute("INSERT INTO tasks (id, seq, batch_id, key, kind, state, created_at, updated_at)"
                " VALUES ('t', 1, 'b', 'a.wav', 'transcribe', 'running', 0, 0)")  # fmt: skip
    old.commit()
    old.close()
    with Store.open(tmp_path / "state") as store:
        assert store.task("t").audio_s is None
        store.record_progress("t", "transcribe", 0.5, audio_s=12.5)
        assert store.task("t").audio_s == 12.5
        store.record_progress("t", "render", 0.0)  # a later report without it keeps it
        assert store.task("t").audio_s == 12.5


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    sqlite3.connect(tmp_path / "store.sqlite").execute("PRAGMA user_version = 99")
    with pytest.raises(StateIncompatible) as err:
        Store.open(tmp_path)
    assert err.value.details["schema_version"] == 99


def test_a_store_file_that_is_no_database_is_refused_with_a_code(tmp_path: Path) -> None:
    # every command that opened it (status, logs, transcribe, plan run, serve) ended in a raw
    # sqlite3.DatabaseError traceback: "file is not a database"
    (tmp_path / "store.sqlite").write_bytes(b"not a database, a note someone saved here\n" * 100)
    with pytest.raises(StateIncompatible) as err:
        Store.open(tmp_path)
    assert err.value.code == "STATE_INCOMPATIBLE" and "is not a scribefleet store" in err.value.message
    assert "move it aside" in err.value.message


def test_batches_and_tasks_are_idempotent_on_their_keys(store: Store) -> None:
    b1 = store.ensure_batch("plan:x", "plan", {"file": "x.yaml"}, "/out")
    assert store.ensure_batch("plan:x", "plan", {}, None) == b1
    assert len(b1) == 12 and store.batch(b1).out_dir == "/out"
    t1 = store.add_task(b1, "a", "shell", {"run": "true"})
    assert store.add_task(b1, "a", "shell", {"run": "false"}) == t1
    assert store.task(t1).spec == {"run": "true"}
    other = store.ensure_batch("plan:y", "plan", {}, None)
    assert store.add_task(other, "a", "shell", {}) != t1  # keys are unique per batch only


def test_needs_are_resolved_by_id_or_key_and_must_exist(store: Store) -> None:
    b = store.ensure_batch("b", "plan", {}, None)
    a = store.add_task(b, "a", "shell", {})
    c = store.add_task(b, "c", "shell", {})
    d = store.add_task(b, "d", "shell", {}, needs=["a", c])
    assert set(store.task(d).needs) == {a, c}
    with pytest.raises(UsageError) as err:
        store.add_task(b, "e", "shell", {}, needs=["nope"])
    assert "nope" in err.value.message
    with pytest.raises(UsageError):
        store.add_task(b, "f", "shell", {}, resources="tpu")


def test_every_transition_is_an_event_in_the_table_and_in_events_jsonl(store: Store) -> None:
    b = store.ensure_batch("b", "plan", {}, None)
    t = store.add_task(b, "a", "shell", {}, max_attempts=2)
    running = store.mark_running(t, "cpu0")
    assert (running.state, running.slot, running.attempts) == (TaskState.RUNNING, "cpu0", 1)
    store.record_progress(t, "run", 0.5)
    store.record_progress(t, "run", 0.7)  # same stage: a write, not an event
    again = store.requeue(t, "SLOT_CRASHED", "slot died")
    assert again.is_queued and again.error_code == "SLOT_CRASHED" and again.slot is None
    store.mark_running(t, "cpu1")
    done = store.complete(t, {"ok": True})
    assert done.is_complete and done.is_terminal and done.result == {"ok": True} and done.attempts == 2
    types = [e.type for e in store.events(task_id=t)]
    assert types == ["task_added", "dispatched", "stage", "retry", "dispatched", "completed"]
    lines = [json.loads(x) for x in (store.batch_dir(b) / "events.jsonl").read_text().splitlines()]
    assert [x["type"] for x in lines] == [e.type for e in store.events(batch_id=b)]
    assert lines[-1]["at"].endswith("Z") and "." in lines[-1]["at"]


def test_terminal_states_are_final(store: Store) -> None:
    b = store.ensure_batch("b", "plan", {}, None)
    t = store.add_task(b, "a", "shell", {})
    with pytest.raises(ScribefleetError):
        store.complete(t, {})  # never ran
    store.cancel(t, "USER_CANCELED", "canceled")
    with pytest.raises(ScribefleetError):
        store.mark_running(t, "cpu0")
    assert store.task(t).state is TaskState.CANCELED


def test_reset_puts_everything_back_to_queued(store: Store) -> None:
    b = store.ensure_batch("b", "plan", {}, None)
    t1, t2 = store.add_task(b, "a", "shell", {}), store.add_task(b, "b", "shell", {})
    store.mark_running(t1, "cpu0")
    store.complete(t1, {"x": 1})
    store.fail(t2, "SHELL_FAILED", "exit 1", {"exit_status": 1})
    assert store.reset_tasks(b) == 2
    for task in store.tasks(b):
        assert (task.state, task.attempts, task.result, task.error_code) == (TaskState.QUEUED, 0, None, None)


def test_recovery_requeues_running_rows_without_counting_the_attempt(store: Store) -> None:
    b = store.ensure_batch("b", "plan", {}, None)
    t = store.add_task(b, "a", "shell", {})
    store.mark_running(t, "cpu0")
    [recovered] = store.recover_running()
    assert recovered.is_queued and recovered.attempts == 0
    assert store.events(task_id=t)[-1].type == "recovered"


def test_cancel_requests_are_seen_from_another_connection(tmp_path: Path) -> None:
    with Store.open(tmp_path) as dispatcher_side, Store.open(tmp_path) as cli_side:
        b = dispatcher_side.ensure_batch("b", "plan", {}, None)
        t = dispatcher_side.add_task(b, "a", "shell", {})
        assert cli_side.request_cancel(t) == "task"
        assert cli_side.request_cancel(b) == "batch"
        with pytest.raises(UsageError):
            cli_side.request_cancel("000000000000")
        pending = dispatcher_side.pending_cancels()
        assert [target for _, target in pending] == [t, b]
        dispatcher_side.mark_cancels_handled(i for i, _ in pending)
        assert cli_side.pending_cancels() == []


def test_a_transaction_an_interrupt_left_open_is_undone_by_the_next_one(store: Store) -> None:
    """Ctrl-C can land between a transaction's BEGIN and the code that would end it: the next change (the run's
    own clean-up of what it left running) must not fail with 'cannot start a transaction within a transaction'."""
    batch = store.ensure_batch("k", "transcribe", {}, "/tmp")
    store._conn.execute("BEGIN IMMEDIATE")  # what the interrupted transaction left
    store._conn.execute("UPDATE batches SET out_dir = 'half-done' WHERE id = ?", (batch,))
    task = store.add_task(batch, "a.wav", "transcribe", {})
    assert store.task(task).key == "a.wav" and store.batch(batch).out_dir == "/tmp"
