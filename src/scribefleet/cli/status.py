"""`scribefleet status`: what a batch or job did, read from its store (safe while it runs), or from a controller.

With a controller (`--controller` or SCRIBEFLEET_CONTROLLER) the target is a
controller job or batch id; without one it is a state dir (an OUT folder), or
a batch id, job id, task key or job name looked up in the store of `--state`.
Every job is shown with its id, which `logs` and `cancel` take (as they take
the name shown beside it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from scribefleet import client
from scribefleet.cli import edge
from scribefleet.cli.render import job_line, jobs_table, write_json
from scribefleet.config import Settings
from scribefleet.errors import UsageError
from scribefleet.jobs.lookup import find_target, nobody_runs, open_store
from scribefleet.jobs.views import TaskView, task_view

def status(
    ctx: typer.Context,
    target: Annotated[Optional[str], typer.Argument(metavar="[TARGET]", help="An OUT folder or state dir, a batch id, a job id or a job's name (default: --state).")] = None,
    batch: Annotated[Optional[str], typer.Option("--batch", help="Batch id (default: the latest).")] = None,
    state: Annotated[Optional[Path], typer.Option("--state", parser=edge.path_value("--state"), help="Where ids are looked up without a controller: an OUT folder or state dir (default: out).")] = None,
    controller: Annotated[Optional[str], typer.Option("--controller", parser=edge.text_value("--controller", "a controller URL"), help="Ask this controller (default: SCRIBEFLEET_CONTROLLER) about a job or batch id.")] = None,
    token: Annotated[Optional[str], typer.Option("--token", parser=edge.text_value("--token", "an API token"), help=edge.TOKEN_HELP)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a job, or each job of a batch: id, state, stage, attempts, error, outputs."""

    def body() -> int:
        settings = edge.settings_of(ctx)
        # a folder named as TARGET, like --state, wins over SCRIBEFLEET_CONTROLLER; --controller wins over both
        is_dir = target is not None and Path(target).expanduser().is_dir()
        url = edge.pick_controller(controller, Path(target) if is_dir else state, settings)
        if url:
            if not (target or batch):
                raise UsageError("name the job or batch: scribefleet status ID --controller URL")
            return controller_status(target or batch or "", url, token, settings, json_out=json_out)
        if target is None or is_dir:
            return show_status(Path(target) if target else state or Path("out"), batch_id=batch, json_out=json_out)
        return show_job(state or Path("out"), target, json_out=json_out)

    edge.run(body)


def show_status(where: Path, *, batch_id: str | None, json_out: bool) -> int:
    """Each job of a batch (the latest by default) of the store of `where`."""
    with open_store(where, to_read=True) as store:
        batches = store.batches()
        if batch_id is None and batches:
            batch_id = max(batches, key=lambda b: b.created_at).id
        events: dict[str | None, list] = {}
        for event in store.events(batch_id) if batch_id else []:
            events.setdefault(event.task_id, []).append(event)
        tasks = store.tasks(batch_id=batch_id) if batch_id else []
        orphaned = any(t.is_running for t in tasks) and nobody_runs(store)  # after the read: a run may start
        views = [task_view(t, events.get(t.id, []), orphaned=orphaned) for t in tasks]
        state_dir = store.state_dir
    if json_out:
        write_json({"batch_id": batch_id, "state_dir": str(state_dir), "jobs": [v.as_json() for v in views]})
    else:
        console = Console()
        console.print(jobs_table(f"batch {batch_id} ({state_dir})", views))
        for view in views:  # as the run's summary prints them: a file cut off is complete, and says so only here
            for warning in view.warnings:
                console.print(f"warning: {view.name}: {warning}", style="yellow", markup=False, highlight=False)
    return 0


def show_job(state: Path, ident: str, *, json_out: bool) -> int:
    """A job (task) of the store of `state`; a batch id shows that batch."""
    with open_store(state, to_read=True) as store:
        target = find_target(store, ident)
        if target.task is None:
            return show_status(state, batch_id=target.batch.id, json_out=json_out)
        orphaned = target.task.is_running and nobody_runs(store)
        view = task_view(target.task, store.events(task_id=target.task.id), orphaned=orphaned)
        state_dir = store.state_dir
    _print_job(view, json_out, state_dir=str(state_dir))
    return 0


def _print_job(view: TaskView, json_out: bool, **where: object) -> None:
    if json_out:
        write_json(view.as_json(**where))
    else:
        stages = [f"\n  {s['stage']:<11}{s['state']:<12}{s['time_s']:>8.2f} s  attempts {s['attempts']}"
                  for s in view.stages if s["state"] not in ("pending", "unused") or s["attempts"]]  # fmt: skip
        where = f"\n  node: {view.node}" if view.node else ""
        print(job_line(view) + where + "".join(stages) + _warning_lines(view)
              + "".join(f"\n  {fmt}: {path}" for fmt, path in view.outputs.items()))


def _warning_lines(view: TaskView) -> str:
    return "".join(f"\n  warning: {warning}" for warning in view.warnings)


def controller_status(ident: str, url: str, token: str | None, settings: Settings, *, json_out: bool) -> int:
    """`status ID --controller URL`: one job's status, or each job of a batch."""
    with client.connect(url, token, settings) as conn:
        kind, doc = client.job_or_batch(conn, ident)
    if kind == "job":
        _print_job(TaskView.from_api(doc, conn.url), json_out, controller=conn.url, job=doc)
        return 0
    jobs = list(doc.get("jobs") or [])
    views = [TaskView.from_api(j, conn.url) for j in jobs]
    if json_out:
        write_json({"batch_id": doc.get("id"), "controller": conn.url, "counts": doc.get("counts"),
                    "jobs": [v.as_json(controller=conn.url, job=j) for v, j in zip(views, jobs)]})  # fmt: skip
    else:
        counts = ", ".join(f"{k} {n}" for k, n in (doc.get("counts") or {}).items() if n)
        print(f"batch {doc.get('id')} on {conn.url}: {counts or 'no jobs'}"
              + "".join("\n" + job_line(v) + _warning_lines(v) for v in views))
    return 0
