"""RayEngine on a real two-node Ray cluster (tests/ray_cluster.py): actors as slots, deaths, kills, fake GPUs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import exits_within

from scribefleet.config import Settings
from scribefleet.engines import make_engine
from scribefleet.engines.base import SlotEvent, SlotSpec, SlotStatus

pytest.importorskip("ray")  # `make test` installs the extra; without it test_registry checks the refusal

from scribefleet.engines.ray import RayEngine  # noqa: E402


def wait_for(engine: RayEngine, type_: str, within_s: float = 60.0) -> tuple[SlotEvent, list[SlotEvent]]:
    seen: list[SlotEvent] = []
    give_up = time.monotonic() + within_s
    while time.monotonic() < give_up:
        for event in engine.poll(give_up - time.monotonic()):
            seen.append(event)
            if event.type == type_:
                return event, seen
    raise AssertionError(f"no {type_} event; saw {[e.type for e in seen]}")


def shell(task_id: str, run: str, cwd: Path) -> dict:
    return {"task_id": task_id, "kind": "shell", "spec": {"run": run, "cwd": str(cwd)}, "attempt": 1,
            "log_path": str(cwd / f"{task_id}.log")}  # fmt: skip


@pytest.fixture
def engine(tmp_path: Path, settings: Settings, ray_cluster) -> Iterator[RayEngine]:  # noqa: ANN001
    settings = settings.model_copy(update={"shell_allow_all": True})  # `kill` below
    eng = make_engine("ray", settings, tmp_path / "state", [SlotSpec("cpu0", "cpu", cpu_threads=2)])
    assert isinstance(eng, RayEngine)
    eng.start()
    yield eng
    eng.stop()


def test_a_slot_is_an_actor_with_its_environment_set_before_it_started(engine: RayEngine, tmp_path: Path) -> None:
    ready, _ = wait_for(engine, "ready")
    slot = engine.slot("cpu0")
    assert slot.status is SlotStatus.IDLE and slot.pid == ready.message["pid"] != os.getpid()
    assert slot.node and ready.message["node_id"]
    # long enough (over RUN_STAGE_AFTER_S) to report its run stage through the actor's stream
    engine.assign("cpu0", shell("t1", 'echo "[$CUDA_VISIBLE_DEVICES]$OMP_NUM_THREADS $HF_HOME" > env.txt; sleep 0.5', tmp_path))
    assert slot.status is SlotStatus.BUSY
    done, seen = wait_for(engine, "done")
    assert done.task_id == "t1" and slot.status is SlotStatus.IDLE and slot.tasks_done == 1
    assert "progress" in [e.type for e in seen]
    assert (tmp_path / "env.txt").read_text().split() == ["[]2", str(engine.settings.hf_home)]


def test_kill_ends_the_running_command_and_the_actor_and_restart_makes_a_new_one(engine: RayEngine, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "up.fifo")
    wait_for(engine, "ready")
    engine.assign("cpu0", shell("t1", "sleep 300 & echo $! > up.fifo; wait", tmp_path))
    with open(tmp_path / "up.fifo") as fifo:
        sleeper = int(fifo.read().strip())
    actor_pid = engine.slot("cpu0").pid
    death = engine.kill("cpu0")
    assert death is not None and death.type == "died" and death.task_id == "t1" and death.was == "busy"
    assert exits_within(sleeper, 0.5), "the task's command outlived the kill"
    assert exits_within(actor_pid, 10.0)
    assert engine.slot("cpu0").status is SlotStatus.DEAD and engine.kill("cpu0") is None
    assert engine.restart("cpu0")
    ready, seen = wait_for(engine, "ready")
    assert engine.slot("cpu0").pid != actor_pid
    assert not [e for e in seen if e.task_id == "t1"], "events of the killed attempt must be dropped"
    engine.assign("cpu0", shell("t2", "echo again > again.txt", tmp_path))
    wait_for(engine, "done")
    assert (tmp_path / "again.txt").read_text() == "again\n"


def test_an_actor_that_dies_mid_task_is_a_death_of_its_slot(engine: RayEngine, tmp_path: Path) -> None:
    wait_for(engine, "ready")
    engine.assign("cpu0", shell("t1", "sleep 1; kill -9 $PPID; sleep 60", tmp_path))
    death, _ = wait_for(engine, "died")
    assert death.task_id == "t1" and death.was == "busy" and "Ray actor died" in death.how
    assert engine.slot("cpu0").status is SlotStatus.DEAD


CONNECT = """
import sys, time
from pathlib import Path
from scribefleet.config import Settings
from scribefleet.engines import make_engine
from scribefleet.engines.base import SlotSpec
from scribefleet.errors import ScribefleetError
settings = Settings(_env_file=None)
engine = make_engine(settings.engine, settings, Path(sys.argv[1]), [SlotSpec("cpu0", "cpu")])
try:
    engine.start()
