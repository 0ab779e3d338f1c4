"""`scribefleet cancel` and `scribefleet logs`: act on one batch or task of a state dir.

Both take a state dir (an OUT folder or the `.scribefleet` folder itself) and
an id: a batch id, a task id, or a task's key (a plan task id such as
`transcribe:fox`, or a transcribe input's path), looked up in the newest
batch that has it.

cancel: queued tasks become CANCELED at once; a running task is killed by the
dispatcher that runs it (within `cancel_poll_s`), or, when no dispatcher
holds the state dir, the cancel is applied right here. Either way the
dependents are SKIPPED. The command waits for the targets to end and prints
their states.

logs: a task's events (ISO times), the dispatcher's and slots' log lines that
name it, and its own log file (a shell command's output); a batch's events and
the dispatcher log lines of its runs. `--follow` keeps printing new events
(and a task's new output) until the target has ended.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TextIO

import typer

from scribefleet.errors import InputNotFound, UsageError
from scribefleet.store.models import iso_ms

POLL_S = 0.2
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) ")
_BATCH_START = re.compile(r"\bbatch ([0-9a-f]{12}): ")


@dataclass
class Target:
    """What an id named: a whole batch, or one task of it."""

    batch: Any
    task: Any | None  # None: the whole batch

    @property
    def id(self) -> str:
        return str(self.task.id if self.task is not None else self.batch.id)

    def tasks(self, store: Any) -> list[Any]:
        if self.task is not None:
            found = store.task(self.task.id)
            return [found] if found is not None else []
        return store.tasks(batch_id=self.batch.id)


def open_store(state: Path) -> Any:
    """The store of an OUT folder or state dir; INPUT_NOT_FOUND when there is none."""
    from scribefleet.cli.status import state_dir_of
    from scribefleet.store.store import Store

    state_dir = state_dir_of(Path(state).expanduser())
    if not (state_dir / "store.sqlite").is_file():
        raise InputNotFound(
            f"no scribefleet state in {state} (looked for {state_dir}/store.sqlite); pass the OUT folder of "
            "a transcribe run or the state dir of a plan run (.scribefleet beside the plan) with --state",
            state=str(state),
        )  # fmt: skip
    return Store.open(state_dir)


def find_target(store: Any, ident: str) -> Target:
    """The batch or task `ident` names: an id, else a task key in the newest batch that has it."""
    task = store.task(ident)
    if task is not None:
        return Target(store.batch(task.batch_id), task)
    batch = store.batch(ident)
    if batch is not None:
        return Target(batch, None)
    for batch in sorted(store.batches(), key=lambda b: b.created_at, reverse=True):
        for task in store.tasks(batch_id=batch.id):
            if task.key == ident:
                return Target(batch, task)
    raise UsageError(
        f"no batch, task or task key {ident!r} in {store.state_dir}; 'scribefleet status' lists them", id=ident
    )


# -- cancel ----------------------------------------------------------------------


def cancel_target(state: Path, ident: str, *, wait_s: float = 10.0, out: TextIO = sys.stdout) -> int:
    """Cancel a batch or task of the state dir and report what became of it; returns the exit code."""
    from scribefleet.config import Settings
    from scribefleet.dispatch import request_cancel

    settings = Settings()
    store = open_store(state)
    target = find_target(store, ident)
    open_tasks = [t for t in target.tasks(store) if not t.is_terminal]
    what = f"task {target.task.key}" if target.task is not None else f"batch {target.batch.id}"
    if not open_tasks:
        out.write(f"nothing to cancel: {what} has already ended\n")
        return 0
    applied = request_cancel(store, target.id, settings)
    if not applied:
        out.write(f"cancel of {what} requested; the running dispatcher applies it\n")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not all(t.is_terminal for t in _refresh(store, open_tasks)):
            time.sleep(POLL_S)  # another process changes the store; there is nothing to wait on but it
    ended = _refresh(store, open_tasks)
    for t in ended:
        code = f" [{t.error_code}]" if t.error_code else ""
        out.write(f"{t.key}: {t.state.value}{code}\n")
    late = [t.key for t in ended if not t.is_terminal]
    if late:
        out.write(f"not ended after {wait_s:g} s (the dispatcher will still apply it): {', '.join(late)}\n")
    return 0


def _refresh(store: Any, tasks: list[Any]) -> list[Any]:
    return [store.task(t.id) or t for t in tasks]


# -- logs ------------------------------------------------------------------------


def _event_line(event: Any, keys: dict[str, str]) -> str:
    who = keys.get(event.task_id or "", "(batch)")
    shown = {k: [keys.get(n, n) for n in v] if k == "needs" else v for k, v in event.data.items()}
    data = " ".join(f"{k}={v}" for k, v in shown.items())
    return f"{iso_ms(event.at)}  {who}  {event.type}{'  ' + data if data else ''}"


def _log_files(path: Path) -> list[Path]:
    """A rotating log and its backups, oldest first."""
    backups = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    return [p for p in (*backups, path) if p.is_file()]


def _records(paths: list[Path]) -> Iterator[str]:
    """Log records of files, a traceback or stderr tail kept with the line that began it."""
    for path in paths:
        record: list[str] = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if _STAMP.match(line) and record:
                yield "\n".join(record)
                record = []
            if _STAMP.match(line) or record:
                record.append(line)
        if record:
            yield "\n".join(record)


def batch_log_lines(state_dir: Path, batch_id: str) -> list[str]:
    """Dispatcher log records of the runs of one batch (from its `batch <id>:` line to another batch's)."""
    current: str | None = None
    lines = []
    for record in _records(_log_files(state_dir / "logs" / "scribefleet.log")):
        started = _BATCH_START.search(record.split("\n", 1)[0])
        if started:
            current = started.group(1)
        if current == batch_id or batch_id in record:
            lines.append(record)
    return lines


def task_log_lines(state_dir: Path, task: Any) -> list[str]:
    """Dispatcher and slot log records that name the task (by key or id), in time order."""
    mention = re.compile(rf"\btask (?:{re.escape(task.key)}|{re.escape(task.id)})(?=[\s:,;)]|$)")
    records = [r for r in batch_log_lines(state_dir, task.batch_id) if mention.search(r.split("\n", 1)[0])]
    for slot_log in sorted((state_dir / "logs").glob("slot-*.log")):
        records += [r for r in _records(_log_files(slot_log)) if mention.search(r.split("\n", 1)[0])]
    return sorted(records, key=lambda r: r[:24])


def show_logs(state: Path, ident: str, *, follow: bool = False, out: TextIO = sys.stdout) -> int:
    """Print a task's or a batch's log; with follow, keep printing until it has ended."""
    store = open_store(state)
    target = find_target(store, ident)
    keys = {t.id: t.key for t in store.tasks(batch_id=target.batch.id)}
    events = store.events(task_id=target.task.id) if target.task is not None else store.events(batch_id=target.batch.id)
    if target.task is not None:
        _task_header(store, target.task, out)
        lines = task_log_lines(store.state_dir, target.task)
    else:
        _batch_header(store, target.batch, out)
        lines = batch_log_lines(store.state_dir, target.batch.id)
    out.write("-- events --\n" + "".join(_event_line(e, keys) + "\n" for e in events))
    out.write(f"-- log ({store.state_dir / 'logs'}) --\n" + "".join(line + "\n" for line in lines))
    offset = 0
    if target.task is not None:
        path = store.task_log_path(target.task)
        out.write(f"-- output ({path}) --\n")
        offset = _copy_new(path, 0, out)
    out.flush()
    if follow:
        _follow(store, target, keys, events[-1].id if events else 0, offset, out)
    return 0


def _task_header(store: Any, task: Any, out: TextIO) -> None:
    error = f", {task.error_code}: {task.error_message}" if task.error_code else ""
    out.write(
        f"task {task.id} {task.key} ({task.kind}) of batch {task.batch_id}: {task.state.value}, "
        f"attempt {task.attempts}/{task.max_attempts}, timeout {task.timeout_s:g} s{error}\n"
    )


def _batch_header(store: Any, batch: Any, out: TextIO) -> None:
    counts = ", ".join(f"{s.value} {n}" for s, n in store.counts(batch.id).items() if n)
    jsonl = store.batch_dir(batch.id) / "events.jsonl"
    out.write(f"batch {batch.id} ({batch.kind}) created {iso_ms(batch.created_at)}: {counts or 'no tasks'}; events also in {jsonl}\n")


def _copy_new(path: Path, offset: int, out: TextIO) -> int:
    """Write what `path` holds past `offset`; the new offset."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return offset
    out.write(data.decode(errors="replace"))
    return offset + len(data)


def _follow(store: Any, target: Target, keys: dict[str, str], after_id: int, offset: int, out: TextIO) -> None:
    path = store.task_log_path(target.task) if target.task is not None else None
    while True:
        done = all(t.is_terminal for t in target.tasks(store))
        task_id = target.task.id if target.task is not None else None
        for event in store.events(batch_id=target.batch.id, task_id=task_id, after_id=after_id):
            keys.setdefault(event.task_id or "", str(event.data.get("key", event.task_id)))
            out.write(_event_line(event, keys) + "\n")
            after_id = event.id
        if path is not None:
            offset = _copy_new(path, offset, out)
        out.flush()
        if done:
            return
        time.sleep(POLL_S)  # the dispatcher is another process; the store is polled like `status` would


# -- the commands ----------------------------------------------------------------

STATE_HELP = "An OUT folder or a state dir (a plan's is .scribefleet beside the plan file)."
CONTROLLER_HELP = "A job or batch id of this controller (default: SCRIBEFLEET_CONTROLLER, unless --state is given)."


def cancel(
    ident: str = typer.Argument(..., metavar="ID", help="A batch id, a task id, or a task key (plan task id)."),
    state: Optional[Path] = typer.Option(None, "--state", help=STATE_HELP + " Default: out."),
    controller: Optional[str] = typer.Option(None, "--controller", help=CONTROLLER_HELP),
    token: Optional[str] = typer.Option(None, "--token", help="API token (default: SCRIBEFLEET_TOKEN)."),
) -> None:
    """Cancel a batch or a task: queued tasks at once, running ones killed by their dispatcher."""
    from scribefleet.cli.submit import controller_cancel, pick_controller

    url, settings = pick_controller(controller, state)
    if url:
        raise typer.Exit(controller_cancel(ident, url, token, settings))
    raise typer.Exit(cancel_target(state or Path("out"), ident))


def logs(
    ident: str = typer.Argument(..., metavar="ID", help="A batch id, a task id, or a task key (plan task id)."),
    state: Optional[Path] = typer.Option(None, "--state", help=STATE_HELP + " Default: out."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events and output until it has ended."),
    controller: Optional[str] = typer.Option(None, "--controller", help=CONTROLLER_HELP),
    token: Optional[str] = typer.Option(None, "--token", help="API token (default: SCRIBEFLEET_TOKEN)."),
) -> None:
    """Print a task's events, log lines and output, or a batch's events and dispatcher log."""
    from scribefleet.cli.submit import controller_logs, pick_controller

    url, settings = pick_controller(controller, state)
    if url:
        raise typer.Exit(controller_logs(ident, url, token, settings, follow=follow))
    raise typer.Exit(show_logs(state or Path("out"), ident, follow=follow))
