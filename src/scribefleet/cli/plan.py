"""`scribefleet plan check|run`: a plan file validated, shown as its graph, and run resumably.

`plan check` loads the plan (plans/), adds the checks that need the whole graph
(two tasks writing one file, an aggregate with nothing to combine) and prints
the expanded graph, or every problem as `file:line: task 'id': message`.

`plan run` turns each PlanTask into a store task (plan_tasks.py: runtime
specs, per-kind timeouts, resources) and then works like `transcribe`: under
the dispatcher lock it finds the plan's batch again (same plan file and same
graph), revises tasks whose spec changed, queues again what failed, was
skipped or canceled or lost its outputs, and runs the dispatcher in burst
mode until every task has ended. State lives in `.scribefleet` beside the plan
file unless `--state` says otherwise.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from scribefleet.config import Settings
from scribefleet.errors import PlanInvalid, ScribefleetError, UsageError
from scribefleet.logs import setup_logging
from scribefleet.plans import Plan, load_plan

log = logging.getLogger("scribefleet.cli")

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class PlanRequest:
    """What `plan run` was asked for."""

    path: Path
    overrides: dict[str, str] = field(default_factory=dict)
    state: Path | None = None
    slots: int | None = None
    device: str = "auto"
    json_out: bool = False
    verbose: bool = False


def parse_vars(pairs: list[str]) -> dict[str, str]:
    """`--var name=value` pairs as a mapping; UsageError for a pair without `=`."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name.strip():
            raise UsageError(f"--var {pair!r}: write NAME=VALUE, e.g. --var out=/data/out")
        out[name.strip()] = value
    return out