except ScribefleetError as err:
    print("refused", err.code, err.message)
    sys.exit(0)
try:
    give_up = time.monotonic() + 60
    while engine.slot("cpu0").status.value != "idle" and time.monotonic() < give_up:
        engine.poll(1.0)
    print("ready on", engine.slot("cpu0").node)
    import ray
    print("cluster", ray.get_runtime_context().gcs_address)
finally:
    engine.stop()
print("connected after stop:", ray.is_initialized())
"""


def test_a_second_driver_connects_by_address_with_the_clusters_token(tmp_path: Path, ray_cluster) -> None:  # noqa: ANN001
    env = {**os.environ, "SCRIBEFLEET_ENGINE": "ray", "SCRIBEFLEET_RAY_ADDRESS": ray_cluster.cluster.address}
    run = subprocess.run([sys.executable, "-c", CONNECT, str(tmp_path)], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0 and "ready on" in run.stdout, run.stdout + run.stderr[-3000:]
    assert f"cluster {ray_cluster.cluster.address}" in run.stdout
    assert "connected after stop: False" in run.stdout  # it disconnects; the cluster runs on (the next tests use it)


def test_a_driver_with_the_wrong_token_is_refused_with_a_stable_code(tmp_path: Path, ray_cluster) -> None:  # noqa: ANN001
    env = {**os.environ, "SCRIBEFLEET_ENGINE": "ray", "SCRIBEFLEET_RAY_ADDRESS": ray_cluster.cluster.address,
           "RAY_AUTH_TOKEN": "0" * 64}  # fmt: skip
    run = subprocess.run([sys.executable, "-c", CONNECT, str(tmp_path)], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0 and run.stdout.startswith("refused RAY_UNREACHABLE cannot connect to the Ray cluster at "), run.stdout + run.stderr[-3000:]


def test_ray_address_local_starts_a_private_cluster_and_stops_it_with_the_engine(tmp_path: Path, ray_cluster) -> None:  # noqa: ANN001
    env = {**os.environ, "SCRIBEFLEET_ENGINE": "ray", "SCRIBEFLEET_RAY_ADDRESS": "local", "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", CONNECT, str(tmp_path)], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0 and "ready on" in run.stdout, run.stdout + run.stderr[-3000:]
    assert f"cluster {ray_cluster.cluster.address}" not in run.stdout and "cluster " in run.stdout
    assert "connected after stop: False" in run.stdout  # the engine started it, the engine shut it down


def test_an_idle_actor_that_dies_is_noticed_by_its_ping(engine: RayEngine) -> None:
    wait_for(engine, "ready")
    os.kill(engine.slot("cpu0").pid, 9)  # the session cluster's nodes are processes of this machine
    death, _ = wait_for(engine, "died")
    assert death.task_id is None and death.was == "idle" and "Ray actor died" in death.how
    assert engine.slot("cpu0").status is SlotStatus.DEAD and engine.restart("cpu0")
    wait_for(engine, "ready")


def _transcribe(tmp_path: Path, address: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`scribefleet transcribe --engine ray --ray-address ADDRESS` on one real recording, in a process of its own."""
    wav = Path(__file__).resolve().parents[1] / "data" / "en01.wav"
    args = [sys.executable, "-m", "scribefleet", "transcribe", str(wav), "-o", str(tmp_path / "out"), "--engine", "ray",
            "--ray-address", address, "--device", "cpu"]  # fmt: skip
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def test_an_address_where_nothing_listens_is_refused_at_once_not_retried_for_minutes(tmp_path: Path) -> None:
    """ray.init retried a dead address for minutes, printing only warnings; now the address is tried first."""
    import socket

    with socket.socket() as sock:  # a port of this machine that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    run = _transcribe(tmp_path, f"127.0.0.1:{port}", {**os.environ, "HOME": str(tmp_path)})
    assert time.monotonic() - started < 60
    assert run.returncode == 1 and f"error [RAY_UNREACHABLE]: cannot connect to the Ray cluster at 127.0.0.1:{port}" \
        in run.stderr, run.stderr[-3000:]  # fmt: skip
    assert "Traceback" not in run.stderr


