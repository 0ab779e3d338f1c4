"""`scribefleet submit`: one file as an async job whose id is printed at once (seed 003's run_yt_job).

With a controller (`--controller` or SCRIBEFLEET_CONTROLLER) the file is
uploaded and a job created there. Without one the job goes into the local
store of `--out` (the same task spec as `scribefleet transcribe`) and a
detached runner, `scribefleet dispatch`, is started in its own session with
its output in the state dir's logs. The runner runs every queued task of that
store and exits when none is left; if another dispatcher holds the state
dir's lock it waits for it and then runs whatever is still queued, so a
submitted job is never stranded.

`job_view()` / `controller_job_view()` give local and controller jobs one
JSON shape (`job_id`, `status`, `outputs`, `error_code`, `error_message`...),
printed by `submit --json` and `status JOB --json`.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic import ValidationError
from rich.console import Console

from scribefleet.client import ControllerClient
from scribefleet.config import Settings
from scribefleet.errors import InputNotFound, ScribefleetError, StateLocked, UsageError
from scribefleet.options import FORMATS, TranscribeOptions

log = logging.getLogger("scribefleet.cli")


def stderr_console() -> Console:
    """Where commands talk to people: stderr, no wrapping (lines stay greppable), no markup in messages."""
    return Console(stderr=True, soft_wrap=True, markup=False, highlight=False)


def pick_controller(controller: str | None, state: Path | None) -> tuple[str | None, Settings]:
    """The controller a status/logs/cancel talks to: --controller, else SCRIBEFLEET_CONTROLLER unless --state was given."""
    settings = Settings()
    return controller or (None if state is not None else settings.controller), settings


def client_for(controller: str, token: str | None, settings: Settings) -> ControllerClient:
    """The client every controller-facing command uses, configured from the settings."""
    return ControllerClient(controller, token or settings.token, timeout_s=settings.controller_timeout_s,
                            retries=settings.controller_retries)


def job_view(task: Any, state_dir: Path) -> dict[str, Any]:
    """A local task as a job: the JSON of `submit --json` and `status JOB --json`."""
    result = task.result or {}
    return {
        "job_id": task.id,
        "batch_id": task.batch_id,
        "status": task.state.value,
        "stage": task.stage,
        "percent": round(100 * (task.progress or 0.0), 1),
        "input": task.spec.get("input_path", task.key),
        "outputs": result.get("outputs") or {},
        "guards": result.get("guards"),
        "error_code": task.error_code,
        "error_message": task.error_message,
        "attempts": task.attempts,
        "state_dir": str(state_dir),
    }


def controller_job_view(job: dict[str, Any], controller: str) -> dict[str, Any]:
    """A controller job in the same shape as job_view(), its own JSON kept under "job"."""
    progress = job.get("progress") or {}
    return {
        "job_id": job.get("id"),
        "batch_id": job.get("batchId"),
        "status": job.get("status"),
        "stage": progress.get("stage"),
        "percent": progress.get("percent"),
        "input": job.get("filename"),
        "outputs": {fmt: controller + url if str(url).startswith("/") else url for fmt, url in (job.get("outputs") or {}).items()},
        "error_code": job.get("lastErrorCode"),
        "error_message": job.get("lastErrorMessage"),
        "controller": controller,
        "job": job,
    }


# -- a job or batch on a controller: status, logs, cancel ---------------------------------

TERMINAL = ("complete", "failed", "canceled", "skipped")


def _job_or_batch(client: ControllerClient, ident: str) -> tuple[str, dict[str, Any]]:
    """("job", job) or ("batch", batch) for an id of either kind."""
    for kind, read in (("job", client.job), ("batch", client.batch)):
        try:
            return kind, read(ident)
        except ScribefleetError as exc:
            if exc.code != "NOT_FOUND":
                raise
    raise ScribefleetError.from_code(
        "NOT_FOUND", f"no job or batch has the id {ident!r} on the controller at {client.url}: check the id "
        "('submit' and 'batch' print them) or --controller", id=ident,
    )  # fmt: skip


def _job_line(view: dict[str, Any]) -> str:
    where = f", {view['stage']} {view['percent']}%" if view.get("stage") else ""
    error = f" [{view['error_code']}] {view['error_message']}" if view.get("error_code") else ""
    return f"{view['job_id']}  {view.get('input') or ''}: {view['status']}{where}{error}"


def controller_status(ident: str, url: str, token: str | None, settings: Settings, *, json_out: bool) -> int:
    """`status ID --controller URL`: one job's status, or each job of a batch."""
    with client_for(url, token, settings) as client:
        kind, doc = _job_or_batch(client, ident)
    if kind == "job":
        view = controller_job_view(doc, client.url)
        if json_out:
            sys.stdout.write(json.dumps(view, indent=2) + "\n")
        else:
            sys.stdout.write(_job_line(view) + "\n" + "".join(f"  {fmt}: {u}\n" for fmt, u in view["outputs"].items()))
        return 0
    views = [controller_job_view(j, client.url) for j in doc.get("jobs") or []]
    if json_out:
        body = {"batch_id": doc.get("id"), "controller": client.url, "counts": doc.get("counts"), "jobs": views}
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    else:
        counts = ", ".join(f"{k} {n}" for k, n in (doc.get("counts") or {}).items() if n)
        sys.stdout.write(f"batch {doc.get('id')} on {client.url}: {counts or 'no jobs'}\n" + "".join(_job_line(v) + "\n" for v in views))
    return 0


