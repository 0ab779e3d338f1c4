"""`scribefleet batch`: folders of media and media URLs through a controller, resumably (seed 001's run_batch.sh).

The work is `jobs.remote.run_remote_batch` (upload, poll, download, with the
state file `batch_state.json` that makes a re-run resume); this module parses
the flags and prints the summary.

Exit codes: 0 every file complete; 1 any failed (or the controller stayed away); 2 usage; 130 interrupted
(Ctrl-C); 143 terminated (SIGTERM): the state file is saved either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from scribefleet.cli import edge
from scribefleet.cli.render import write_json
from scribefleet.jobs.inputs import InputFile
from scribefleet.jobs.remote import BatchState, Stopped, input_keys, run_remote_batch


def batch(
    ctx: typer.Context,
    inputs: Annotated[list[str], typer.Option("--input", "-i", help="Folder of media files (walked recursively), or a media URL (a playlist: each entry); repeatable.")],
    controller: Annotated[Optional[str], typer.Option("--controller", parser=edge.text_value("--controller", "a controller URL"), help="Controller URL (default: SCRIBEFLEET_CONTROLLER).")] = None,
    token: Annotated[Optional[str], typer.Option("--token", parser=edge.text_value("--token", "an API token"), help="API token (default: SCRIBEFLEET_TOKEN, which ps does not show).")] = None,
    remote: Annotated[bool, typer.Option("--remote", help="Run each job on the controller's remote GPU worker (REMOTE_WORKER_MODE optional or required).")] = False,
    diarization: edge.Diarize = False,
    speakers: edge.Speakers = None,
    min_speakers: edge.MinSpeakers = None,
    max_speakers: edge.MaxSpeakers = None,
    model: edge.Model = "tiny.en",
    language: edge.Language = None,
    task: edge.Task = "transcribe",
    formats: edge.Formats = "all",
    state: Annotated[Optional[Path], typer.Option("--state", parser=edge.path_value("--state", "a state file"), help="State file (default: the first INPUT folder's batch_state.json, else OUT's).")] = None,
    parallel: Annotated[int, typer.Option("--parallel", "-p", min=1, help="Most jobs in flight at once.")] = 1,
    out: Annotated[Path, typer.Option("--out", "-o", parser=edge.path_value("--out"), help="Folder the outputs are downloaded to.")] = Path("out"),
    json_out: Annotated[bool, typer.Option("--json", help="Print the final state as JSON on stdout.")] = False,
) -> None:
    """Send folders of media and media URLs to a controller, resumably; download the outputs."""

    def body() -> int:
        options = edge.transcribe_options(model=model, language=language, task=task, formats=formats,
                                          diarize=diarization, speakers=speakers, min_speakers=min_speakers,
                                          max_speakers=max_speakers)  # fmt: skip
        console = edge.stderr_console()
        try:
            bstate, files = run_remote_batch(inputs, options, edge.settings_of(ctx), controller=controller, token=token,
                                             state_path=state, parallel=parallel, out=out, say=console.print,
                                             remote=remote)  # fmt: skip
        except Stopped:
            raise KeyboardInterrupt from None
        return _summarize(bstate, files, json_out, console)

    edge.run(body, resume_hint="the state file is saved; run the same command again to resume")


def _summarize(bstate: BatchState, files: list[InputFile], json_out: bool, console: Console) -> int:
    entries = {k: bstate.entry(k) for k in input_keys(files)}
    done = [k for k, e in entries.items() if e.get("status") == "complete" and e.get("downloaded")]
    bad = {k: e for k, e in entries.items() if k not in done}
    if json_out:
        doc = {"batchId": bstate.data.get("batchId"), "stateFile": str(bstate.path), "total": len(entries),
               "complete": len(done), "failed": len(bad), "files": entries}
        write_json(doc)
    console.print(f"{len(done)}/{len(entries)} complete, {len(bad)} not. State: {bstate.path}")
    for k, e in entries.items():  # as transcribe prints them: a file cut off completes, and says so only here
        for warning in e.get("warnings") or ():
            console.print(f"warning: {k}: {warning}", style="yellow", markup=False, highlight=False)
    if bad:
        table = Table(title="Files not complete")
        for col in ("file", "status", "code", "message"):
            table.add_column(col, overflow="fold")
        for k, e in bad.items():
            table.add_row(k, str(e.get("status")), e.get("lastErrorCode") or "", e.get("lastErrorMessage") or "")
        console.print(table)
    return 1 if bad else 0
