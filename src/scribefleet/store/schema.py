"""The store's SQL schema and how a database file is opened and brought up to date.

Plain SQL so the same tables can later live in PostgreSQL for a shared
controller. The schema version is SQLite's `user_version`; a file written by a
newer scribefleet is refused rather than misread. A file that cannot be
written (disk full, read-only, no such folder) is OutputWriteFailed
(`write_failed`), here and in every transaction of the Store.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from scribefleet.errors import OutputWriteFailed, StateIncompatible
from scribefleet.fsio import make_dir

SCHEMA_VERSION = 3

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS batches (
    id          TEXT PRIMARY KEY,
    key         TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    spec        TEXT NOT NULL DEFAULT '{}',
    out_dir     TEXT,
    created_at  REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS tasks (
    id            TEXT PRIMARY KEY,
    seq           INTEGER NOT NULL,          -- submission order; needs always come first
    batch_id      TEXT NOT NULL REFERENCES batches(id),
    key           TEXT NOT NULL,
    kind          TEXT NOT NULL,
    spec          TEXT NOT NULL DEFAULT '{}',
    state         TEXT NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued','running','complete','failed','canceled','skipped')),
    stage         TEXT,
    progress      REAL NOT NULL DEFAULT 0,
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL DEFAULT 3,
    timeout_s     REAL NOT NULL DEFAULT 1800,
    resources     TEXT NOT NULL DEFAULT 'any' CHECK (resources IN ('cpu','gpu','any')),
    slot          TEXT,
    content_key   TEXT,
    error_code    TEXT,
    error_message TEXT,
    error_details TEXT,
    result        TEXT,
    created_at    REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    updated_at    REAL NOT NULL,
    UNIQUE (batch_id, key)
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state, seq);
CREATE INDEX IF NOT EXISTS tasks_batch ON tasks(batch_id, seq);

CREATE TABLE IF NOT EXISTS task_needs (
    task_id  TEXT NOT NULL REFERENCES tasks(id),
    need_id  TEXT NOT NULL REFERENCES tasks(id),
    PRIMARY KEY (task_id, need_id)
);
CREATE INDEX IF NOT EXISTS task_needs_need ON task_needs(need_id);

CREATE TABLE IF NOT EXISTS events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id  TEXT NOT NULL,
    task_id   TEXT,
    at        REAL NOT NULL,
    type      TEXT NOT NULL,
    data      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_batch ON events(batch_id, id);
CREATE INDEX IF NOT EXISTS events_task ON events(task_id, id);

CREATE TABLE IF NOT EXISTS cancel_requests (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    target_id     TEXT NOT NULL,             -- a batch id or a task id
    requested_at  REAL NOT NULL,
    handled       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS cancel_pending ON cancel_requests(handled);
"""

#: 2: seconds of audio of a task's input, once its slot has decoded it (the ETA of a running file and batch)
SCHEMA_V2 = """
ALTER TABLE tasks ADD COLUMN audio_s REAL
"""

#: 3: the controller's jobs on remote workers (store/remote_jobs.py): where each attempt runs, since when its
#: worker has not answered, and the copies left on a lost worker, to cancel when it is back
SCHEMA_V3 = """
CREATE TABLE IF NOT EXISTS remote_jobs (
    worker_url     TEXT NOT NULL,
    worker_job_id  TEXT NOT NULL,
    task_id        TEXT NOT NULL,
    attempt_key    TEXT NOT NULL,             -- the Idempotency-Key: <task id>-<attempt>
    state          TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active','orphan')),
    away_since     REAL,                      -- epoch s: its worker stopped answering (NULL while it answers)
    updated_at     REAL NOT NULL,
    PRIMARY KEY (worker_url, worker_job_id)
);
CREATE INDEX IF NOT EXISTS remote_jobs_key ON remote_jobs(attempt_key)
"""

#: version -> the SQL that brings a database from version-1 to it
MIGRATIONS: dict[int, str] = {1: SCHEMA_V1, 2: SCHEMA_V2, 3: SCHEMA_V3}


#: SQLite's result codes (and their extended forms) that mean the file cannot be written
_WRITE_ERRORS = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_PERM")


def write_failed(exc: sqlite3.Error, path: Path) -> OutputWriteFailed | None:
    """OutputWriteFailed for an error that says the store file cannot be written; None for any other."""
    if not (getattr(exc, "sqlite_errorname", None) or "").startswith(_WRITE_ERRORS):
        return None
    return OutputWriteFailed(
        f"could not write the state store {path} ({exc}) - free disk space or fix write permission on "
        f"{path.parent}: finished work is kept, and the same command run again resumes (a controller tries again "
        "by itself)",
        path=str(path),
        sqlite_error=str(exc),
    )


def connect(path: Path, *, busy_timeout_ms: int = 10_000) -> sqlite3.Connection:
    """Open (creating if needed) the store file in WAL mode and migrate it to SCHEMA_VERSION."""
    make_dir(path.parent)
    try:
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so each change is
        # exactly one transaction and a writer never deadlocks upgrading a read lock
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a crash loses no committed transaction
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn, path)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if isinstance(exc, sqlite3.OperationalError):  # locked, busy, disk full: no damage
                raise
            raise StateIncompatible(
                f"{path} is not a scribefleet store ({exc}): it was damaged or overwritten; move it aside (the "
                "outputs beside it stay) and run again to start a fresh state, or use another output folder",
                path=str(path),
            ) from exc  # fmt: skip
    except sqlite3.Error as exc:
        raise (write_failed(exc, path) or exc) from exc
    return conn


def connect_read_only(path: Path) -> sqlite3.Connection:
    """Open an existing store file that cannot be written (a read-only disk, an archived OUT folder) for reading:
    as immutable, since SQLite cannot make the WAL's shared-memory file there. OutputWriteFailed's cause is
    kept when even that fails; StateIncompatible for a file of another schema version (none is migrated)."""
    from urllib.parse import quote

    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise (write_failed(exc, path) or exc) from exc
    if version != SCHEMA_VERSION:
        conn.close()
        raise StateIncompatible(
            f"{path} is read-only and of schema {version} (this scribefleet reads {SCHEMA_VERSION}); copy the OUT "
            "folder somewhere writable, or use the scribefleet that wrote it",
            path=str(path),
            schema_version=version,
        )
    return conn


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Create or upgrade the schema; refuse a database newer than this code."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateIncompatible(
                f"{path} was written by a newer scribefleet (schema {version}, this one knows "
                f"{SCHEMA_VERSION}); upgrade scribefleet or use another output folder",
                path=str(path),
                schema_version=version,
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target].split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # a COMMIT that failed on a full disk has rolled back already
            conn.execute("ROLLBACK")
        raise
