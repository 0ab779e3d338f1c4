"""A slot: one long-lived process bound to one device, running one task at a time.

Started by an engine as `python -m scribefleet.worker.slot --name cpu0 ...`
with its environment (CUDA_VISIBLE_DEVICES, LD_LIBRARY_PATH, HF_HOME) already
set by the parent, and one end of a socket pair as `--fd`. It talks to the
parent in dicts over a multiprocessing Connection (protocol in
docs/architecture.md): it says `ready` (after a CUDA preflight on GPU slots),
then loops { recv run; run the kind's handler; send done | failed }, keeping
its ModelCache warm across tasks and sending heartbeats from a thread.

It is the leader of its own process group, so whoever kills the group kills
everything a task started; and it dies with its parent (PR_SET_PDEATHSIG plus
a watchdog thread on os.getppid()), taking that group along.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from scribefleet.config import Settings
from scribefleet.errors import ScribefleetError, TaskError
from scribefleet.logs import setup_logging
from scribefleet.pipeline.media import give_back_freed_memory
from scribefleet.worker.kinds import KINDS, TaskContext

PR_SET_PDEATHSIG = 1
PROGRESS_EVERY_S = 0.25  # at most this often per task, except on a new stage
EXIT_PREFLIGHT_FAILED = 3


def _plain(value: Any) -> Any:
    """JSON-safe copy (Paths, numpy numbers...), so a message always pickles and stores."""
    return json.loads(json.dumps(value, default=str))


def _kill_own_group(*_: object) -> None:
    """Kill this slot and everything it started (only when it leads its own group)."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os._exit(1)


def die_with_parent(parent_pid: int, log: logging.Logger) -> None:
    """Make sure this slot and its process group do not outlive the process that started it."""
    signal.signal(signal.SIGTERM, _kill_own_group)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        # SIGTERM, not SIGKILL: its handler takes the whole process group (running commands) along
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the watchdog alone does it
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable; relying on the parent watchdog")
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        _kill_own_group()

    def watchdog() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                log.error("parent process %d is gone; slot exits with everything it started", parent_pid)
                _kill_own_group()

    threading.Thread(target=watchdog, name="parent-watchdog", daemon=True).start()