def controller_logs(ident: str, url: str, token: str | None, settings: Settings, *, follow: bool) -> int:
    """`logs ID --controller URL`: a job's whole history (each job's, for a batch); --follow until it ends."""
    from scribefleet.client import Backoff

    with client_for(url, token, settings) as client:
        kind, doc = _job_or_batch(client, ident)
        jobs = [doc] if kind == "job" else list(doc.get("jobs") or [])
        for job in jobs:
            if kind == "batch":
                sys.stdout.write(f"== job {job['id']} ({job.get('filename')}): {job.get('status')} ==\n")
            seen = _write_new(client.logs(job["id"]), set())
        if follow and kind == "job":
            backoff = Backoff(settings.controller_poll_min_s, settings.controller_poll_max_s)
            while doc.get("status") not in TERMINAL:
                time.sleep(backoff.next())
                doc = client.job(ident)
                before = len(seen)
                seen = _write_new(client.logs(ident), seen)
                if len(seen) != before:
                    backoff.reset()
    return 0


def _write_new(text: str, seen: set[str]) -> set[str]:
    """Print the lines of `text` not printed before (the history is regrouped, not only appended)."""
    fresh = [line for line in text.splitlines() if line not in seen]
    sys.stdout.write("".join(line + "\n" for line in fresh))
    sys.stdout.flush()
    return seen | set(fresh)


def controller_cancel(ident: str, url: str, token: str | None, settings: Settings, *, wait_s: float = 10.0) -> int:
    """`cancel ID --controller URL`: a job, or every unfinished job of a batch; prints what each became."""
    with client_for(url, token, settings) as client:
        try:
            jobs = [client.cancel(ident)]
        except ScribefleetError as exc:
            if exc.code != "NOT_FOUND":
                raise
            try:
                jobs = list(client.cancel_batch(ident).get("jobs") or [])
            except ScribefleetError as again:
                if again.code != "NOT_FOUND":
                    raise
                raise ScribefleetError.from_code(
                    "NOT_FOUND", f"no job or batch has the id {ident!r} on the controller at {client.url}: check the id", id=ident,
                ) from None  # fmt: skip
        deadline = time.monotonic() + wait_s
        while any(j.get("status") not in TERMINAL for j in jobs) and time.monotonic() < deadline:
            time.sleep(0.3)  # a running job's slot is being killed: the controller says when it has ended
            jobs = [client.job(j["id"]) if j.get("status") not in TERMINAL else j for j in jobs]
    for job in jobs:
        sys.stdout.write(_job_line(controller_job_view(job, client.url)) + "\n")
    return 0


# -- local -----------------------------------------------------------------------------