def print_invalid(err: PlanInvalid, console: Console) -> None:
    """Every problem of a PlanInvalid, one per line, compiler style."""
    from scribefleet.plans.source import Problem

    path = Path(str(err.details.get("path") or "plan"))
    problems = err.details.get("problems") or []
    count = len(problems)
    console.print(
        f"[red]error [PLAN_INVALID]:[/red] plan {path} is invalid ({count} problem{'s' if count != 1 else ''}):",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    for p in problems:
        line = Problem(p["message"], p.get("line"), p.get("task")).render(path.name)
        console.print("  " + line, markup=False, highlight=False, soft_wrap=True)


def load_checked(path: Path, overrides: dict[str, str]) -> Plan:
    """load_plan plus the checks of the whole graph that `plan run` relies on."""
    from scribefleet.cli.plan_tasks import check_graph

    plan = load_plan(path, overrides=overrides)
    check_graph(plan)
    return plan


def check_plan(path: Path, overrides: dict[str, str]) -> int:
    """`scribefleet plan check`: print the expanded graph (0) or every problem (1)."""
    try:
        plan = load_checked(path, overrides)
    except PlanInvalid as err:
        print_invalid(err, Console(stderr=True))
        return 1
    sys.stdout.write(plan.render() + "\n")
    return 0


def run_plan(req: PlanRequest) -> int:
    """`scribefleet plan run`: returns the exit code."""
    err_console = Console(stderr=True)
    if req.device not in DEVICES:
        err_console.print(f"[red]error [INVALID_OPTIONS]:[/red] --device {req.device!r}: choose auto, cpu or cuda")
        return 2
    try:
        plan = load_checked(req.path, req.overrides)
    except PlanInvalid as err:
        print_invalid(err, err_console)
        return 1
    settings = Settings()
    state_dir = (req.state.expanduser() if req.state else plan.base_dir / ".scribefleet").absolute()
    state_dir.mkdir(parents=True, exist_ok=True)
    from scribefleet.cli.progress import BatchProgress

    progress = BatchProgress(err_console, json_mode=req.json_out)
    setup_logging(state_dir / "logs" / "scribefleet.log", verbose=req.verbose,
                  console=progress.log_handler(req.verbose), max_mb=settings.log_max_mb,
                  backups=settings.log_backups)  # fmt: skip
    try:
        return _run(req, plan, settings, state_dir, progress, err_console)
    except ScribefleetError as err:
        log.error("plan run failed [%s]: %s", err.code, err.message)
        err_console.print(f"[red]error [{err.code}]:[/red] {escape(err.message)}", highlight=False, soft_wrap=True)
        return 2 if isinstance(err, UsageError) else 1


def _run(req: PlanRequest, plan: Plan, settings: Settings, state_dir: Path, progress: Any, console: Console) -> int:
    from scribefleet.cli.plan_tasks import create_plan_batch, store_tasks
    from scribefleet.cli.transcribe import dispatch_batch
    from scribefleet.dispatch.lock import DispatcherLock
    from scribefleet.store.store import Store
    from scribefleet.worker.hardware import detect_hardware, plan_slots

    store = Store.open(state_dir)
    lock = DispatcherLock(state_dir)
    lock.acquire()  # before touching the batch: another run may be dispatching from this state dir
    try:
        slots = plan_slots(detect_hardware(settings), req.device, req.slots, settings)
        tasks = store_tasks(plan, settings, state_dir, gpu_slots=any(s.device == "cuda" for s in slots))
        batch_id = create_plan_batch(store, plan, tasks)
        rows = store.tasks(batch_id=batch_id)
        pending = [t for t in rows if not t.is_terminal]
        log.info(
            "batch %s: plan %s (%s), %d tasks, %d to do, state %s",
            batch_id, plan.name, plan.source, len(rows), len(pending), state_dir,
        )  # fmt: skip
        if pending:
            if req.slots is None:
                slots = slots[: max(1, len(pending))]  # no point warming more slots than there is work
            dispatch_batch(store, settings, state_dir, slots, batch_id, rows, progress, lock)
    finally:
        lock.release()
    return summarize(store, batch_id, plan, state_dir, req.json_out, console)


def summarize(store: Any, batch_id: str, plan: Plan, state_dir: Path, json_out: bool, console: Console) -> int:
    """Print the run's outcome (and the JSON summary with --json); 0 when every task completed."""
    from scribefleet.cli.status import report_outcome

    line = f"plan {plan.name}: {{done}}/{{total}} tasks done, {{failed}} failed. State: {state_dir}"
    return report_outcome(console, store.tasks(batch_id=batch_id), line=line, json_out=json_out,
                          plan=str(plan.source), batch_id=batch_id, state_dir=str(state_dir))  # fmt: skip


# -- the commands ----------------------------------------------------------------

plan_app = typer.Typer(help="Validate and run plan files: graphs of transcribe, shell, llm and aggregate tasks.",
                       no_args_is_help=True)  # fmt: skip
VAR_HELP = "Set a plan variable, overriding its value in the file (repeatable)."


def _vars(pairs: list[str]) -> dict[str, str]:
    try:
        return parse_vars(pairs)
    except UsageError as err:
        raise typer.BadParameter(err.message, param_hint="--var") from err


@plan_app.command("check")
def check_command(
    path: Path = typer.Argument(..., metavar="FILE", help="A plan: YAML, or Markdown with a ```yaml block."),
    var: list[str] = typer.Option([], "--var", metavar="NAME=VALUE", help=VAR_HELP),
) -> None:
    """Validate a plan and print its expanded task graph; every problem with its line otherwise."""
    raise typer.Exit(check_plan(path, _vars(var)))


@plan_app.command("run")
def run_command(
    path: Path = typer.Argument(..., metavar="FILE", help="A plan: YAML, or Markdown with a ```yaml block."),
    var: list[str] = typer.Option([], "--var", metavar="NAME=VALUE", help=VAR_HELP),
    state: Optional[Path] = typer.Option(None, "--state", help="State dir (default: .scribefleet beside the plan file)."),
    slots: Optional[int] = typer.Option(None, "--slots", min=1, help="Number of slots (default: one per GPU, else 1 CPU slot)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda. cuda never falls back to the CPU."),
    json_out: bool = typer.Option(False, "--json", help="Print a machine-readable summary on stdout."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging (dispatch decisions, heartbeats)."),
) -> None:
    """Run a plan resumably: finished tasks are skipped, failed ones run again."""
    request = PlanRequest(path=path, overrides=_vars(var), state=state, slots=slots, device=device,
                          json_out=json_out, verbose=verbose)  # fmt: skip
    raise typer.Exit(run_plan(request))
