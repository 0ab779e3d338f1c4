"""`scribefleet serve`: the controller (HTTP API, web UI, dispatcher and local slots) on uvicorn.

Order of start: settings and flags, logging into STATE/logs, the
authentication check (tokens configured, or auth switched off on loopback
only; exit code 2 otherwise), the Controller (it takes the state folder's
dispatcher lock, so a second controller on the same folder stops here with
STATE_LOCKED, and starts the slots in its dispatcher thread), then uvicorn.
Ctrl-C or SIGTERM stops uvicorn first, then the controller: running jobs are
left to the next start, which recovers and finishes them, as it does after a
`kill -9`.

The CLI author registers it with `app.command()(serve)`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from scribefleet.cli import edge
from scribefleet.config import Settings
from scribefleet.errors import ScribefleetError, UsageError
from scribefleet.logs import setup_logging

log = logging.getLogger("scribefleet.serve")


def serve(
    ctx: typer.Context,
    host: Optional[str] = typer.Option(None, "--host", help="Address to listen on (default SCRIBEFLEET_HOST, 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", min=0, max=65535, help="Port (default SCRIBEFLEET_PORT, 8476)."),
    state: Optional[Path] = typer.Option(None, "--state", help="State folder (default SCRIBEFLEET_STATE_DIR, ./scribefleet-data)."),
    slots: Optional[int] = typer.Option(None, "--slots", min=1, help="Number of slots (default: one per GPU, else 1 CPU slot); no more than the machine holds (memory, 2 per core, 26 per GPU), with a warning."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda. cuda never falls back to the CPU."),
    engine: edge.EngineName = None,
    ray_address: edge.RayAddress = None,
    slots_per_gpu: edge.SlotsPerGpu = None,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging (dispatch decisions, heartbeats, requests)."),
) -> None:
    """Run the controller: HTTP API, web UI and the local slots, over one state folder."""
    edge.run(lambda: run_serve(edge.with_engine(ctx, engine, ray_address, slots_per_gpu), host=host, port=port, state=state, slots=slots, device=device, verbose=verbose),
             resume_hint="the controller stopped; start it again and it resumes its jobs")


def run_serve(
    settings: Settings, *, host: str | None, port: int | None, state: Path | None, slots: int | None, device: str, verbose: bool
) -> int:
    """Serve until interrupted; returns the exit code."""
    host = host or settings.host
    port = settings.port if port is None else port
    state_dir = (state or settings.state_dir).expanduser().resolve()
    from scribefleet.service.guards import restrict_new_files

    restrict_new_files(settings, state_dir)  # before anything is created: 0700 folders, 0600 files
    console = logging.StreamHandler(sys.stderr)
    setup_logging(
        state_dir / "logs" / "scribefleet.log", verbose=verbose, console=console,
        max_mb=settings.log_max_mb, backups=settings.log_backups,
    )  # fmt: skip
    from scribefleet.service.auth import check_auth_config, load_tokens

    try:
        tokens = load_tokens(settings)
        check_auth_config(settings, host, tokens)
    except UsageError as err:
        log.error("not starting [%s]: %s", err.code, err.message)
        return 2
    import uvicorn

    from scribefleet.service.app import create_app
    from scribefleet.service.controller import Controller

    controller = Controller(settings, state_dir, slots=slots, device=device)
    try:
        controller.start()
    except ScribefleetError as err:
        log.error("not starting [%s]: %s", err.code, err.message)
        controller.stop()
        return 2 if isinstance(err, UsageError) else 1
    auth = "OFF (loopback only)" if settings.auth_disabled else f"{len(tokens)} API token(s)"
    log.info("controller on http://%s:%d (state %s, authentication %s)", host, port, state_dir, auth)
    try:
        uvicorn.run(
            create_app(controller, settings, tokens=tokens, stop_on_shutdown=True), host=host, port=port,
            log_level="debug" if verbose else "info", timeout_graceful_shutdown=5,
        )  # fmt: skip
    finally:
        controller.stop()
    return 0
