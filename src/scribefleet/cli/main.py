"""The `scribefleet` command: the only place that prints or chooses exit codes.

Exit codes: 0 every job succeeded; 1 a job (or the run) failed; 2 usage error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from scribefleet import __version__
from scribefleet.cli import batch as batch_module
from scribefleet.cli import doctor as doctor_module
from scribefleet.cli import jobs as jobs_module
from scribefleet.cli import plan as plan_module
from scribefleet.cli import serve as serve_module
from scribefleet.cli import submit as submit_module
from scribefleet.errors import ScribefleetError
from scribefleet.options import FORMATS

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


@app.command()
def transcribe(
    inputs: list[str] = typer.Argument(..., metavar="INPUT...", help="Media files, folders (recursive) or globs."),
    out: Path = typer.Option(Path("out"), "--out", "-o", "--output_dir", "--output-dir", help="Folder for outputs and the resumable state (OUT/.scribefleet)."),
    model: str = typer.Option("tiny.en", "--model", "-m", help="A CTranslate2 model folder, a size name (small, large-v3), a Hugging Face repo id, or tiny.en (bundled, offline)."),
    language: Optional[str] = typer.Option(None, "--language", "-l", help="Spoken language: a code (en, de...) or name (german); auto (default) detects it across the file; auto-per-window per ~20 s."),
    task: str = typer.Option("transcribe", "--task", help="transcribe, or translate (to English)."),
    formats: str = typer.Option("all", "--format", "-f", "--output_format", help=f"Comma-separated from {','.join(FORMATS)}, or all."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda. cuda never falls back to the CPU."),
    compute_type: str = typer.Option("auto", "--compute-type", "--compute_type", help="auto, int8, int8_float16, float16, float32..."),
    batch_size: int = typer.Option(8, "--batch-size", "--batch_size", min=1, help="Batched inference width; 1 = sequential decoding."),
    vad: bool = typer.Option(True, "--vad/--no-vad", help="Skip silence with Silero VAD."),
    word_timestamps: bool = typer.Option(False, "--word-timestamps", "--word_timestamps", help="Add per-word timings (JSON words, TSV stays per segment)."),
    beam_size: int = typer.Option(5, "--beam-size", "--beam_size", min=1, help="Beam width."),
    initial_prompt: Optional[str] = typer.Option(None, "--initial-prompt", "--initial_prompt", help="Text that primes the first window (names, jargon)."),
    slots: Optional[int] = typer.Option(None, "--slots", min=1, help="Number of slots (default: one per GPU, else 1 CPU slot)."),
    force: bool = typer.Option(False, "--force", help="Redo every job, ignoring finished work and checkpoints."),
    json_out: bool = typer.Option(False, "--json", help="Print a machine-readable summary on stdout."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging (dispatch decisions, heartbeats)."),
) -> None:
    """Transcribe media files into subtitles and transcripts, resumably."""
    from scribefleet.cli.transcribe import TranscribeRequest, run_transcribe

    request = TranscribeRequest(
        inputs=inputs, out=out, slots=slots, force=force, json_out=json_out, verbose=verbose,
        options=dict(
            model=model, language=language, task=task, formats=formats, device=device,
            compute_type=compute_type, batch_size=batch_size, vad=vad,
            word_timestamps=word_timestamps, beam_size=beam_size, initial_prompt=initial_prompt,
        ),
    )
    raise typer.Exit(run_transcribe(request))


@app.command()
def status(
    target: Optional[str] = typer.Argument(None, metavar="[TARGET]", help="An OUT folder or state dir, a batch id or a job id (default: --state)."),
    batch: Optional[str] = typer.Option(None, "--batch", help="Batch id (default: the latest)."),
    state: Optional[Path] = typer.Option(None, "--state", help="Where ids are looked up without a controller: an OUT folder or state dir (default: out)."),
    controller: Optional[str] = typer.Option(None, "--controller", help="Ask this controller (default: SCRIBEFLEET_CONTROLLER) about a job or batch id."),
    token: Optional[str] = typer.Option(None, "--token", help="API token (default: SCRIBEFLEET_TOKEN)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a job, or each job of a batch: state, stage, attempts, error, outputs."""
    from scribefleet.cli.status import status_of

    raise typer.Exit(status_of(target, batch_id=batch, state=state, controller=controller, token=token, json_out=json_out))


app.command()(doctor_module.doctor)
app.command()(serve_module.serve)
app.add_typer(plan_module.plan_app, name="plan")
app.command()(jobs_module.cancel)
app.command()(jobs_module.logs)
app.command()(batch_module.batch)
app.command()(submit_module.submit)
app.command()(submit_module.dispatch)


def main() -> None:
    """Console-script entry point: turns ScribefleetError into a message and exit code 1."""
    try:
        app()
    except ScribefleetError as err:
        typer.secho(f"error [{err.code}]: {err.message}", err=True, fg=typer.colors.RED)
        sys.exit(1)


if __name__ == "__main__":
    main()
