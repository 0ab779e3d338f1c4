"""`scribefleet status`: what a batch or job did, read from its store (safe while it runs), or from a controller.

`status_of()` is the one entry: with a controller (`--controller` or
SCRIBEFLEET_CONTROLLER) the target is a controller job or batch id; without
one it is a state dir (an OUT folder), or a batch id, job id or task key
looked up in the store of `--state`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def state_dir_of(target: Path) -> Path:
    """Accept an OUT folder or the state dir itself."""
    target = target.resolve()
    if (target / "store.sqlite").exists():
        return target
    return target / ".scribefleet"


def task_rows(tasks: list[Any]) -> list[dict[str, Any]]:
    """The public JSON shape of each job (used by status --json and transcribe --json)."""
    rows = []
    for t in tasks:
        result = t.result or {}
        rows.append({
            "id": t.id,
            "input": t.spec.get("input_path", t.key),
            "name": t.spec.get("display", t.key),
            "kind": t.kind,
            "state": t.state.value,
            "stage": t.stage,
            "attempts": t.attempts,
            "error_code": t.error_code,
            "error_message": t.error_message,
            "outputs": result.get("outputs") or {},
            "duration_s": result.get("duration_s"),
            "language": result.get("language"),
            "warnings": result.get("warnings") or [],
        })
    return rows


def report_outcome(console: Console, tasks: list[Any], *, line: str, json_out: bool, **head: Any) -> int:
    """The end of a batch run: JSON summary (--json), one line (`line` with {done}, {total},
    {failed}) and the table of failures; returns the exit code (1 when any task did not complete)."""
    failed = [t for t in tasks if not t.is_complete]
    done = len(tasks) - len(failed)
    if json_out:
        summary = {**head, "total": len(tasks), "complete": done, "failed": len(failed), "jobs": task_rows(tasks)}
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    console.print(line.format(done=done, total=len(tasks), failed=len(failed)), markup=False, highlight=False)
    for t in tasks:
        for warning in (t.result or {}).get("warnings") or []:
            console.print(f"warning: {t.spec.get('display', t.key)}: {warning}", style="yellow", markup=False, highlight=False)
    if failed:
        render_failures(console, failed)
    return 1 if failed else 0


def render_failures(console: Console, failed: list[Any]) -> None:
    table = Table(title="Failed jobs", show_lines=False)
    for col in ("input", "state", "code", "message"):
        table.add_column(col, overflow="fold")
    for t in failed:
        table.add_row(str(t.spec.get("display", t.key)), t.state.value, t.error_code or "", t.error_message or "")
    console.print(table)


def show_status(target: Path, *, batch_id: str | None, json_out: bool) -> int:
    from scribefleet.store.store import Store

    state_dir = state_dir_of(target)
    console = Console(stderr=False)
    if not (state_dir / "store.sqlite").exists():
        Console(stderr=True).print(f"[red]error [INPUT_NOT_FOUND]:[/red] no scribefleet state in {target} (looked for {state_dir}/store.sqlite)")
        return 1
    store = Store.open(state_dir)
    batches = store.batches()
    if batch_id is None and batches:
        batch_id = max(batches, key=lambda b: b.created_at).id
    tasks = store.tasks(batch_id=batch_id) if batch_id else []
    rows = task_rows(tasks)
    if json_out:
        sys.stdout.write(json.dumps({"batch_id": batch_id, "state_dir": str(state_dir), "jobs": rows}, indent=2) + "\n")
        return 0
    table = Table(title=f"batch {batch_id} ({state_dir})")
    for col in ("input", "state", "stage", "attempts", "error", "outputs"):
        table.add_column(col, overflow="fold")
    for r in rows:
        err = f"{r['error_code']}: {r['error_message']}" if r["error_code"] else ""
        table.add_row(r["name"], r["state"], r["stage"] or "", str(r["attempts"]), err, "\n".join(r["outputs"].values()))
    console.print(table)
    return 0


def status_of(target: str | None, *, batch_id: str | None, state: Path | None, controller: str | None,
              token: str | None, json_out: bool) -> int:
    """Route `scribefleet status [TARGET]` to a state dir, a local batch or job, or a controller."""
    from scribefleet.cli.submit import controller_status, pick_controller, stderr_console
    from scribefleet.errors import ScribefleetError

    console = stderr_console()
    # a folder named as TARGET, like --state, wins over SCRIBEFLEET_CONTROLLER; --controller wins over both
    is_dir = target is not None and Path(target).expanduser().is_dir()
    url, settings = pick_controller(controller, Path(target) if is_dir else state)
    try:
        if url:
            if not (target or batch_id):
                console.print("error [INVALID_OPTIONS]: name the job or batch: scribefleet status ID --controller URL", style="red")
                return 2
            return controller_status(target or batch_id or "", url, token, settings, json_out=json_out)
        if target is None or is_dir:
            return show_status(Path(target) if target else state or Path("out"), batch_id=batch_id, json_out=json_out)
        return show_job(state or Path("out"), target, json_out=json_out)
    except ScribefleetError as err:
        console.print(f"error [{err.code}]: {err.message}", style="red")
        return 1


def show_job(state: Path, ident: str, *, json_out: bool) -> int:
    """A job (task) of the store of `state` as its job JSON; a batch id shows that batch."""
    from scribefleet.cli.jobs import find_target, open_store
    from scribefleet.cli.submit import job_view

    with open_store(state) as store:
        target = find_target(store, ident)
        if target.task is None:
            return show_status(state, batch_id=target.batch.id, json_out=json_out)
        view = job_view(target.task, store.state_dir)
    if json_out:
        sys.stdout.write(json.dumps(view, indent=2) + "\n")
        return 0
    err = f" [{view['error_code']}] {view['error_message']}" if view["error_code"] else ""
    stage = f", {view['stage']} {view['percent']}%" if view["stage"] and view["status"] == "running" else ""
    lines = [f"{view['job_id']}  {view['input']}: {view['status']}{stage}{err} (attempts {view['attempts']})"]
    lines += [f"  {fmt}: {path}" for fmt, path in view["outputs"].items()]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
