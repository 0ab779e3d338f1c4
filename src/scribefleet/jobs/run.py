"""Running work: the engine and dispatcher of a state dir, a batch in burst mode, and queued jobs.

`engine_dispatcher` is the one place an engine (the one `settings.engine`
names: local slot processes, or Ray actors) and its Dispatcher are built (for
`transcribe`, `plan run`, the `submit` runner and the controller), and
`slots_for` the one place their slots are planned; `controller_dispatcher`
wraps that engine in a RemoteEngine when the controller has remote workers
(REMOTE_WORKER_MODE optional or required).
`run_batch` runs one batch's unfinished tasks until each has ended;
`run_transcribe` and `run_plan` are whole runs (create or update the batch
under the state dir's lock, then run it); `run_queued` runs every queued task
of a state dir until none is left (what `scribefleet dispatch`, started by
`submit`, does), waiting out another dispatcher that holds the state dir.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path

from scribefleet.config import Settings
from scribefleet.dispatch.dispatcher import Dispatcher
from scribefleet.dispatch.lock import DispatcherLock
from scribefleet.dispatch.monitor import DispatchEvent
from scribefleet.engines import make_engine
from scribefleet.engines.base import Engine, SlotSpec
from scribefleet.engines.remote import RemoteEngine, worker_urls
from scribefleet.errors import ScribefleetError, StateLocked
from scribefleet.jobs.create import check_enrollment, create_batch, job_extra
from scribefleet.jobs.inputs import check_inputs
from scribefleet.jobs.lookup import state_dir_of
from scribefleet.jobs.plans import create_plan_batch, store_tasks
from scribefleet.options import FetchOptions, PublishOptions, TranscribeOptions
from scribefleet.pipeline.models import resolve_model
from scribefleet.plans import Plan
from scribefleet.store.models import Task, TaskKind, TaskState
from scribefleet.store.store import Store
from scribefleet.worker.budget import model_weights_mb
from scribefleet.worker.hardware import detect_hardware, plan_slots

log = logging.getLogger("scribefleet.cli")  # the name its lines have always shown ("[cli]"), which logs readers grep

Listener = Callable[[DispatchEvent], None]
#: shows a run while it goes: given the batch's tasks, a context the dispatcher runs inside (a live progress display)
Watch = Callable[[list[Task]], AbstractContextManager[object]]


def _no_watch(tasks: list[Task]) -> AbstractContextManager[object]:
    return contextlib.nullcontext()


def slots_for(settings: Settings, device: str, slots: int | None, work: int | None = None, *,
              model_path: Path | None = None) -> list[SlotSpec]:
    """The slots to start for `work` tasks: `slots` of them, else one per GPU (or one CPU slot), no more than the work,
    nor than this machine holds of slots loading the model at `model_path` (worker/budget.py; None: the default's).

    On a cluster engine (Ray) this machine's hardware says nothing: with no `slots` the engine
    sizes itself from the cluster (an empty list), else `slots` slots of the device asked for.
    """
    if settings.engine != "local":
        if slots is None:
            return []
        kind = "cuda" if device == "cuda" else "cpu"
        label = "gpu" if kind == "cuda" else "cpu"
        return [SlotSpec(f"{label}{i}", kind, cpu_threads=settings.cpu_threads or 1, labels=frozenset({label}))
                for i in range(slots)]  # fmt: skip
    specs = plan_slots(detect_hardware(settings), device, slots, settings, model_mb=model_weights_mb(model_path))
    if slots is None and work is not None:
        specs = specs[: max(1, work)]  # no point warming more slots than there is work
    return specs


def engine_dispatcher(store: Store, settings: Settings, slots: list[SlotSpec], *, lock: DispatcherLock | None = None,
                      listeners: Iterable[Listener] = ()) -> tuple[Engine, Dispatcher]:
    """The engine `settings.engine` names, with `slots` for the store's state dir, and the Dispatcher that drives it."""
    engine = make_engine(settings.engine, settings, store.state_dir, slots)
    return engine, Dispatcher(store, engine, settings, listeners=list(listeners), lock=lock)


def controller_dispatcher(store: Store, settings: Settings, slots: list[SlotSpec], *, lock: DispatcherLock | None = None,
                          listeners: Iterable[Listener] = ()) -> tuple[Engine, Dispatcher]:
    """The controller's engine and dispatcher: its own slots, plus remote workers' places when
    REMOTE_WORKER_MODE is optional or required (a RemoteEngine around the engine of `settings.engine`)."""
    urls = worker_urls(settings)
    if settings.remote_worker_mode == "off" or not urls:
        return engine_dispatcher(store, settings, slots, lock=lock, listeners=listeners)
    engine = RemoteEngine(settings, make_engine(settings.engine, settings, store.state_dir, slots), urls,
                          state_dir=store.state_dir)
    return engine, Dispatcher(store, engine, settings, listeners=list(listeners), lock=lock)


def run_batch(store: Store, settings: Settings, slots: list[SlotSpec], batch_id: str | None, *, lock: DispatcherLock,
              listeners: Iterable[Listener] = ()) -> None:
    """Run the batch's (every batch's, for None) unfinished tasks on fresh local slots until each has ended.

    The caller holds `lock`; the dispatcher lets go of it when it returns, after it has stopped
    its slots and put the tasks it left running (Ctrl-C) back in the queue, so `status` does not
    show them running while nothing runs them, and a run waiting for the lock never runs a task
    that a slot of this one still runs.
    """
    engine, dispatcher = engine_dispatcher(store, settings, slots, lock=lock, listeners=listeners)
    try:
        dispatcher.run(burst=True, batch_id=batch_id)
    finally:
        engine.stop()  # stopped already, unless the run failed before it started it


def run_transcribe(inputs: list[str], out: Path, options: TranscribeOptions, settings: Settings, *,
                   slots: int | None = None, force: bool = False, allow_missing: bool = False,
                   stages: tuple[str, ...] = (), listeners: Iterable[Listener] = (), watch: Watch = _no_watch,
                   fetch: FetchOptions | None = None, publish: PublishOptions | None = None) -> tuple[Store, str]:
    """`scribefleet transcribe`: inputs checked, the batch recorded (or brought up to date) and run; (store, batch id).

    Nothing is recorded or started when an input is missing (unless `allow_missing`),
    the model cannot be found, or a clip of the `speaker_names` folder is not usable.
    """
    out = out.resolve()
    state_dir = out / ".scribefleet"
    resolved = resolve_model(options.model, settings)
    files = check_inputs(inputs, out_dir=out, allow_missing=allow_missing, fetch=fetch)
    check_enrollment(options)
    store = Store.open(state_dir)
    lock = DispatcherLock(state_dir)
    lock.acquire()  # before touching the batch: another run may be dispatching from this state dir
    try:
        batch_id = create_batch(store, files, options, resolved, settings, out, force=force, stages=stages,
                                extra=job_extra(fetch, publish))
        tasks = store.tasks(batch_id=batch_id)
        pending = [t for t in tasks if not t.is_terminal]
        log.info("batch %s: %d inputs, %d to do, model %s, state %s", batch_id, len(tasks), len(pending), resolved.model_id, state_dir)
        if pending:
            specs = slots_for(settings, options.device.value, slots, len(pending), model_path=resolved.path)
            with watch(tasks):
                run_batch(store, settings, specs, batch_id, lock=lock, listeners=listeners)
    finally:
        lock.release()
    return store, batch_id


def run_plan(plan: Plan, state_dir: Path, settings: Settings, *, device: str = "auto", slots: int | None = None,
             listeners: Iterable[Listener] = (), watch: Watch = _no_watch) -> tuple[Store, str]:
    """`scribefleet plan run`: the plan's batch recorded (or brought up to date) and run; (store, batch id)."""
    store = Store.open(state_dir)
    lock = DispatcherLock(state_dir)
    lock.acquire()  # before touching the batch: another run may be dispatching from this state dir
    try:
        specs = slots_for(settings, device, slots)
        tasks = store_tasks(plan, settings, state_dir, gpu_slots=any(s.device == "cuda" for s in specs))
        batch_id = create_plan_batch(store, plan, tasks)
        rows = store.tasks(batch_id=batch_id)
        pending = [t for t in rows if not t.is_terminal]
        log.info(
            "batch %s: plan %s (%s), %d tasks, %d to do, state %s",
            batch_id, plan.name, plan.source, len(rows), len(pending), state_dir,
        )  # fmt: skip
        if pending:
            if slots is None:
                specs = specs[: max(1, len(pending))]  # no point warming more slots than there is work
            with watch(rows):
                run_batch(store, settings, specs, batch_id, lock=lock, listeners=listeners)
    finally:
        lock.release()
    return store, batch_id


def start_runner(out: Path) -> int:
    """Start `scribefleet dispatch --out OUT` detached (own session, output in the logs); returns its pid."""
    state_dir = state_dir_of(out)
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "runner.out").open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scribefleet.cli.main", "dispatch", "--out", str(out)],
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    log.info("runner pid %d started for %s", proc.pid, state_dir)
    return proc.pid


def run_queued(out: Path, settings: Settings, *, lock_poll_s: float = 0.5) -> int:
    """Run every queued task of the store of `out` until none is left; wait out another dispatcher.

    Returns 0 when nothing is left to run, 1 when a pass left the same tasks queued.
    """
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
                _run_pending(store, settings, lock, pending)
            finally:
                lock.release()


def _run_pending(store: Store, settings: Settings, lock: DispatcherLock, pending: list[Task]) -> None:
    devices = {str((t.spec.get("options") or {}).get("device", "auto")) for t in pending if t.kind == TaskKind.TRANSCRIBE.value}
    device = devices.pop() if len(devices) == 1 else "auto"
    try:
        specs = slots_for(settings, device, None, len(pending))
    except ScribefleetError as err:  # CUDA_UNAVAILABLE & co: these jobs cannot run here; their status says why
        log.error("runner: no slots for %d task(s) in %s [%s]: %s", len(pending), store.state_dir, err.code, err.message)
        for task in pending:
            store.fail(task.id, err.code, err.message, err.details)
        return
    log.info("runner: %d task(s) to run in %s on %d slot(s)", len(pending), store.state_dir, len(specs))
    run_batch(store, settings, specs, None, lock=lock)
