"""`scribefleet transcribe`: a batch of media files as a generated plan of transcribe tasks.

Steps: validate options, resolve the model once, expand the inputs, hash their
content (cached by path, size and mtime), record a batch and one task per
input in the store under OUT/.scribefleet, plan slots from the hardware, and
run the dispatcher in burst mode until every task is in a terminal state.
Re-running the same command finds the same batch and only runs what is not
finished; tasks with the same content and options share one work folder, so
a file is transcribed once even under two names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console

from scribefleet.cli.inputs import InputFile, expand_inputs
from scribefleet.cli.status import report_outcome
from scribefleet.config import Settings
from scribefleet.errors import InputNotFound, ScribefleetError
from scribefleet.logs import setup_logging
from scribefleet.options import TranscribeOptions

log = logging.getLogger("scribefleet.cli")


@dataclass
class TranscribeRequest:
    """What the command line asked for."""

    inputs: list[str]
    out: Path
    options: dict[str, Any]
    slots: int | None = None
    force: bool = False
    json_out: bool = False
    verbose: bool = False


def _hash_cache_path(state_dir: Path) -> Path:
    return state_dir / "content-hashes.json"


def hash_inputs(files: list[InputFile], state_dir: Path) -> dict[Path, str]:
    """sha256 of every readable input, reusing earlier results for unchanged files."""
    from scribefleet.fsio import atomic_write_json, read_json
    from scribefleet.pipeline.media import content_hash

    cache: dict[str, list] = read_json(_hash_cache_path(state_dir)) or {}
    todo: list[Path] = []
    hashes: dict[Path, str] = {}
    for f in files:
        if f.missing or not f.path.is_file():
            continue
        st = f.path.stat()
        hit = cache.get(str(f.path))
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            hashes[f.path] = hit[2]
        else:
            todo.append(f.path)

    def one(path: Path) -> tuple[Path, str | None]:
        try:
            return path, content_hash(path)
        except OSError:
            return path, None  # unreadable: the job itself reports why

    with ThreadPoolExecutor(max_workers=2) as pool:  # hashlib releases the GIL
        for path, digest in pool.map(one, todo):
            if digest:
                st = path.stat()
                hashes[path] = digest
                cache[str(path)] = [st.st_size, st.st_mtime_ns, digest]
    if todo:
        atomic_write_json(_hash_cache_path(state_dir), cache)
    return hashes


def _batch_key(files: list[InputFile], options: TranscribeOptions, model_id: str) -> str:
    blob = json.dumps(
        {"inputs": sorted(str(f.path) for f in files), "options": options.model_dump(mode="json"), "model": model_id},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def work_dir_for(state_dir: Path, path: Path, digest: str | None, result_key: str) -> Path:
    """The checkpoint folder of one transcription: keyed by content hash (path if unreadable) + options key."""
    ident = digest[:20] if digest else "path-" + hashlib.sha256(str(path).encode()).hexdigest()[:15]
    return state_dir / "work" / f"{ident}-{result_key}"


def transcribe_spec(input_path: Path, display: str, work_dir: Path, outputs: dict[str, Path],
                    options: TranscribeOptions, resolved: Any, settings: Settings) -> dict[str, Any]:
    """The runtime spec of a `transcribe` task (what a slot's handler reads); shared with `plan run`."""
    return {
        "input_path": str(input_path),
        "display": display,
        "work_dir": str(work_dir),
        "outputs": {k: str(v) for k, v in outputs.items()},
        "options": options.model_dump(mode="json"),
        "max_file_mb": settings.max_file_mb,
        "window_s": settings.window_s,
        "model_path": str(resolved.path),
        "model_id": resolved.model_id,
    }


def create_batch(store: Any, files: list[InputFile], options: TranscribeOptions, resolved: Any,
                 settings: Settings, state_dir: Path, out: Path) -> str:
    """Record the batch and one transcribe task per input; bring an existing batch up to date.

    The caller holds the dispatcher lock. Of a batch seen before: tasks whose input
    changed get the new spec; failed, canceled and skipped tasks, and finished ones
    whose outputs were deleted, are queued again (their checkpoints make that cheap).
    """
    hashes = hash_inputs(files, state_dir)
    result_key = options.result_key(resolved.model_id)
    batch_id = store.ensure_batch(
        _batch_key(files, options, resolved.model_id), "transcribe",
        {"inputs": [str(f.path) for f in files], "options": options.model_dump(mode="json")}, str(out),
    )
    for f in files:
        work = work_dir_for(state_dir, f.path, hashes.get(f.path), result_key)
        spec = transcribe_spec(f.path, str(f.rel), work, f.outputs(options.formats), options, resolved, settings)
        task_id = store.add_task(
            batch_id, str(f.path), "transcribe", spec,
            max_attempts=settings.max_attempts, timeout_s=settings.transcribe_timeout_s,
            resources="gpu" if options.device.value == "cuda" else "any", content_key=work.name,
        )
        store.revise_task(task_id, spec, content_key=work.name)
    again = [
        t.id for t in store.tasks(batch_id=batch_id)
        if t.is_terminal and (not t.is_complete or not all(Path(p).is_file() for p in t.spec["outputs"].values()))
    ]
    if again:
        store.reset_tasks(batch_id, again)
    return batch_id


def _plan_slots(settings: Settings, options: TranscribeOptions, slots: int | None, jobs: int) -> list:
    from scribefleet.worker.hardware import detect_hardware, plan_slots

    hw = detect_hardware(settings)
    specs = plan_slots(hw, options.device.value, slots, settings)
    if slots is None and len(specs) > max(1, jobs):
        specs = specs[: max(1, jobs)]  # no point warming more slots than there is work
    return specs


def run_transcribe(req: TranscribeRequest) -> int:
    """Run the batch; returns the exit code."""
    err_console = Console(stderr=True)
    try:
        options = TranscribeOptions(**req.options)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        err_console.print(f"[red]error [INVALID_OPTIONS]:[/red] {msgs}")
        return 2
    settings = Settings()
    out = req.out.resolve()
    state_dir = out / ".scribefleet"
    state_dir.mkdir(parents=True, exist_ok=True)
    from scribefleet.cli.progress import BatchProgress

    progress = BatchProgress(err_console, json_mode=req.json_out)
    setup_logging(state_dir / "logs" / "scribefleet.log", verbose=req.verbose,
                  console=progress.log_handler(req.verbose), max_mb=settings.log_max_mb,
                  backups=settings.log_backups)
    try:
        return _run(req, options, settings, out, state_dir, progress, err_console)
    except ScribefleetError as err:
        log.error("run failed [%s]: %s", err.code, err.message)
        err_console.print(f"[red]error [{err.code}]:[/red] {err.message}")
        return 1


def _run(req: TranscribeRequest, options: TranscribeOptions, settings: Settings, out: Path,
         state_dir: Path, progress: Any, err_console: Console) -> int:
    from scribefleet.dispatch.lock import DispatcherLock
    from scribefleet.pipeline.models import resolve_model
    from scribefleet.store.store import Store

    resolved = resolve_model(options.model, settings)
    files = expand_inputs(req.inputs, out_dir=out)
    if not files:
        raise InputNotFound(f"no media found in {', '.join(req.inputs)}: name files, folders or globs that hold audio or video")
    store = Store.open(state_dir)
    lock = DispatcherLock(state_dir)
    lock.acquire()  # before touching the batch: another run may be dispatching from this state dir
    try:
        batch_id = create_batch(store, files, options, resolved, settings, state_dir, out)
        if req.force:
            for t in store.tasks(batch_id=batch_id):
                shutil.rmtree(t.spec["work_dir"], ignore_errors=True)
            store.reset_tasks(batch_id)
        tasks = store.tasks(batch_id=batch_id)
        pending = [t for t in tasks if not t.is_terminal]
        log.info("batch %s: %d inputs, %d to do, model %s, state %s", batch_id, len(tasks), len(pending), resolved.model_id, state_dir)
        if pending:
            slots = _plan_slots(settings, options, req.slots, len(pending))
            dispatch_batch(store, settings, state_dir, slots, batch_id, tasks, progress, lock)
    finally:
        lock.release()
    return report_outcome(
        err_console, store.tasks(batch_id=batch_id), json_out=req.json_out, batch_id=batch_id,
        state_dir=str(state_dir), line=f"{{done}}/{{total}} done, {{failed}} failed. Outputs and state: {state_dir.parent}",
    )  # fmt: skip


def dispatch_batch(store: Any, settings: Settings, state_dir: Path, slots: list, batch_id: str,
                   rows: list, progress: Any, lock: Any) -> None:
    """Run the batch's unfinished tasks on fresh local slots, showing progress; the caller holds `lock`."""
    from scribefleet.dispatch.dispatcher import Dispatcher
    from scribefleet.engines.local import LocalEngine

    engine = LocalEngine(settings, state_dir, slots)
    dispatcher = Dispatcher(store, engine, settings, listeners=[progress.on_event], lock=lock)
    with progress.live(rows):
        try:
            dispatcher.run(burst=True, batch_id=batch_id)
        finally:
            engine.stop()