def submit_local(file: Path, out: Path, options: TranscribeOptions, settings: Settings) -> tuple[Any, Path]:
    """Add one transcribe job to the local store of `out`; start a runner. Returns (task, state_dir).

    It takes no lock: a new batch with a new task is only added (as anyone may),
    never changed, so a dispatcher running there meanwhile is not disturbed.
    """
    from scribefleet.cli.inputs import expand_inputs
    from scribefleet.cli.transcribe import hash_inputs, transcribe_spec, work_dir_for
    from scribefleet.pipeline.models import resolve_model
    from scribefleet.store.store import Store, new_id

    if not file.is_file():
        raise InputNotFound(f"{file} is not a file: name one media file (folders go to 'scribefleet transcribe' or 'batch')")
    out = out.resolve()
    state_dir = out / ".scribefleet"
    (f,) = expand_inputs([str(file)], out_dir=out)
    resolved = resolve_model(options.model, settings)
    state_dir.mkdir(parents=True, exist_ok=True)
    digest = hash_inputs([f], state_dir).get(f.path)
    work = work_dir_for(state_dir, f.path, digest, options.result_key(resolved.model_id))
    spec = transcribe_spec(f.path, str(f.rel), work, f.outputs(options.formats), options, resolved, settings)
    with Store.open(state_dir) as store:
        batch_id = store.ensure_batch(f"submit-{new_id()}", "submit", {"inputs": [str(f.path)], "options": options.model_dump(mode="json")}, str(out))
        task_id = store.add_task(
            batch_id, str(f.path), "transcribe", spec, max_attempts=settings.max_attempts,
            timeout_s=settings.transcribe_timeout_s, resources="gpu" if options.device.value == "cuda" else "any",
            content_key=work.name,
        )
        task = store.task(task_id)
    start_runner(out, state_dir)
    return task, state_dir


def start_runner(out: Path, state_dir: Path) -> int:
    """Start `scribefleet dispatch --out OUT` detached (own session, output in the logs); returns its pid."""
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "runner.out").open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scribefleet.cli.main", "dispatch", "--out", str(out)],
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    log.info("runner pid %d started for %s", proc.pid, state_dir)
    return proc.pid


def run_queued(out: Path, settings: Settings, *, lock_poll_s: float = 0.5) -> int:
    """Run every queued task of the store of `out` until none is left; wait out another dispatcher."""
    from scribefleet.cli.status import state_dir_of
    from scribefleet.dispatch.lock import DispatcherLock
    from scribefleet.store.models import TaskState
    from scribefleet.store.store import Store

    state_dir = state_dir_of(out)
    lock = DispatcherLock(state_dir)
    waited = False
    last: set[str] | None = None
    with Store.open(state_dir) as store:
        while True:
            try:
                lock.acquire()
            except StateLocked as exc:
                if not store.tasks(states=[TaskState.QUEUED]):
                    log.info("runner: nothing queued in %s; the dispatcher there (pid %s) has the rest", state_dir, exc.details.get("pid"))
                    return 0
                if not waited:
                    log.info("runner: waiting for pid %s, which dispatches from %s", exc.details.get("pid"), state_dir)
                    waited = True
                time.sleep(lock_poll_s)
                continue
            try:
                # with the lock held, running rows are leftovers of a dispatcher that died: the run recovers them
                pending = store.tasks(states=[TaskState.QUEUED, TaskState.RUNNING])
                ids = {t.id for t in pending}
                if not pending:
                    log.info("runner: nothing left to run in %s", state_dir)
                    return 0
                if ids == last:
                    log.error("runner: a pass over %s left the same %d task(s) queued; stopping", state_dir, len(ids))
                    return 1
                last = ids
                _dispatch_all(store, state_dir, settings, lock, pending)
            finally:
                lock.release()


def _dispatch_all(store: Any, state_dir: Path, settings: Settings, lock: Any, pending: list[Any]) -> None:
    from scribefleet.dispatch.dispatcher import Dispatcher
    from scribefleet.engines.local import LocalEngine
    from scribefleet.worker.hardware import detect_hardware, plan_slots

    devices = {str((t.spec.get("options") or {}).get("device", "auto")) for t in pending if t.kind == "transcribe"}
    device = devices.pop() if len(devices) == 1 else "auto"
    try:
        specs = plan_slots(detect_hardware(settings), device, None, settings)[: max(1, len(pending))]
    except ScribefleetError as err:  # CUDA_UNAVAILABLE & co: these jobs cannot run here; their status says why
        log.error("runner: no slots for %d task(s) in %s [%s]: %s", len(pending), state_dir, err.code, err.message)
        for task in pending:
            store.fail(task.id, err.code, err.message, err.details)
        return
    log.info("runner: %d task(s) to run in %s on %d slot(s)", len(pending), state_dir, len(specs))
    engine = LocalEngine(settings, state_dir, specs)
    try:
        Dispatcher(store, engine, settings, lock=lock).run(burst=True)
    finally:
        engine.stop()


