"""The `scribefleet` command: the only place that prints or chooses exit codes.

Each command lives in its own module and only parses flags, calls jobs/ (or
the controller client), prints and picks the exit code by the one rule of
cli/edge.py: 0 all done; 1 a job (or the run) failed; 2 usage or options
error; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM).
"""

from __future__ import annotations

import sys

import typer

from scribefleet import __version__
from scribefleet.cli import batch, doctor, edge, handle, jobs, plan, serve, status, submit, transcribe, worker
from scribefleet.errors import ScribefleetError

app = typer.Typer(
    name="scribefleet",
    help="Media in, transcripts and subtitles out, on every device you have.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"scribefleet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Media in, transcripts and subtitles out, on every device you have."""


app.command()(transcribe.transcribe)
app.command()(status.status)
app.command()(doctor.doctor)
app.command()(serve.serve)
app.add_typer(plan.plan_app, name="plan")
app.command()(jobs.cancel)
app.command()(jobs.logs)
app.command()(batch.batch)
app.command()(submit.submit)
app.command()(submit.dispatch)
app.command()(worker.worker)
app.command()(handle.handle)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: whisper-style booleans accepted, then the app (which exits by the edge's rule)."""
    args = edge.whisper_booleans(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args, prog_name="scribefleet")
    except ScribefleetError as err:  # raised outside a command's body (a flag's callback)
        edge.render_error(err)
        sys.exit(edge.exit_code_of(err))
    except KeyboardInterrupt as err:
        edge.stderr_console().print("interrupted")
        sys.exit(edge.exit_code_of(err))


if __name__ == "__main__":
    main()
