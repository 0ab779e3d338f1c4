"""LocalEngine: one slot process per SlotSpec on this machine (the default `Engine`).

Each slot is `python -m scribefleet.worker.slot`, started with the environment
`slot_environment` computed *before* exec (seed 000), as the leader of a new
session (its own process group), with one end of a socket pair. The engine
keeps the parent's end as a multiprocessing Connection, plus a pidfd per
process, and `poll()` multiplexes all of them: it returns the slots'
messages and their deaths (exit code or signal, tail of stderr) as
`SlotEvent`s. The engine tracks what each slot is doing (starting, idle,
busy, dead, failed), which models it holds and when it last heard from it
(`silent_slots` finds the hung ones); it never touches task state.

Killing a slot kills its whole process group and returns only once every
process of that group has exited, so a task's next attempt can never overlap
a leftover of the previous one (a command the killed slot had started).

Slots die with the thread that started them (PR_SET_PDEATHSIG), so start and
restart them from the thread that lives as long as the dispatcher.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from scribefleet.config import Settings
from scribefleet.engines.base import Engine, SlotEvent, SlotHandle, SlotSpec, SlotStatus, TaskRun
from scribefleet.worker.env import slot_environment

log = logging.getLogger("scribefleet.engine")

STDERR_TAIL_BYTES = 4000
STDERR_TAIL_LINES = 20
EXIT_GRACE_S = 2.0  # how long a slot that closed its end may take to exit before it is killed
GROUP_EXIT_WAIT_S = 10.0  # how long a SIGKILLed process group may take to be gone (D state, slow exit)


@dataclass
class LocalSlot(SlotHandle):
    """A slot as a child process: the process, the parent's end of its socket, a pidfd."""

    proc: subprocess.Popen[bytes] | None = None
    conn: Connection | None = None
    pidfd: int | None = None
    stderr_offset: int = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class LocalEngine(Engine):
    """Hosts slots as child processes of this one."""

    runs_groups = True  # its slots are worker.slot.Slot processes on this machine

    def __init__(self, settings: Settings, state_dir: Path, slots: list[SlotSpec]) -> None:
        if len({s.name for s in slots}) != len(slots):
            raise ValueError("slot names must be unique")
        self.settings = settings
        self.state_dir = Path(state_dir)
        self.logs_dir = self.state_dir / "logs"
        self._slots = {s.name: LocalSlot(s) for s in slots}
        self._started = False

    # -- views ---------------------------------------------------------------

    @property
    def slots(self) -> list[LocalSlot]:
        return list(self._slots.values())

    def slot(self, name: str) -> LocalSlot:
        return self._slots[name]

    def stderr_path(self, name: str) -> Path:
        return self.logs_dir / f"slot-{name}.stderr"

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start every slot (once; later calls do nothing). Ready comes later, as an event."""
        if self._started:
            return
        self._started = True
        for handle in self._slots.values():
            self._spawn(handle)

    def _spawn(self, h: LocalSlot) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        parent_end, child_end = socket.socketpair()
        env = slot_environment(self.settings, gpu_index=h.spec.gpu_index, cpu_threads=h.spec.cpu_threads)
        args = [
            sys.executable, "-m", "scribefleet.worker.slot", "--name", h.name, "--device", h.device,
            "--fd", str(child_end.fileno()), "--state-dir", str(self.state_dir),
            "--parent-pid", str(os.getpid()), "--cpu-threads", str(max(1, h.spec.cpu_threads)),
        ]  # fmt: skip
        if logging.getLogger("scribefleet").isEnabledFor(logging.DEBUG):
            args.append("--verbose")
        stderr_path = self.stderr_path(h.name)
        with open(stderr_path, "ab") as stderr:
            h.stderr_offset = stderr.tell()
            h.proc = subprocess.Popen(
                args, env=env, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                start_new_session=True, pass_fds=(child_end.fileno(),), close_fds=True,
            )  # fmt: skip
        child_end.close()  # only the slot holds its end: its death reads as EOF here
        h.conn = Connection(parent_end.detach())
        try:
            h.pidfd = os.pidfd_open(h.proc.pid)
        except (AttributeError, OSError):
            h.pidfd = None  # old kernel: the socket's EOF tells us instead
        h.starting()
        # secrets (llm_api_key) travel in full over the private socket; JSON elsewhere masks them
        h.conn.send({"op": "init", "settings": self.settings.model_dump(mode="json", context={"reveal_secrets": True})})
        log.info("slot %s starting on %s (pid %d, stderr %s)", h.name, h.device, h.proc.pid, stderr_path)

    @property
    def restart_limit(self) -> float:
        return self.settings.slot_restart_limit

    def _where_to_look(self, name: str) -> str:
        return f"; see {self.stderr_path(name)}"

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask every slot to stop, wait up to `timeout_s`, then kill what is left."""
        live = [h for h in self._slots.values() if h.proc is not None]
        for h in live:
            try:
                assert h.conn is not None
                h.conn.send({"op": "stop"})
            except OSError:
                pass
        deadline = time.monotonic() + timeout_s
        for h in live:
            assert h.proc is not None
            try:
                h.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("slot %s did not stop within %.0f s; killing it", h.name, timeout_s)
            self._finish(h, SlotStatus.DEAD)
        self._started = False

    # -- work ----------------------------------------------------------------

    def assign(self, name: str, run: TaskRun) -> bool:
        """Send a run message to an idle slot; False when the slot is gone (its death follows as an event)."""
        h = self._slots[name]
        if h.status is not SlotStatus.IDLE or h.conn is None:
            raise RuntimeError(f"slot {name} is {h.status.value}, not idle")
        try:
            h.conn.send({"op": "run", **run})
        except OSError:
            return False
        h.status, h.task_id = SlotStatus.BUSY, str(run["task_id"])
        return True

    def kill(self, name: str) -> SlotEvent | None:
        """SIGKILL the slot's whole process group now, wait until all of it is gone; returns how it died."""
        h = self._slots[name]
        if h.proc is None:
            return None
        task_id, pid, was = h.task_id, h.proc.pid, h.status
        returncode = self._finish(h, SlotStatus.DEAD)
        return self._death_event(h, task_id, returncode, pid, was)

    def silent_slots(self, after_s: float) -> list[LocalSlot]:
        """Ready slots (idle or busy) that have sent nothing, not even a heartbeat, for `after_s`."""
        now, silent = time.monotonic(), []
        for h in self._slots.values():
            if h.status not in (SlotStatus.IDLE, SlotStatus.BUSY) or now - h.last_heard_at <= after_s:
                continue
            try:
                if h.conn is not None and h.conn.poll():
                    continue  # it spoke and nobody has read it yet: not silent
            except (EOFError, OSError):
                continue  # it is dying; poll() reports that
            silent.append(h)
        return silent

    def next_silence_at(self, after_s: float) -> float | None:
        """When the first ready slot will have been silent for `after_s` (time.monotonic())."""
        heard = [h.last_heard_at for h in self._slots.values() if h.status in (SlotStatus.IDLE, SlotStatus.BUSY)]
        return min(heard) + after_s if heard else None

    def _finish(self, h: LocalSlot, status: SlotStatus) -> int:
        """Kill what is left of the slot's group, reap the slot, wait for the group to be gone, close its ends."""
        assert h.proc is not None
        pgid = h.proc.pid  # the slot is unreaped (at worst a zombie), so its pid is still the group's id
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        members = open_group(pgid)
        returncode = h.proc.wait()
        # a task's next attempt must not overlap what is left of this one (a command killed but not yet exited)
        left = wait_gone(members, GROUP_EXIT_WAIT_S)
        if left:
            log.warning("slot %s: processes %s of its group outlived SIGKILL for %.0f s", h.name, left, GROUP_EXIT_WAIT_S)
        if h.conn is not None:
            h.conn.close()
        if h.pidfd is not None:
            os.close(h.pidfd)
        h.proc, h.conn, h.pidfd, h.task_id = None, None, None, None
        if h.status is not SlotStatus.FAILED:
            h.status = status
        return returncode

    def _death_event(self, h: LocalSlot, task_id: str | None, returncode: int, pid: int, was: SlotStatus) -> SlotEvent:
        return SlotEvent(
            h.name, "died", task_id=task_id,
            exit_code=returncode if returncode >= 0 else None,
            signal=-returncode if returncode < 0 else None,
            stderr_tail=self.stderr_tail(h), pid=pid, tasks_done=h.tasks_done, was=was.value,
        )  # fmt: skip

    def stderr_tail(self, h: LocalSlot) -> str:
        """The last lines the slot's current (or last) process wrote to stderr."""
        path = self.stderr_path(h.name)
        try:
            with open(path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(h.stderr_offset, size - STDERR_TAIL_BYTES))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-STDERR_TAIL_LINES:])

    def poll(self, timeout_s: float) -> list[SlotEvent]:
        """Block up to `timeout_s` for slot messages or deaths; return them in arrival order."""
        events: list[SlotEvent] = self._ready_timeouts()
        starting = [h.started_at for h in self._slots.values() if h.status is SlotStatus.STARTING]
        if events:
            timeout_s = 0.0  # report these now; only look at what is already waiting
        elif starting:  # wake up in time to enforce the next ready deadline
            next_deadline = min(starting) + self.settings.slot_ready_timeout_s
            timeout_s = min(timeout_s, max(0.0, next_deadline - time.monotonic()) + 0.001)
        owners: dict[Any, tuple[LocalSlot, str]] = {}
        for h in self._slots.values():
            if h.proc is None:
                continue
            owners[h.conn] = (h, "conn")
            if h.pidfd is not None:
                owners[h.pidfd] = (h, "exit")
        if owners:
            ready = wait(list(owners), timeout=max(0.0, timeout_s))
        else:
            time.sleep(max(0.0, timeout_s))  # nothing alive to wait on; the caller decides what next
            ready = []
        for obj in ready:
            h, what = owners[obj]
            if h.proc is None:
                continue  # already reaped by an earlier object of this round
            if not self._drain(h, events) or what == "exit":
                self._reap(h, events)
        events.extend(self._ready_timeouts())
        return events

    def _drain(self, h: LocalSlot, events: list[SlotEvent]) -> bool:
        """Read every waiting message; False at end of stream (the slot is gone)."""
        assert h.conn is not None
        try:
            while h.conn.poll():
                events.append(self._on_message(h, h.conn.recv()))
        except (EOFError, OSError):
            return False
        return True

    def _reap(self, h: LocalSlot, events: list[SlotEvent]) -> None:
        self._drain(h, events)  # a "done" sent just before the end must not be lost
        if h.pidfd is not None:  # end of stream can come before the exit: let it finish exiting
            select.select([h.pidfd], [], [], EXIT_GRACE_S)
        task_id, was, pid = h.task_id, h.status, h.proc.pid if h.proc else 0
        returncode = self._finish(h, SlotStatus.DEAD)
        if was is SlotStatus.STARTING:
            h.deaths_before_ready += 1
        if was is SlotStatus.FAILED:
            return  # it said why (preflight_failed) and exited as asked
        events.append(self._death_event(h, task_id, returncode, pid, was))

    def _on_message(self, h: LocalSlot, msg: dict[str, Any]) -> SlotEvent:
        ev = str(msg.get("ev"))
        h.heard(ev, msg)
        return SlotEvent(h.name, ev, msg, task_id=msg.get("task_id") or h.task_id)

    def _ready_timeouts(self) -> list[SlotEvent]:
        """Slots that never said ready in time are killed; that reads as a death before ready."""
        events = []
        now = time.monotonic()
        for h in self._slots.values():
            if h.status is SlotStatus.STARTING and now - h.started_at > self.settings.slot_ready_timeout_s:
                log.error("slot %s did not become ready within %.0f s; killing it", h.name, self.settings.slot_ready_timeout_s)
                event = self.kill(h.name)
                h.deaths_before_ready += 1
                if event is not None:
                    events.append(event)
        return events


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes (zombies excluded) whose process group is `pgid`, read from /proc."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
                state, _ppid, pgrp = f.read().rsplit(b")", 1)[1].split(None, 3)[:3]
        except (OSError, ValueError):
            continue  # it exited while we looked
        if int(pgrp) == pgid and state != b"Z":
            members.append(int(entry.name))
    return members


def open_group(pgid: int) -> dict[int, int]:
    """pidfd -> pid of each live member of a group that was just SIGKILLed.

    No process can join a group whose members all have SIGKILL pending, so
    the members seen now are all there will be. Call it before reaping the
    leader: until then its pid cannot be reused as another group's id.
    """
    if not os.path.isdir("/proc"):
        return {}  # not Linux: nothing to look at
    pidfds = {}
    for pid in group_members(pgid):
        try:
            pidfds[os.pidfd_open(pid)] = pid
        except OSError:
            continue  # already gone
    return pidfds


def wait_gone(pidfds: dict[int, int], timeout_s: float) -> list[int]:
    """Wait until each process exits (a zombie counts as gone) and close the pidfds; returns pids left."""
    deadline = time.monotonic() + timeout_s
    poller = select.poll()  # not select(): a busy service may hold fds past FD_SETSIZE
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    pending = set(pidfds)
    try:
        while pending and (left_s := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left_s * 1000):
                pending.discard(fd)
                poller.unregister(fd)
    finally:
        for fd in pidfds:
            os.close(fd)
    return sorted(pidfds[fd] for fd in pending)
