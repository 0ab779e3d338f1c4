"""RayEngine: each slot is a long-lived Ray actor, on any node of a Ray cluster.

Ray places the actors (`num_gpus=1` per GPU slot, so Ray picks the GPU and
sets CUDA_VISIBLE_DEVICES before the actor's process starts; `num_cpus` per
CPU slot), starts their processes with the slot's environment (the runtime
environment's env_vars: LD_LIBRARY_PATH for the pip nvidia wheels, the model
cache folders) and tells us when one dies. scribefleet keeps everything else:
the store, dependencies, timeouts, retries, cancel and error codes stay in the
dispatcher, which sees this engine only through `engines.base.Engine`.

An actor wraps the slot of a slot process (`worker.slot.Slot`): the same task
kinds, progress throttling and model cache, kept warm between tasks. A task is
one call of the actor's streaming-generator method `run`, which yields the
slot's messages (progress, model_loaded, heartbeats while it works, then done
or failed); `poll()` waits on every slot's open call at once with `ray.wait`.
An idle slot is pinged every heartbeat, so a dead idle actor is noticed too.

A call that raises because the actor or its node died is a "died" event: the
dispatcher re-queues the task (attempt + 1) and restarts the slot, which makes
a new actor (Ray's own actor restarts are off: one owner decides). `kill()` -
for cancel and timeouts - first has the actor SIGKILL every command its task
started (the actor leads its own process group) and waits until they are
gone, then kills the actor and waits until it is gone: a call to it fails (one
made just after the kill may still be answered, so it asks again) and, where
it ran on this machine, its process has exited, so a new actor on its GPU
never meets the old one's memory. `stop()` lets a running task end for up to
its timeout, then does the same to every slot. A queued call would still run
after `ray.cancel`, so nothing relies on it. Events of a killed actor that
arrive later are dropped.

`ray.init` makes SIGTERM exit the process at once (its handler calls
`sys.exit`, and its core worker prints a native stack dump): the handler the
process had before (the CLI's, which stops a run as Ctrl-C does) is put back.

With no slots given, the engine uses the cluster's resources: one slot per
GPU, else one CPU slot per node, and it adds slots when the cluster grows.
Inputs, outputs and the state dir must be at the same paths on every node
(a shared filesystem); docs/ray.md says how to run a cluster.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError

from scribefleet.config import Settings
from scribefleet.engines.base import Engine, SlotEvent, SlotHandle, SlotSpec, SlotStatus, TaskRun
from scribefleet.engines.local import GROUP_EXIT_WAIT_S, group_members, open_group, wait_gone
from scribefleet.errors import RayUnreachable
from scribefleet.worker.env import slot_environment

log = logging.getLogger("scribefleet.engine")

KILL_CALL_TIMEOUT_S = 15.0  # how long an actor may take to kill its task's commands
DEATH_WAIT_S = 30.0  # how long a killed actor may take to be reported dead
RESIZE_EVERY_S = 2.0  # how often a self-sized engine looks for new nodes
PROBE_TIMEOUT_S = 5.0  # how long the cluster's address may take to accept a connection


class _Outbox:
    """What `worker.slot.Slot` sends on, here a queue that the actor's `run` generator reads."""

    def __init__(self) -> None:
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue()

    def send(self, message: dict[str, Any]) -> None:
        self.queue.put(message)