def test_a_driver_without_a_token_is_refused_with_a_stable_code_not_a_traceback(tmp_path: Path, ray_cluster) -> None:  # noqa: ANN001
    """RAY_AUTH_MODE=token, no RAY_AUTH_TOKEN and no ~/.ray/auth_token: Ray's AuthenticationError was a raw traceback."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"} | {"HOME": str(tmp_path)}
    run = _transcribe(tmp_path, ray_cluster.cluster.address, env)
    assert run.returncode == 1 and "error [RAY_UNREACHABLE]: cannot connect to the Ray cluster at" in run.stderr, \
        run.stderr[-3000:]  # fmt: skip
    assert "AuthenticationError" in run.stderr and "Traceback" not in run.stderr


def test_a_slot_no_node_has_room_for_is_given_up_saying_so(tmp_path: Path, settings: Settings, ray_cluster) -> None:  # noqa: ANN001
    """A slot Ray can place nowhere (64 CPUs on a cluster of 4) was given up as "died 3 times before it became
    ready; see slot-cpu0.log": it never died, and that log does not exist. The message now says what it needs."""
    settings = settings.model_copy(update={"slot_ready_timeout_s": 2.0, "slot_restart_limit": 1})
    engine = make_engine("ray", settings, tmp_path / "state", [SlotSpec("cpu0", "cpu", cpu_threads=64)])
    assert isinstance(engine, RayEngine)
    engine.start()
    try:
        death, _ = wait_for(engine, "died", within_s=30.0)
        assert death.was == "starting"
        assert engine.restart("cpu0") is False
        slot = engine.slot("cpu0")
        assert slot.status is SlotStatus.FAILED and slot.error is not None
        message = slot.error["message"]
        assert "no node had room for it (it needs 64 CPU) within 2 s" in message, message
        assert "slot-cpu0.log" not in message
        assert not (tmp_path / "state" / "logs" / "slot-cpu0.log").exists()
    finally:
        engine.stop()


def test_stop_returns_once_the_actors_and_what_their_tasks_started_are_gone(
    tmp_path: Path, settings: Settings, ray_cluster  # noqa: ANN001
) -> None:
    """stop() asked a killed actor once whether it was dead and went on when that call was still answered
    (the kill is asynchronous), and a busy slot's commands (the actor's own process group) outlived it. Now
    it kills those commands and returns once each actor is reported dead and its process has exited."""
    from ray.exceptions import RayActorError

    import ray

    settings = settings.model_copy(update={"shell_allow_all": True})
    engine = make_engine("ray", settings, tmp_path / "state", [SlotSpec("cpu0", "cpu"), SlotSpec("cpu1", "cpu")])
    assert isinstance(engine, RayEngine)
    os.mkfifo(tmp_path / "up.fifo")
    engine.start()
    try:
        give_up = time.monotonic() + 120
        while not all(h.status is SlotStatus.IDLE for h in engine.slots):
            assert time.monotonic() < give_up, [h.status for h in engine.slots]
            engine.poll(1.0)
        engine.assign("cpu0", shell("t1", "sleep 300 & echo $! > up.fifo; wait", tmp_path))
        with open(tmp_path / "up.fifo") as fifo:
            sleeper = int(fifo.read().strip())
        actors = {h.name: (h.actor, h.pid) for h in engine.slots}
    finally:
        engine.stop(timeout_s=0.5)
    assert exits_within(sleeper, 0.0), "the busy slot's command outlived stop()"
    for name, (actor, pid) in actors.items():
        assert exits_within(pid, 0.0), f"the actor of {name} (pid {pid}) outlived stop()"
        with pytest.raises(RayActorError):
            ray.get(actor.ping.remote(), timeout=30)
    assert all(h.status is SlotStatus.DEAD for h in engine.slots)
