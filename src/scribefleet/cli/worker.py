"""`scribefleet worker`: the remote worker service (seed 001's /v1 protocol) on a GPU server, on uvicorn.

Order of start: settings and flags, logging into STATE/logs, the token check
(WORKER_TOKEN is required: exit code 2 without one), the WorkerService (it
takes the state folder's dispatcher lock, so a second worker on the same
folder stops here with STATE_LOCKED, and starts its slots), then uvicorn.
Ctrl-C, SIGTERM or `kill -9` lose nothing: the next start knows every job it
admitted and finishes the ones that were running.
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

log = logging.getLogger("scribefleet.worker_service")

DEFAULT_STATE = Path("scribefleet-worker")


def worker(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 to serve other machines)."),
    port: int = typer.Option(8477, "--port", min=0, max=65535, help="Port (seed 001's 8477)."),
    state: Path = typer.Option(DEFAULT_STATE, "--state", help="The worker's own state folder: store, uploads, outputs, logs."),
    slots: Optional[int] = typer.Option(None, "--slots", min=1, help="Number of slots (default: one per GPU, else 1 CPU slot); no more than the machine holds (memory, 2 per core, 26 per GPU), with a warning."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda. cuda never falls back to the CPU."),
    engine: edge.EngineName = None,
    ray_address: edge.RayAddress = None,
    slots_per_gpu: edge.SlotsPerGpu = None,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Run a remote worker: jobs from a controller, on this machine's slots, kept in its own store."""
    edge.run(lambda: run_worker(edge.with_engine(ctx, engine, ray_address, slots_per_gpu), host=host, port=port, state=state, slots=slots, device=device,
                                verbose=verbose),
             resume_hint="the worker stopped; start it again and it finishes its jobs")  # fmt: skip


def run_worker(settings: Settings, *, host: str, port: int, state: Path, slots: int | None, device: str,
               verbose: bool) -> int:
    """Serve until interrupted; returns the exit code."""
    state_dir = state.expanduser().resolve()
    setup_logging(
        state_dir / "logs" / "scribefleet.log", verbose=verbose, console=logging.StreamHandler(sys.stderr),
        max_mb=settings.log_max_mb, backups=settings.log_backups,
    )  # fmt: skip
    import uvicorn

    from scribefleet.service.worker_app import WorkerService, create_worker_app

    service = WorkerService(settings, state_dir, slots=slots, device=device)
    try:
        app = create_worker_app(service)
        service.start()
    except ScribefleetError as err:
        log.error("worker not starting [%s]: %s", err.code, err.message)
        service.stop()
        return 2 if isinstance(err, UsageError) else 1
    log.info("worker on http://%s:%d (state %s)", host, port, state_dir)
    try:
        uvicorn.run(app, host=host, port=port, log_level="debug" if verbose else "info", timeout_graceful_shutdown=5)
    finally:
        service.stop()
    return 0