# -- the commands ------------------------------------------------------------------------


def submit(
    file: Path = typer.Argument(..., help="One media file."),
    controller: Optional[str] = typer.Option(None, "--controller", help="Controller URL (default: SCRIBEFLEET_CONTROLLER; unset: the local store)."),
    token: Optional[str] = typer.Option(None, "--token", help="API token (default: SCRIBEFLEET_TOKEN, which ps does not show)."),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="Without a controller: folder for outputs and the state dir OUT/.scribefleet."),
    model: str = typer.Option("tiny.en", "--model", "-m", help="Model folder, size name, Hugging Face repo id, or tiny.en (bundled)."),
    language: Optional[str] = typer.Option(None, "--language", "-l", help="Spoken language code; default: detect."),
    task: str = typer.Option("transcribe", "--task", help="transcribe, or translate (to English)."),
    formats: str = typer.Option("all", "--format", "-f", help=f"Comma-separated from {','.join(FORMATS)}, or all."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    compute_type: str = typer.Option("auto", "--compute-type", help="auto, int8, float16..."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Batched inference width; 1 = sequential."),
    vad: bool = typer.Option(True, "--vad/--no-vad", help="Skip silence with Silero VAD."),
    word_timestamps: bool = typer.Option(False, "--word-timestamps", help="Per-word timings in the JSON output."),
    beam_size: int = typer.Option(5, "--beam-size", min=1, help="Beam width."),
    initial_prompt: Optional[str] = typer.Option(None, "--initial-prompt", help="Text that primes the first window."),
    json_out: bool = typer.Option(False, "--json", help="Print the job as JSON instead of its id."),
) -> None:
    """Submit one file as a background job; print its id at once."""
    console = stderr_console()
    settings = Settings()
    try:
        options = TranscribeOptions(model=model, language=language, task=task, formats=formats, device=device,
                                    compute_type=compute_type, batch_size=batch_size, vad=vad,
                                    word_timestamps=word_timestamps, beam_size=beam_size, initial_prompt=initial_prompt)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        console.print(f"error [INVALID_OPTIONS]: {msgs}", style="red")
        raise typer.Exit(2) from None
    url = controller or settings.controller
    try:
        view = _submit_remote(file, url, token, options, settings) if url else _submit_here(file, out, options, settings)
    except UsageError as err:
        console.print(f"error [{err.code}]: {err.message}", style="red")
        raise typer.Exit(2) from None
    except ScribefleetError as err:
        console.print(f"error [{err.code}]: {err.message}", style="red")
        raise typer.Exit(1) from None
    sys.stdout.write((json.dumps(view, indent=2) if json_out else view["job_id"]) + "\n")
    where = f"--controller {view['controller']}" if url else f"--state {view['state_dir']}"
    console.print(f"submitted; follow it with: scribefleet status {view['job_id']} {where}")


def _submit_here(file: Path, out: Path, options: TranscribeOptions, settings: Settings) -> dict[str, Any]:
    task, state_dir = submit_local(file, out, options, settings)
    return job_view(task, state_dir)


def _submit_remote(file: Path, url: str, token: str | None, options: TranscribeOptions, settings: Settings) -> dict[str, Any]:
    if not file.is_file():
        raise InputNotFound(f"{file} is not a file: name one media file")
    with client_for(url, token, settings) as client:
        upload = client.upload(file)
        job = client.create_job(upload["uploadId"], options.model_dump(mode="json"))
        return controller_job_view(job, client.url)


def dispatch(
    out: Path = typer.Option(Path("out"), "--out", "-o", help="OUT folder (or its .scribefleet state dir) whose queued jobs to run."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Run every queued job of a state dir until none is left (what submit starts in the background)."""
    from scribefleet.cli.status import state_dir_of
    from scribefleet.logs import setup_logging

    settings = Settings()
    state_dir = state_dir_of(out)
    setup_logging(state_dir / "logs" / "scribefleet.log", verbose=verbose, max_mb=settings.log_max_mb, backups=settings.log_backups)
    try:
        code = run_queued(out, settings)
    except ScribefleetError as err:
        log.error("runner failed [%s]: %s", err.code, err.message)
        stderr_console().print(f"error [{err.code}]: {err.message}", style="red")
        code = 1
    raise typer.Exit(code)
