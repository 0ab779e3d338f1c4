"""`scribefleet cancel` and `scribefleet logs`: act on one batch or task of a state dir, or of a controller.

Both take an id: a batch id, a job (task) id, a task key (a plan task id such
as `transcribe:fox`, or a transcribe input's path), or the name `status`
shows for a job (jobs/lookup.py).

cancel: queued tasks become CANCELED at once; a running task is killed by the
dispatcher that runs it (within `cancel_poll_s`), or, when no dispatcher
holds the state dir, the cancel is applied right here. Either way the
dependents are SKIPPED. The command waits for the targets to end and prints
their states.

logs: a task's events (ISO times), the dispatcher's and slots' log lines that
name it, and its own log file (a shell command's output); a batch's events and
the dispatcher log lines of its runs. `--follow` keeps printing new events
(and a task's new output) until the target has ended. `--tail N` keeps the last
N lines of each part (events, log lines, output; with a controller, of each
job's history), as `tail -n N`; with `--follow`, what comes after them follows.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional, TextIO

import typer

from scribefleet import client
from scribefleet.cli import edge
from scribefleet.cli.render import job_line
from scribefleet.config import Settings
from scribefleet.jobs import lookup
from scribefleet.jobs.views import TaskView
from scribefleet.masking import redact
from scribefleet.store.models import TERMINAL_STATUSES, iso_ms
from scribefleet.store.store import Store

STATE_HELP = "An OUT folder or a state dir (a plan's is .scribefleet beside the plan file). Default: out."
CONTROLLER_HELP = "A job or batch id of this controller (default: SCRIBEFLEET_CONTROLLER, unless --state is given)."
IDENT_HELP = "A batch id, a job id, a task key (plan task id) or the job name 'status' shows."


def cancel(
    ctx: typer.Context,
    ident: Annotated[str, typer.Argument(metavar="ID", help=IDENT_HELP)],
    state: Annotated[Optional[Path], typer.Option("--state", parser=edge.path_value("--state"), help=STATE_HELP)] = None,
    controller: Annotated[Optional[str], typer.Option("--controller", parser=edge.text_value("--controller", "a controller URL"), help=CONTROLLER_HELP)] = None,
    token: Annotated[Optional[str], typer.Option("--token", parser=edge.text_value("--token", "an API token"), help=edge.TOKEN_HELP)] = None,
) -> None:
    """Cancel a batch or a task: queued tasks at once, running ones killed by their dispatcher."""

    def body() -> int:
        settings = edge.settings_of(ctx)
        url = edge.pick_controller(controller, state, settings)
        if url:
            with client.connect(url, token, settings) as conn:
                jobs = client.cancel(conn, ident)
            print("\n".join(job_line(TaskView.from_api(j, conn.url)) for j in jobs))
            return 0
        return cancel_local(state or Path("out"), ident, settings)

    edge.run(body)


def cancel_local(state: Path, ident: str, settings: Settings, *, wait_s: float = 10.0, out: TextIO = sys.stdout) -> int:
    """Cancel a batch or task of the state dir and report what became of it."""
    with lookup.open_store(state) as store:
        target = lookup.find_target(store, ident)
        ended = lookup.cancel(store, target, settings, wait_s=wait_s)
    if ended is None:
        out.write(f"nothing to cancel: {target.what} has already ended\n")
        return 0
    for t in ended:
        code = f" [{t.error_code}]" if t.error_code else ""
        out.write(f"{t.key}: {t.state.value}{code}\n")
    late = [t.key for t in ended if not t.is_terminal]
    if late:
        out.write(f"not ended after {wait_s:g} s (the dispatcher will still apply it): {', '.join(late)}\n")
    return 0


def logs(
    ctx: typer.Context,
    ident: Annotated[str, typer.Argument(metavar="ID", help=IDENT_HELP)],
    state: Annotated[Optional[Path], typer.Option("--state", parser=edge.path_value("--state"), help=STATE_HELP)] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events and output until it has ended.")] = False,
    tail: Annotated[Optional[int], typer.Option("--tail", "-n", min=0, help="Only the last N lines of each part (events, log lines, output; each job's history with a controller); with --follow, then what follows.")] = None,
    controller: Annotated[Optional[str], typer.Option("--controller", parser=edge.text_value("--controller", "a controller URL"), help=CONTROLLER_HELP)] = None,
    token: Annotated[Optional[str], typer.Option("--token", parser=edge.text_value("--token", "an API token"), help=edge.TOKEN_HELP)] = None,
) -> None:
    """Print a task's events, log lines and output, or a batch's events and dispatcher log."""

    def body() -> int:
        settings = edge.settings_of(ctx)
        url = edge.pick_controller(controller, state, settings)
        if url:
            return controller_logs(ident, url, token, settings, follow=follow, tail=tail)
        with lookup.open_store(state or Path("out"), to_read=True) as store:
            return show_logs(store, ident, follow=follow, tail=tail)

    edge.run(body)


def show_logs(store: Store, ident: str, *, follow: bool = False, tail: int | None = None,
              out: TextIO = sys.stdout) -> int:
    """Print a task's or a batch's log (`tail`: the last lines of each part); with follow, keep printing until it
    has ended."""
    target = lookup.find_target(store, ident)
    keys = {t.id: t.key for t in store.tasks(batch_id=target.batch.id)}
    if target.task is not None:
        task = target.task
        error = f", {task.error_code}: {task.error_message}" if task.error_code else ""
        out.write(f"task {task.id} {redact(task.key)} ({task.kind}) of batch {task.batch_id}: {task.state.value}, "
                  f"attempt {task.attempts}/{task.max_attempts}, timeout {task.timeout_s:g} s{error}\n")  # fmt: skip
        events = store.events(task_id=task.id)
        lines = lookup.task_log_lines(store, task)
    else:
        batch = target.batch
        counts = ", ".join(f"{s.value} {n}" for s, n in store.counts(batch.id).items() if n)
        jsonl = store.batch_dir(batch.id) / "events.jsonl"
        out.write(f"batch {batch.id} ({batch.kind}) created {iso_ms(batch.created_at)}: {counts or 'no tasks'}; events also in {jsonl}\n")
        events = store.events(batch_id=batch.id)
        lines = lookup.batch_log_lines(store.state_dir, batch.id)
    shown = [lookup.event_line(e, keys) for e in events]
    out.write(f"-- events{_cut(len(shown), tail)} --\n" + "".join(line + "\n" for line in _last(shown, tail)))
    records = [line for record in lines for line in record.split("\n")]  # a traceback counts its own lines
    out.write(f"-- log ({store.state_dir / 'logs'}){_cut(len(records), tail)} --\n"
              + "".join(line + "\n" for line in _last(records, tail)))  # fmt: skip
    offset = 0
    if target.task is not None:
        path = store.task_log_path(target.task)
        if tail is None:
            out.write(f"-- output ({path}) --\n")
            offset = _copy_new(path, 0, out)
        else:
            text, offset = _read_from(path, 0)
            output = text.splitlines(keepends=True)
            out.write(f"-- output ({path}){_cut(len(output), tail)} --\n" + "".join(_last(output, tail)))
    out.flush()
    if follow:
        _follow(store, target, keys, events[-1].id if events else 0, offset, out)
    return 0


def _last(lines: list[str], tail: int | None) -> list[str]:
    """The last `tail` of `lines` (all of them for None; none for 0)."""
    return lines if tail is None else lines[len(lines) - min(tail, len(lines)):]


def _cut(total: int, tail: int | None) -> str:
    """What a part's heading says when --tail leaves lines out."""
    return f" (last {tail} of {total} lines)" if tail is not None and total > tail else ""


