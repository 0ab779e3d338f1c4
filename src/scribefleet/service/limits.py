"""What a list answer carries of each job: text fields cut short, so a page stays small and fast.

`GET /api/jobs`, a batch's `jobs` (and the UI pages built on them) show many jobs at once; a job
whose prompt or error message is long would make every page that lists it
slow. A list item has the same keys as the job itself, but any text option
and the error message longer than `LIST_TEXT_CHARS` end in "…"; `GET
/api/jobs/{id}` answers them whole. A list's `offset` is at most `MAX_OFFSET`.
"""

from __future__ import annotations

from typing import Any

LIST_TEXT_CHARS = 200
#: the largest `offset` of a list: SQLite's integers are 64-bit, and a larger one is a 400, not a crash
MAX_OFFSET = 2**63 - 1


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > LIST_TEXT_CHARS:
        return value[:LIST_TEXT_CHARS] + "…"
    return value


def list_item(job: dict[str, Any]) -> dict[str, Any]:
    """A job as a list shows it: long text options and error message cut to LIST_TEXT_CHARS."""
    options = job.get("options")
    options = {k: _cut(v) for k, v in options.items()} if isinstance(options, dict) else options
    return {**job, "options": options, "lastErrorMessage": _cut(job.get("lastErrorMessage"))}
