"""How the CLI shows tasks: the end-of-run summary, the failures table, one line per job, JSON on stdout."""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from scribefleet.jobs.eta import clock
from scribefleet.jobs.views import TaskView, task_view
from scribefleet.store.models import Task


def write_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def report_outcome(console: Console, tasks: list[Task], *, line: str, json_out: bool, **head: Any) -> int:
    """The end of a batch run: JSON summary (--json), one line (`line` with {done}, {total},
    {failed}: "2 failed", or "1 failed, 3 skipped, 1 canceled") and the table of failures; returns the exit
    code (1 when any task did not complete)."""
    failed = [t for t in tasks if not t.is_complete]
    done = len(tasks) - len(failed)
    if json_out:
        write_json({**head, "total": len(tasks), "complete": done, "failed": len(failed),
                    "jobs": [task_view(t).as_json() for t in tasks]})  # fmt: skip
    # a task skipped because a need failed is no second failure: "5 failed" read as five broken inputs
    states = Counter(t.state.value for t in failed)
    ended = [f"{states.pop('failed', 0)} failed"] + [f"{n} {state}" for state, n in sorted(states.items())]
    console.print(line.format(done=done, total=len(tasks), failed=", ".join(ended)), markup=False, highlight=False)
    for view in (task_view(t) for t in tasks):
        for warning in view.warnings:
            console.print(f"warning: {view.name}: {warning}", style="yellow", markup=False, highlight=False)
    if failed:
        render_failures(console, [task_view(t) for t in failed])
    return 1 if failed else 0


def render_failures(console: Console, failed: list[TaskView]) -> None:
    table = Table(title="Failed jobs", show_lines=False)
    for col in ("id", "input", "state", "code", "message"):
        table.add_column(col, overflow="fold")
    for v in failed:
        table.add_row(v.id, v.name, v.status, v.error_code or "", v.error_message or "")
    console.print(table)


def jobs_table(title: str, views: list[TaskView]) -> Table:
    """Each job of a batch: its id (what `logs` and `cancel` take), name, state, stage, attempts, error, outputs."""
    table = Table(title=title)
    # the id and the name are what `logs` and `cancel` take: never folded, even on a narrow or piped output
    table.add_column("id", no_wrap=True, min_width=max([2, *(len(v.id) for v in views)]))
    table.add_column("input", no_wrap=True, min_width=min(40, max([5, *(len(v.name) for v in views)])))
    for col in ("state", "stage", "attempts", "error", "outputs"):
        table.add_column(col, overflow="fold")
    for v in views:
        err = f"{v.error_code}: {v.error_message}" if v.error_code else ""
        table.add_row(v.id, v.name, v.shown_status, v.stage or "", str(v.attempts), err, "\n".join(v.outputs.values()))
    return table


def job_line(view: TaskView) -> str:
    """One job on one line: id, name, status, stage, percent, elapsed time and ETA while running, error."""
    where = f", {view.stage} {view.percent:g}%" if view.stage and view.status == "running" else ""
    if where and view.elapsed_s is not None:
        where += f", elapsed {clock(view.elapsed_s)}, ETA {clock(view.eta_s)}"
    error = f" [{view.error_code}] {view.error_message}" if view.error_code else ""
    # why it is not running yet (an interrupted one says why in its status)
    waiting = f" - {view.message}" if view.message and not view.is_terminal and not view.interrupted else ""
    return f"{view.id}  {view.name}: {view.shown_status}{waiting}{where}{error} (attempts {view.attempts})"