def _read_from(path: Path, offset: int) -> tuple[str, int]:
    """What `path` holds past `offset`, and the offset after it (nothing for a file not there yet)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return "", offset
    return data.decode(errors="replace"), offset + len(data)


def _copy_new(path: Path, offset: int, out: TextIO) -> int:
    """Write what `path` holds past `offset`; the new offset."""
    text, offset = _read_from(path, offset)
    out.write(text)
    return offset


def _follow(store: Store, target: lookup.Target, keys: dict[str, str], after_id: int, offset: int, out: TextIO) -> None:
    path = store.task_log_path(target.task) if target.task is not None else None
    while True:
        done = all(t.is_terminal for t in target.tasks(store))
        task_id = target.task.id if target.task is not None else None
        for event in store.events(batch_id=target.batch.id, task_id=task_id, after_id=after_id):
            keys.setdefault(event.task_id or "", str(event.data.get("key", event.task_id)))
            out.write(lookup.event_line(event, keys) + "\n")
            after_id = event.id
        if path is not None:
            offset = _copy_new(path, offset, out)
        out.flush()
        if done:
            return
        time.sleep(lookup.POLL_S)  # the dispatcher is another process; the store is polled like `status` would


def controller_logs(ident: str, url: str, token: str | None, settings: Settings, *, follow: bool,
                    tail: int | None = None) -> int:
    """`logs ID --controller URL`: a job's whole history (each job's, for a batch; `tail`: its last lines);
    --follow until it ends."""
    with client.connect(url, token, settings) as conn:
        kind, doc = client.job_or_batch(conn, ident)
        jobs = [doc] if kind == "job" else list(doc.get("jobs") or [])
        seen: set[str] = set()
        for job in jobs:
            if kind == "batch":
                sys.stdout.write(f"== job {job['id']} ({job.get('filename')}): {job.get('status')} ==\n")
            seen = _write_new(conn.logs(job["id"]), set(), tail)
        if follow and kind == "job":
            backoff = client.Backoff(settings.controller_poll_min_s, settings.controller_poll_max_s)
            while doc.get("status") not in TERMINAL_STATUSES:
                time.sleep(backoff.next())
                doc = conn.job(ident)
                before = len(seen)
                seen = _write_new(conn.logs(ident), seen)
                if len(seen) != before:
                    backoff.reset()
    return 0


def _write_new(text: str, seen: set[str], tail: int | None = None) -> set[str]:
    """Print the lines of `text` not printed before (the history is regrouped, not only appended); `tail`: only
    the last of them, the others counted as seen."""
    fresh = [line for line in text.splitlines() if line not in seen]
    sys.stdout.write("".join(line + "\n" for line in _last(fresh, tail)))
    sys.stdout.flush()
    return seen | set(fresh)
