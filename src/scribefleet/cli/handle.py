"""`scribefleet handle FILE.json|-`: run one seed 003 job here and print its output JSON.

The input is seed 003's job JSON (`{"input": {"youtube_url", "request_id",
"s3_bucket", ...}}`, serverless/handler.py); the output is the handler's JSON
on stdout, exit 0 when its status is "done", else 1; a job file that cannot be read or is not JSON
prints the seed's error JSON too (exit 2 for INVALID_OPTIONS).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from scribefleet.cli import edge
from scribefleet.cli.render import write_json
from scribefleet.errors import InputNotFound, ScribefleetError, UsageError
from scribefleet.jobs.seed003 import error_output
from scribefleet.logs import setup_logging


def handle(
    ctx: typer.Context,
    job_file: Annotated[str, typer.Argument(metavar="FILE.json|-", help="Seed 003's job JSON; - reads stdin.")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run one serverless job (seed 003: a media URL in, an SRT in S3 out) and print its output JSON."""

    def body() -> int:
        # imported here: the pipeline (numpy, PyAV) is not loaded by every other command, `serve` included
        from scribefleet.serverless.handler import Worker

        settings = edge.settings_of(ctx)
        try:
            payload = _read_job(job_file)
        except ScribefleetError as err:  # stdout is the seed's JSON whatever happens, for a caller that parses it
            write_json(error_output(None, err.code, err.message))
            raise
        setup_logging(settings.state_dir / "serverless" / "logs" / "handler.log", verbose=verbose,
                      max_mb=settings.log_max_mb, backups=settings.log_backups)  # fmt: skip
        result = Worker(settings).handle(payload)
        write_json(result)
        return 0 if result.get("status") == "done" else 1

    edge.run(body)


def _read_job(job_file: str) -> object:
    """The job JSON of a file or stdin; INPUT_NOT_FOUND or INVALID_OPTIONS (not UTF-8, not JSON)."""
    try:
        raw = sys.stdin.read() if job_file == "-" else Path(job_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputNotFound(f"cannot read {job_file}: {exc.strerror}", input=job_file) from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{job_file} is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"{job_file} is not JSON: {exc}") from exc
