"""`scribefleet plan check|run`: a plan file validated, shown as its graph, and run resumably.

`plan check` loads the plan (plans/), adds the checks that need the whole graph
(two tasks writing one file, an aggregate with nothing to combine) and prints
the expanded graph, or every problem as `file:line: task 'id': message`.

`plan run` turns each PlanTask into a store task (jobs/plans.py: runtime
specs, per-kind timeouts, resources) and then works like `transcribe`: under
the dispatcher lock it finds the plan's batch again (same plan file and same
graph), revises tasks whose spec changed, queues again what failed, was
skipped or canceled or lost its outputs, and runs the dispatcher in burst
mode until every task has ended (jobs.run.run_plan). State lives in `.scribefleet` beside the plan
file unless `--state` says otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from scribefleet.cli import edge
from scribefleet.cli.progress import BatchProgress
from scribefleet.cli.render import report_outcome
from scribefleet.errors import PlanInvalid, UsageError
from scribefleet.fsio import make_dir
from scribefleet.jobs.plans import check_graph, expand_playlists
from scribefleet.jobs.run import run_plan
from scribefleet.logs import setup_logging
from scribefleet.plans import Plan, load_plan
from scribefleet.plans.source import Problem

DEVICES = ("auto", "cpu", "cuda")


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
    """load_plan, playlists expanded, plus the checks of the whole graph that `plan run` relies on."""
    plan = expand_playlists(load_plan(path, overrides=overrides))
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
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(metavar="FILE", help="A plan: YAML, or Markdown with a ```yaml block.")],
    var: Annotated[list[str], typer.Option("--var", metavar="NAME=VALUE", help=VAR_HELP)] = [],  # noqa: B006 - typer's list default
    state: Annotated[Optional[Path], typer.Option("--state", parser=edge.path_value("--state"), help="State dir (default: .scribefleet beside the plan file).")] = None,
    slots: Annotated[Optional[int], typer.Option("--slots", min=1, help="Number of slots (default: one per GPU, else 1 CPU slot); no more than the machine holds (memory, 2 per core, 26 per GPU), with a warning.")] = None,
    device: edge.Device = "auto",
    engine: edge.EngineName = None,
    ray_address: edge.RayAddress = None,
    slots_per_gpu: edge.SlotsPerGpu = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging (dispatch decisions, heartbeats).")] = False,
) -> None:
    """Run a plan resumably: finished tasks are skipped, failed ones run again."""

    def body() -> int:
        if device not in DEVICES:
            raise UsageError(f"--device {device!r}: choose auto, cpu or cuda")
        console = edge.stderr_console()
        try:
            plan = load_checked(path, _vars(var))
        except PlanInvalid as err:
            print_invalid(err, Console(stderr=True))
            return 1
        settings = edge.with_engine(ctx, engine, ray_address, slots_per_gpu)
        state_dir = (state.expanduser() if state else plan.base_dir / ".scribefleet").absolute()
        make_dir(state_dir)
        progress = BatchProgress(console, json_mode=json_out, log_every_s=settings.progress_log_s)
        setup_logging(state_dir / "logs" / "scribefleet.log", verbose=verbose, console=progress.log_handler(verbose),
                      max_mb=settings.log_max_mb, backups=settings.log_backups)  # fmt: skip
        store, batch_id = run_plan(plan, state_dir, settings, device=device, slots=slots,
                                   listeners=[progress.on_event], watch=progress.live)  # fmt: skip
        line = f"plan {plan.name}: {{done}}/{{total}} tasks done, {{failed}}. State: {state_dir}"
        return report_outcome(console, store.tasks(batch_id=batch_id), line=line, json_out=json_out,
                              plan=str(plan.source), batch_id=batch_id, state_dir=str(state_dir))  # fmt: skip

    edge.run(body)
