"""`scribefleet status`: what a batch did, read from its store (safe while it runs)."""

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
        })
    return rows


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