@ray.remote(max_restarts=0, max_task_retries=0, concurrency_groups={"control": 2})
class SlotActor:
    """One slot inside a Ray actor process: `worker.slot.Slot`'s task loop driven by calls."""

    def __init__(self, name: str, device: str, cpu_threads: int, settings: dict[str, Any], state_dir: str, verbose: bool) -> None:
        from scribefleet.logs import setup_logging
        from scribefleet.worker.slot import Slot

        try:
            os.setpgid(0, 0)  # lead a process group, so a kill takes every command a task started
        except OSError:
            pass  # already leads one (a session leader)
        self.settings = Settings(_env_file=None, **settings)
        self.state_dir = Path(state_dir)
        setup_logging(
            self.state_dir / "logs" / f"slot-{name}.log", verbose=verbose,
            max_mb=self.settings.log_max_mb, backups=self.settings.log_backups,
        )  # fmt: skip
        self.outbox = _Outbox()
        self.slot = Slot(name, device, cpu_threads, self.settings, self.state_dir, self.outbox)  # type: ignore[arg-type]
        # every task runs on this one thread: a CTranslate2 model used after the thread that loaded it has
        # exited was measured 4-5x slower (its CPU spinning), so a thread per task would slow every later task
        self._runs: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._run_tasks, name="tasks", daemon=True).start()

    def _run_tasks(self) -> None:
        while True:
            self.slot.run_task({"op": "run", **self._runs.get()})

    def hello(self) -> dict[str, Any]:
        """Ready (with where it runs) or preflight_failed: a GPU slot first checks its device."""
        if self.slot.device == "cuda" and self.settings.slot_preflight and not self.slot._preflight():
            return self.outbox.queue.get_nowait()
        ctx = ray.get_runtime_context()
        return {
            "ev": "ready", "slot": self.slot.name, "device": self.slot.device, "models": [],
            "pid": os.getpid(), "node_id": ctx.get_node_id(), "hostname": socket.gethostname(),
            "node_ip": ray.util.get_node_ip_address(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }  # fmt: skip

    def run(self, run: dict[str, Any]):  # noqa: ANN201 - a streaming generator of the slot's messages
        """Run one task on the actor's task thread; yield its messages, and a heartbeat whenever it is quiet."""
        task_id = str(run["task_id"])
        self._runs.put(run)
        while True:
            try:
                message = self.outbox.queue.get(timeout=self.settings.heartbeat_s)
            except queue.Empty:
                yield {"ev": "heartbeat", "task_id": task_id}
                continue
            yield message
            if message.get("ev") in ("done", "failed") and message.get("task_id") == task_id:
                return

    @ray.method(concurrency_group="control")
    def ping(self) -> dict[str, Any]:
        return {"ev": "heartbeat", "task_id": self.slot.current_task}

    @ray.method(concurrency_group="control")
    def kill_commands(self) -> list[int]:
        """SIGKILL every other process of this actor's group (what a task started); returns those left after the wait."""
        pgid, me = os.getpgrp(), os.getpid()
        if pgid != me:
            return []  # it could not lead a group: killing the group would hit Ray's own processes
        members = [pid for pid in group_members(pgid) if pid != me]
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pidfds = {}
        for pid in members:
            try:
                pidfds[os.pidfd_open(pid)] = pid
            except OSError:
                continue
        return wait_gone(pidfds, GROUP_EXIT_WAIT_S)


@dataclass
class RaySlot(SlotHandle):
    """A slot as a Ray actor: the actor, its open calls and where it runs."""

    actor: Any = None
    ready_ref: Any = None  # the pending hello() of a starting actor
    stream: Any = None  # the ObjectRefGenerator of the running task
    ping_ref: Any = None
    next_ping_at: float = 0.0
    generation: int = 0
    where: dict[str, Any] | None = None  # node_id, node_ip, hostname, pid, cuda_visible_devices
    no_room: bool = False  # its last start ended by the ready timeout: Ray found no node with room for it

    @property
    def node(self) -> str | None:
        """"host (ip)" of the Ray node the actor runs on, once it said ready."""
        if not self.where:
            return None
        return f"{self.where.get('hostname')} ({self.where.get('node_ip')})"

    @property
    def pid(self) -> int | None:
        """The actor's process id on its node (for logs: it may be another machine's)."""
        return self.where.get("pid") if self.where else None


@dataclass
class RayDeath(SlotEvent):
    """A "died" event whose cause Ray reported in words (an actor or a node that died)."""

    cause: str = ""

    @property
    def how(self) -> str:
        return self.cause or super().how


class RayEngine(Engine):
    """Hosts slots as Ray actors on the cluster of `settings.ray_address`."""

    runs_groups = True  # its actors run worker.slot.Slot, reading the paths every task names

    def __init__(self, settings: Settings, state_dir: Path, slots: list[SlotSpec]) -> None:
        if len({s.name for s in slots}) != len(slots):
            raise ValueError("slot names must be unique")
        self.settings = settings
        self.state_dir = Path(state_dir).resolve()
        self._slots = {s.name: RaySlot(s) for s in slots}
        self._sized_by_cluster = not slots
        self._next_resize_at = 0.0
        self._started = False
        self._owns_ray = False

    @property
    def slots(self) -> list[RaySlot]:
        return list(self._slots.values())

    def slot(self, name: str) -> RaySlot:
        return self._slots[name]

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._connect()
        self._started = True
        if not self._sized_by_cluster:
            self._warn_of_too_little_room()
        for h in self._slots.values():
            self._spawn(h)
        if self._sized_by_cluster:
            self._resize()  # starts the slots it adds

    def _connect(self) -> None:
        if ray.is_initialized():
            return
        address = self.settings.ray_address
        sigterm = signal.getsignal(signal.SIGTERM)
        try:
            _probe(address)  # ray.init retries a dead address for minutes, printing only warnings
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError, OSError, RayError) as exc:
            # RayError: AuthenticationError (token auth on, and no token in this process)
            where = f"at {address}" if address else "(RAY_ADDRESS, or the cluster started on this machine)"
            raise RayUnreachable(
                f"cannot connect to the Ray cluster {where}: {_first_line(exc)}. Start one (docs/ray.md), fix the "
                "address, give this process the cluster's token (RAY_AUTH_MODE=token and RAY_AUTH_TOKEN) or set "
                "SCRIBEFLEET_RAY_ADDRESS=local for a private cluster on this machine",
                ray_address=address,
            ) from exc
        self._owns_ray = True
        _give_back(signal.SIGTERM, sigterm)
        log.info("connected to the Ray cluster: %s", ray.cluster_resources())

    def _warn_of_too_little_room(self) -> None:
        """Slots given (--slots) that the whole cluster cannot hold at once: say so now, not only when one
        of them has waited SCRIBEFLEET_SLOT_READY_TIMEOUT_S for room."""
        have = ray.cluster_resources()
        need = {"CPU": 0.0, "GPU": 0.0}
        for h in self._slots.values():
            need["GPU" if h.device == "cuda" else "CPU"] += 1 if h.device == "cuda" else max(1, h.spec.cpu_threads)
        label = self.settings.ray_slot_resource
        if label:
            need[label] = float(len(self._slots))
        short = {k: v for k, v in need.items() if v > have.get(k, 0.0)}
        if short:
            log.warning(
                "%d slot(s) need %s; the Ray cluster has %s in all: the slots it has no room for wait (starting), "
                "and count as failed starts after %.0f s (SCRIBEFLEET_SLOT_READY_TIMEOUT_S). Ask for fewer "
                "(--slots), fewer threads each (SCRIBEFLEET_CPU_THREADS), or add nodes",
                len(self._slots), ", ".join(f"{v:g} {k}" for k, v in short.items()),
                ", ".join(f"{have.get(k, 0.0):g} {k}" for k in short), self.settings.slot_ready_timeout_s,
            )  # fmt: skip

    def _resize(self) -> None:
        """A self-sized engine: one GPU slot per cluster GPU, else one CPU slot per node (of the nodes that
        declare `ray_slot_resource`, when set); only ever grows."""
        self._next_resize_at = time.monotonic() + RESIZE_EVERY_S
        label = self.settings.ray_slot_resource
        hosts = [n for n in ray.nodes() if n.get("Alive") and (not label or n.get("Resources", {}).get(label, 0) >= 1)]
        gpus = int(sum(n.get("Resources", {}).get("GPU", 0) for n in hosts))
        have = [h for h in self._slots.values() if h.device == "cuda"]
        added = []
        if gpus:
            threads = self.settings.cpu_threads or 4
            for i in range(len(have), gpus):
                added.append(SlotSpec(f"gpu{i}", "cuda", cpu_threads=threads, labels=frozenset({"gpu"})))
        elif not have:
            nodes = [n for n in hosts if n.get("Resources", {}).get("CPU", 0) >= 1]
            if nodes:
                threads = self.settings.cpu_threads or int(min(n["Resources"]["CPU"] for n in nodes))
                count = sum(h.device == "cpu" for h in self._slots.values())
                for i in range(count, len(nodes)):
                    added.append(SlotSpec(f"cpu{i}", "cpu", cpu_threads=threads, labels=frozenset({"cpu"})))
        for spec in added:
            self._slots[spec.name] = RaySlot(spec)
            self._spawn(self._slots[spec.name])
        if added:
            log.info("the cluster has room for %d more slot(s): %s", len(added), ", ".join(s.name for s in added))

    def _spawn(self, h: RaySlot) -> None:
        spec = h.spec
        env = slot_environment(self.settings, gpu_index=None, cpu_threads=spec.cpu_threads, base={})
        if spec.device == "cuda":
            env.pop("CUDA_VISIBLE_DEVICES")  # Ray sets it to the GPU it gives the actor
            resources: dict[str, Any] = {"num_gpus": 1, "num_cpus": 0}
        else:
            resources = {"num_gpus": 0, "num_cpus": max(1, spec.cpu_threads)}
        if self.settings.ray_slot_resource:  # only nodes that declare the label host slots
            resources["resources"] = {self.settings.ray_slot_resource: 1}
        settings = self.settings.model_dump(mode="json", context={"reveal_secrets": True})
        verbose = logging.getLogger("scribefleet").isEnabledFor(logging.DEBUG)
        h.generation += 1
        h.actor = SlotActor.options(
            **resources, runtime_env={"env_vars": env}, scheduling_strategy="SPREAD", name=None,
        ).remote(h.name, spec.device, max(1, spec.cpu_threads), settings, str(self.state_dir), verbose)  # fmt: skip
        h.ready_ref, h.stream, h.ping_ref, h.where = h.actor.hello.remote(), None, None, None
        h.starting()
        log.info("slot %s starting on %s as a Ray actor (%s)", h.name, h.device, resources)

    @property
    def restart_limit(self) -> float:
        return self.settings.slot_restart_limit

    def _where_to_look(self, name: str) -> str:
        h = self._slots[name]
        if h.no_room:  # it never ran: there is no slot log to read
            need = "1 GPU" if h.device == "cuda" else f"{max(1, h.spec.cpu_threads)} CPU"
            if self.settings.ray_slot_resource:
                need += f" and 1 {self.settings.ray_slot_resource}"
            return (f" on the Ray cluster: no node had room for it (it needs {need}) within "
                    f"{self.settings.slot_ready_timeout_s:.0f} s; `ray status` shows what the cluster has free. "
                    "Ask for fewer slots (--slots) or fewer threads each (SCRIBEFLEET_CPU_THREADS), or add nodes")
        return f" on the Ray cluster; see {self.state_dir / 'logs' / f'slot-{name}.log'} and the Ray dashboard"

    def stop(self, timeout_s: float = 5.0) -> None:
        """Let running tasks end for up to `timeout_s` (their messages are dropped: the run is over), then kill
        what each still runs and every actor; returns once they are gone (each wait bounded)."""
        deadline = time.monotonic() + timeout_s
        for h in self._slots.values():
            if h.stream is not None and not self._drain(h, deadline):  # as a slot process ends its task
                self._kill_commands(h)
            self._end(h)
        self._started = False
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    # -- work ----------------------------------------------------------------

    def assign(self, name: str, run: TaskRun) -> bool:
        h = self._slots[name]
        if h.status is not SlotStatus.IDLE or h.actor is None:
            raise RuntimeError(f"slot {name} is {h.status.value}, not idle")
        h.stream = h.actor.run.options(num_returns="streaming").remote(dict(run))
        h.ping_ref = None
        h.status, h.task_id = SlotStatus.BUSY, str(run["task_id"])
        return True

    def kill(self, name: str) -> SlotEvent | None:
        """Kill what the slot's task started, then the actor; returns once Ray reports it dead."""
        h = self._slots[name]
        if h.actor is None:
            return None
        task_id, was, pid, cause = h.task_id, h.status, h.pid, "killed by the engine"
        if was is SlotStatus.BUSY:
            self._kill_commands(h)
        self._end(h)
        return RayDeath(name, "died", task_id=task_id, signal=int(signal.SIGKILL), pid=pid, tasks_done=h.tasks_done,
                        was=was.value, cause=cause)  # fmt: skip

    def _drain(self, h: RaySlot, deadline: float) -> bool:
        """Read the running task's stream until it ends (True) or `deadline` passes (False)."""
        while h.stream is not None:
            left_s = deadline - time.monotonic()
            if left_s <= 0 or not ray.wait([h.stream], timeout=left_s, fetch_local=False)[0]:
                return False
            try:
                ray.get(next(h.stream))
            except StopIteration:
                h.stream = None
            except RayError:
                return False  # the actor died: nothing of it runs on
        return True

    def _kill_commands(self, h: RaySlot) -> None:
        """Have the actor SIGKILL what its task started (its process group) and wait until that is gone."""
        if h.actor is None:
            return
        try:
            left = ray.get(h.actor.kill_commands.remote(), timeout=KILL_CALL_TIMEOUT_S)
            if left:
                log.warning("slot %s: processes %s of its task outlived SIGKILL", h.name, left)
        except (RayError, GetTimeoutError) as exc:
            log.warning("slot %s: could not kill its task's commands (%s); killing the actor", h.name, exc)

    def _end(self, h: RaySlot) -> None:
        """Kill the actor and wait until it is gone (`_wait_gone`); the slot is DEAD (or stays FAILED)."""
        actor, h.actor = h.actor, None
        h.generation += 1
        h.ready_ref = h.stream = h.ping_ref = None
        if actor is not None:
            ray.kill(actor, no_restart=True)
            _wait_gone(h.name, actor, h.where)
        h.task_id = None
        if h.status is not SlotStatus.FAILED:
            h.status = SlotStatus.DEAD

    def silent_slots(self, after_s: float) -> list[RaySlot]:
        now = time.monotonic()
        return [h for h in self._slots.values() if h.status in (SlotStatus.IDLE, SlotStatus.BUSY) and now - h.last_heard_at > after_s]

    def next_silence_at(self, after_s: float) -> float | None:
        heard = [h.last_heard_at for h in self._slots.values() if h.status in (SlotStatus.IDLE, SlotStatus.BUSY)]
        return min(heard) + after_s if heard else None

    # -- events --------------------------------------------------------------

    def poll(self, timeout_s: float) -> list[SlotEvent]:
        now = time.monotonic()
        events = self._ready_timeouts(now)
        if self._sized_by_cluster and self._started and now >= self._next_resize_at:
            before = len(self._slots)
            self._resize()
            if len(self._slots) > before:
                events.append(SlotEvent(next(iter(self._slots)), "slots_changed", {"slots": len(self._slots)}))
        owners: dict[Any, tuple[RaySlot, str]] = {}
        wake = [now + timeout_s]
        for h in self._slots.values():
            if h.ready_ref is not None:
                owners[h.ready_ref] = (h, "ready")
                wake.append(h.started_at + self.settings.slot_ready_timeout_s)
            if h.stream is not None:
                owners[h.stream] = (h, "stream")
            elif h.status is SlotStatus.IDLE and h.actor is not None:
                if h.ping_ref is None and now >= h.next_ping_at:
                    h.ping_ref = h.actor.ping.remote()
                if h.ping_ref is not None:
                    owners[h.ping_ref] = (h, "ping")
                else:
                    wake.append(h.next_ping_at)
        timeout_s = 0.0 if events else max(0.0, min(wake) - now)
        if not owners:
            time.sleep(timeout_s)
            return events
        refs = list(owners)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout_s, fetch_local=False)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        for ref in ready:
            h, what = owners[ref]
            if ref not in (h.ready_ref, h.stream, h.ping_ref):
                continue  # the slot was ended by an earlier item of this round
            if what == "ready":
                self._on_ready(h, events)
            elif what == "stream":
                self._on_stream(h, events)
            else:
                self._on_ping(h, events)
        return events

    def _on_ready(self, h: RaySlot, events: list[SlotEvent]) -> None:
        ref, h.ready_ref = h.ready_ref, None
        try:
            message = ray.get(ref)
        except RayError as exc:
            h.deaths_before_ready += 1
            events.append(self._died(h, exc))
            return
        events.append(self._on_message(h, message))

    def _on_stream(self, h: RaySlot, events: list[SlotEvent]) -> None:
        generation = h.generation
        while h.stream is not None and h.generation == generation:
            try:
                ref = next(h.stream)
                message = ray.get(ref)
            except StopIteration:
                h.stream = None
                return
            except RayError as exc:
                events.append(self._died(h, exc))
                return
            events.append(self._on_message(h, message))
            if h.stream is None or not ray.wait([h.stream], timeout=0, fetch_local=False)[0]:
                return

    def _on_ping(self, h: RaySlot, events: list[SlotEvent]) -> None:
        ref, h.ping_ref = h.ping_ref, None
        h.next_ping_at = time.monotonic() + self.settings.heartbeat_s
        try:
            message = ray.get(ref)
        except RayError as exc:
            events.append(self._died(h, exc))
            return
        events.append(self._on_message(h, message))

    def _died(self, h: RaySlot, exc: BaseException) -> SlotEvent:
        """The actor (or its node) is gone: the slot is DEAD and the task it ran, if any, is the dispatcher's."""
        task_id, was, pid = h.task_id, h.status, h.pid
        cause = _first_line(exc)
        log.error("slot %s: its Ray actor died (%s)", h.name, cause)
        self._end(h)  # kills it too: an actor Ray could not reach may still be running
        return RayDeath(h.name, "died", task_id=task_id, pid=pid, tasks_done=h.tasks_done, was=was.value,
                        stderr_tail=str(exc)[-4000:], cause=f"Ray actor died: {cause}")  # fmt: skip

    def _on_message(self, h: RaySlot, msg: dict[str, Any]) -> SlotEvent:
        ev = str(msg.get("ev"))
        was_task = h.task_id
        h.heard(ev, msg)
        if ev == "ready":
            h.no_room = False
            h.where = {k: msg.get(k) for k in ("node_id", "node_ip", "hostname", "pid", "cuda_visible_devices")}
            h.next_ping_at = h.last_heard_at + self.settings.heartbeat_s
            log.info("slot %s is on node %s (pid %s, CUDA_VISIBLE_DEVICES=%r)", h.name, h.node, h.pid, h.where["cuda_visible_devices"])
        elif ev == "preflight_failed":
            self._end(h)
        elif ev in ("done", "failed") and msg.get("task_id") == was_task:
            h.next_ping_at = h.last_heard_at + self.settings.heartbeat_s
        return SlotEvent(h.name, ev, msg, task_id=msg.get("task_id") or h.task_id)

    def _ready_timeouts(self, now: float) -> list[SlotEvent]:
        """An actor not ready in time (no room on the cluster, a stuck start) is killed: a death before ready."""
        events = []
        for h in self._slots.values():
            if h.status is SlotStatus.STARTING and now - h.started_at > self.settings.slot_ready_timeout_s:
                log.error("slot %s did not become ready within %.0f s (no room on the Ray cluster?); killing it",
                          h.name, self.settings.slot_ready_timeout_s)  # fmt: skip
                event = self.kill(h.name)
                h.deaths_before_ready += 1
                h.no_room = True
                if event is not None:
                    events.append(event)
        return events