class Slot:
    """The slot's side of the protocol: receive tasks, run them, report."""

    def __init__(self, name: str, device: str, cpu_threads: int, settings: Settings, state_dir: Path, conn: Connection) -> None:
        self.name, self.device, self.cpu_threads = name, device, cpu_threads
        self.settings, self.state_dir, self.conn = settings, state_dir, conn
        self.log = logging.getLogger(f"scribefleet.slot.{name}")
        self.tasks_done = 0
        self.current_task: str | None = None
        self._send_lock = threading.Lock()
        self._models: Any = None
        self._stopping = threading.Event()
        self._last_progress: dict[str, tuple[float, str | None]] = {}  # per task: a group runs several at once
        self._held_progress: dict[str, dict[str, Any]] = {}  # per task, the latest report of a burst
        self._progress_lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        with self._send_lock:  # the heartbeat thread sends too
            self.conn.send(message)

    def models(self) -> Any:
        if self._models is None:
            from scribefleet.pipeline.models import ModelCache

            self._models = ModelCache(self.settings.slot_max_models, on_change=self._model_changed,
                                      cpu_workers=self.settings.cpu_workers)
        return self._models

    def _model_changed(self, event: str, model_id: str) -> None:
        self.log.info("model %s %s", model_id, event)
        self.send({"ev": "model_loaded" if event == "loaded" else "model_unloaded", "model": model_id})

    def serve(self) -> int:
        """Run until told to stop or the parent goes away; returns the exit code."""
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.log.info("slot %s started on %s (pid %d, CUDA_VISIBLE_DEVICES=%r)", self.name, self.device, os.getpid(), visible)
        try:
            if self.device == "cuda" and self.settings.slot_preflight and not self._preflight():
                return EXIT_PREFLIGHT_FAILED
            self.send({"ev": "ready", "slot": self.name, "device": self.device, "pid": os.getpid(), "models": []})
            threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
            while True:
                try:
                    message = self.conn.recv()
                except (EOFError, OSError):
                    self.log.info("slot %s: the parent closed the connection", self.name)
                    break
                if message.get("op") == "stop":
                    break
                if message.get("op") == "run":
                    self.run_task(message)
        except Exception:
            self.log.exception("slot %s crashed after %d tasks completed", self.name, self.tasks_done)
            raise
        finally:
            self._stopping.set()
        self.log.info("slot %s stopped: %d tasks completed", self.name, self.tasks_done)
        return 0

    def _preflight(self) -> bool:
        try:
            from scribefleet.worker.preflight import preflight
        except ImportError:
            return True
        try:
            facts = preflight(self.device)
        except ScribefleetError as err:
            self.log.error("slot %s preflight failed [%s]: %s", self.name, err.code, err.message)
            self.send({"ev": "preflight_failed", **_plain(err.to_dict())})
            return False
        self.log.info("slot %s preflight ok: %s", self.name, facts)
        return True

    def _heartbeat(self) -> None:
        while not self._stopping.wait(self.settings.heartbeat_s):
            try:
                self.send({"ev": "heartbeat", "task_id": self.current_task})
            except OSError:
                return

    def _progress(self, task_id: str, stage: str, fraction: float, extra: dict[str, Any] | None = None) -> None:
        """Send progress at most every PROGRESS_EVERY_S per task and stage. Batched decoding reports a whole
        batch's segments in one burst: the last of a burst is what counts, so a held-back report goes out when
        the interval ends (a timer) unless a newer one went first."""
        message = {"ev": "progress", "task_id": task_id, "stage": stage, "percent": round(100.0 * fraction, 2)}
        message.update(_plain({k: v for k, v in (extra or {}).items() if k not in message}))
        with self._progress_lock:
            now = time.monotonic()
            last_at, last_stage = self._last_progress.get(task_id, (0.0, None))
            # a plan other slots may help with (pipeline/spread.py) is news, never held back
            if stage == last_stage and fraction < 1.0 and now - last_at < PROGRESS_EVERY_S and "spread" not in message:
                if task_id not in self._held_progress:
                    timer = threading.Timer(PROGRESS_EVERY_S - (now - last_at), self._send_held, args=(task_id,))
                    timer.daemon = True
                    timer.start()
                self._held_progress[task_id] = message
                return
            self._last_progress[task_id] = (now, stage)
            self._held_progress.pop(task_id, None)
            self.send(message)

    def _send_held(self, task_id: str) -> None:
        with self._progress_lock:
            message = self._held_progress.pop(task_id, None)  # gone when the task ended meanwhile
            if message is not None:
                self._last_progress[task_id] = (time.monotonic(), message["stage"])
                self.send(message)

    def run_task(self, message: dict[str, Any]) -> None:
        """Run a task (or a group of them, worker/group.py) and send its reply (the lead's last)."""
        if message.get("members"):
            from scribefleet.worker.group import run_group

            replies = run_group(self, message)
        else:
            replies = [self.execute(message)]
        self.current_task = None
        give_back_freed_memory()  # what the task freed, rather than holding it until the next one
        for reply in replies:
            self.send(reply)

    def execute(self, message: dict[str, Any], models: Any = None) -> dict[str, Any]:
        """Run one task; returns its reply (done or failed)."""
        task_id, kind = str(message["task_id"]), str(message.get("kind"))
        started = time.monotonic()
        self.current_task = self.current_task or task_id
        self._last_progress.pop(task_id, None)
        log_path = Path(message.get("log_path") or self.state_dir / "logs" / "tasks" / f"{task_id}.log")
        ctx = TaskContext(
            task_id=task_id, slot_name=self.name, device=self.device, cpu_threads=self.cpu_threads,
            log_path=log_path, settings=self.settings, attempt=int(message.get("attempt", 1)),
            progress=lambda stage, fraction, extra=None: self._progress(task_id, stage, fraction, extra),
            _models=models or self.models,
        )  # fmt: skip
        self.log.info("task %s (%s) started, attempt %s", task_id, kind, ctx.attempt)
        try:
            handler = KINDS.get(kind)
            if handler is None:
                raise TaskError(f"unknown task kind {kind!r}; slots run {', '.join(sorted(KINDS))}", kind=kind)
            result = handler(dict(message.get("spec") or {}), ctx)
        except ScribefleetError as err:
            self.log.info("task %s failed [%s] after %.2f s: %s", task_id, err.code, time.monotonic() - started, err.message)
            reply = {"ev": "failed", "task_id": task_id, **_plain(err.to_dict()), "retryable": err.retryable}
        except Exception as exc:  # noqa: BLE001 - any bug in a handler fails the task, not the slot
            self.log.exception("task %s raised an unexpected error", task_id)
            tail = traceback.format_exc().splitlines()[-15:]
            reply = {
                "ev": "failed", "task_id": task_id, "code": "INTERNAL_ERROR", "retryable": False,
                "message": f"{type(exc).__name__}: {exc} (slot log: {self.name})", "details": {"traceback": tail},
            }  # fmt: skip
        else:
            self.tasks_done += 1
            self.log.info("task %s done in %.2f s", task_id, time.monotonic() - started)
            reply = {"ev": "done", "task_id": task_id, "result": _plain(result or {})}
        self._task_ended(task_id)
        return reply

    def _task_ended(self, task_id: str) -> None:
        """Forget a task's progress: a report still held back for it would come after its end."""
        with self._progress_lock:
            self._held_progress.pop(task_id, None)
            self._last_progress.pop(task_id, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scribefleet.worker.slot")
    parser.add_argument("--name", required=True)
    parser.add_argument("--device", choices=["cpu", "cuda"], required=True)
    parser.add_argument("--fd", type=int, required=True, help="this slot's end of the socket pair")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--cpu-threads", type=int, default=1)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if os.getppid() != args.parent_pid:
        return 1  # orphaned before it even started
    die_with_parent(args.parent_pid, logging.getLogger(f"scribefleet.slot.{args.name}"))
    conn = Connection(args.fd)
    try:
        # the parent's Settings come as the first message, not in argv, where `ps` would show them
        init = conn.recv()
    except (EOFError, OSError):
        return 1
    settings = Settings(_env_file=None, **init["settings"])
    setup_logging(
        args.state_dir / "logs" / f"slot-{args.name}.log", verbose=args.verbose,
        max_mb=settings.log_max_mb, backups=settings.log_backups,
    )  # fmt: skip
    return Slot(args.name, args.device, args.cpu_threads, settings, args.state_dir, conn).serve()


if __name__ == "__main__":
    sys.exit(main())