def _wait_gone(name: str, actor: Any, where: dict[str, Any] | None) -> None:
    """Return once a killed actor is gone, at most DEATH_WAIT_S: Ray reports it dead (a call to it fails; the
    kill is asynchronous, so a call made just after it may still be answered, and it is asked again) and,
    where it ran on this machine, its process has exited (it may hold GPU memory until then)."""
    give_up = time.monotonic() + DEATH_WAIT_S
    while True:
        try:
            ray.get(actor.ping.remote(), timeout=max(0.0, give_up - time.monotonic()))
        except GetTimeoutError:
            log.warning("slot %s: Ray did not report its killed actor dead within %.0f s", name, DEATH_WAIT_S)
            return
        except RayError:
            break  # dead
        if time.monotonic() >= give_up:
            log.warning("slot %s: its killed actor still answered %.0f s after the kill", name, DEATH_WAIT_S)
            return
        time.sleep(0.05)
    pid = (where or {}).get("pid")
    if not pid or (where or {}).get("hostname") != socket.gethostname() or \
            (where or {}).get("node_ip") != ray.util.get_node_ip_address():  # fmt: skip
        return  # another machine's process: Ray's word is all there is
    try:
        pidfds = {os.pidfd_open(pid): pid}
    except OSError:
        return  # exited already
    if wait_gone(pidfds, max(0.0, give_up - time.monotonic())):
        log.warning("slot %s: its killed actor's process %s still runs %.0f s after the kill", name, pid, DEATH_WAIT_S)


def _give_back(signum: int, handler: Any) -> None:
    """Put back the Python handler of `signum` that ray.init replaced (only the main thread may); a handler
    not set from Python (None) is left as it is."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signum, handler)


def _probe(address: str | None) -> None:
    """Raise OSError unless something accepts a TCP connection at `address` ("host:port" or "ray://host:port")
    within PROBE_TIMEOUT_S; `local`, `auto`, unset and addresses without a port are left to Ray."""
    if not address or address in ("local", "auto"):
        return
    hostport = address.removeprefix("ray://").rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return
    with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S):
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}"
