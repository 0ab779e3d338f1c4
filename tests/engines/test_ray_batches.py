"""Whole batches through the real dispatcher on the Ray engine, on the session's two-node Ray cluster.

Transcription with the bundled tiny.en on CPU slots (outputs equal to the
local engine's), a node removed mid-batch (every file still done exactly
once), and shell tasks whose CUDA_VISIBLE_DEVICES comes from Ray on a node
that declares fake GPUs. Cancels and timeouts on Ray are the dispatcher's own
tests (tests/dispatch, parametrized over every engine).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")

from scribefleet.config import Settings  # noqa: E402
from scribefleet.dispatch.dispatcher import Dispatcher  # noqa: E402
from scribefleet.dispatch.monitor import DispatchEvent  # noqa: E402
from scribefleet.engines import make_engine  # noqa: E402
from scribefleet.engines.base import Engine, SlotSpec, SlotStatus  # noqa: E402
from scribefleet.logs import setup_logging  # noqa: E402
from scribefleet.options import TranscribeOptions  # noqa: E402
from scribefleet.store import Store, TaskState  # noqa: E402

FILES = [f"en0{i}.wav" for i in range(1, 7)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    setup_logging(tmp_path / "state" / "logs" / "scribefleet.log", verbose=True)
    s = Store.open(tmp_path / "state")
    yield s
    s.close()
    setup_logging(None)
    logging.getLogger("scribefleet").setLevel(logging.WARNING)


def add_transcriptions(store: Store, settings: Settings, speech: dict[str, Path], out: Path, files: list[str]) -> str:
    from scribefleet.pipeline.models import resolve_model

    resolved = resolve_model("tiny.en", settings)
    options = TranscribeOptions(formats="txt", batch_size=1, vad=False, beam_size=1)
    batch = store.ensure_batch(f"batch-{out.name}", "transcribe", {}, str(out))
    for name in files:
        spec = {
            "input_path": str(speech[name]), "display": name, "work_dir": str(out / "work" / name),
            "outputs": {"txt": str(out / f"{name}.txt")}, "options": options.model_dump(mode="json"),
            "model_path": str(resolved.path), "model_id": resolved.model_id,
        }  # fmt: skip
        store.add_task(batch, name, "transcribe", spec, timeout_s=600.0)
    return batch


def run(store: Store, engine: Engine, settings: Settings, batch: str, listener: Callable[[DispatchEvent], None] | None = None) -> None:
    try:
        Dispatcher(store, engine, settings, listeners=[listener] if listener else []).run(burst=True, batch_id=batch)
    finally:
        engine.stop()


def completed_once(store: Store, batch: str) -> dict[str, int]:
    """key -> how many times the store recorded the task as completed."""
    return {t.key: sum(e.type == "completed" for e in store.events(task_id=t.id)) for t in store.tasks(batch)}


def test_transcriptions_on_ray_equal_the_local_engines_and_each_slot_loads_the_model_once(
    tmp_path: Path, settings: Settings, speech: dict[str, Path], store: Store, ray_cluster  # noqa: ANN001
) -> None:
    specs = [SlotSpec(f"cpu{i}", "cpu", cpu_threads=1) for i in range(2)]
    outputs = {}
    for name in ("local", "ray"):
        out = tmp_path / name
        batch = add_transcriptions(store, settings, speech, out, FILES[:4])
        engine = make_engine(name, settings, tmp_path / "state", specs)
        loaded: list[str] = []
        run(store, engine, settings, batch, lambda e: loaded.append(e.data["slot"]) if e.type == "model_loaded" else None)
        assert all(t.state is TaskState.COMPLETE for t in store.tasks(batch)), [(t.key, t.error_message) for t in store.tasks(batch)]
        assert len(loaded) == len(set(loaded)) <= 2, "a slot loaded the model again between tasks"
        outputs[name] = {f: (out / f"{f}.txt").read_text() for f in FILES[:4]}
        if name == "ray":
            assert {t.slot for t in store.tasks(batch)} <= {"cpu0", "cpu1"}
            assert sum(h.tasks_done for h in engine.slots) == 4
    assert outputs["ray"] == outputs["local"]
    assert all(text.strip() for text in outputs["ray"].values())


def test_a_node_removed_mid_batch_loses_no_file_and_runs_none_twice(
    tmp_path: Path, settings: Settings, speech: dict[str, Path], store: Store, ray_cluster  # noqa: ANN001
) -> None:
    doomed = ray_cluster.add_node(num_cpus=2)
    # 2 CPUs per slot: one slot on each of the three nodes
    specs = [SlotSpec(f"cpu{i}", "cpu", cpu_threads=2) for i in range(3)]
    engine = make_engine("ray", settings, tmp_path / "state", specs)
    out = tmp_path / "out"
    batch = add_transcriptions(store, settings, speech, out, FILES)
    removed: list[str] = []

    def on_event(event: DispatchEvent) -> None:
        if event.type != "task_progress" or removed:  # the task runs on its actor
            return
        slot = engine.slot(event.data["slot"])
        if slot.where and slot.where["node_id"] == doomed.node_id:
            removed.append(event.task.key)  # type: ignore[union-attr]
            ray_cluster.remove_node(doomed)

    run(store, engine, settings, batch, on_event)
    assert removed, "no task went to the slot on the node to remove"
    tasks = {t.key: t for t in store.tasks(batch)}
    assert all(t.state is TaskState.COMPLETE for t in tasks.values()), [(t.key, t.error_message) for t in tasks.values()]
    assert completed_once(store, batch) == dict.fromkeys(FILES, 1)
    lost = tasks[removed[0]]
    assert lost.attempts == 2
    requeued = [e for e in store.events(task_id=lost.id) if e.type == "retry"]
    assert [e.data.get("code") for e in requeued] == ["SLOT_CRASHED"], [(e.type, e.data) for e in store.events(task_id=lost.id)]
    assert all((out / f"{f}.txt").read_text().strip() for f in FILES)
    assert not list(out.glob(".*.tmp")), "a half-written output was left behind"


def test_gpu_slots_get_their_cuda_visible_devices_from_ray(
    tmp_path: Path, settings: Settings, store: Store, ray_cluster  # noqa: ANN001
) -> None:
    # the session cluster's second node declares 2 fake GPUs; CTranslate2 sees none, so the CUDA check is off
    settings = settings.model_copy(update={"slot_preflight": False})
    engine = make_engine("ray", settings, tmp_path / "state", [])  # sized by the cluster: one slot per GPU
    work = tmp_path / "work"
    work.mkdir()
    batch = store.ensure_batch("gpus", "plan", {}, str(work))
    for i in range(4):
        store.add_task(batch, f"t{i}", "shell", {"run": f'sleep 1; echo "$CUDA_VISIBLE_DEVICES" > t{i}.txt', "cwd": str(work)},
                       resources="gpu")  # fmt: skip
    run(store, engine, settings, batch)
    assert [h.name for h in engine.slots] == ["gpu0", "gpu1"]
    assert all(h.device == "cuda" for h in engine.slots)
    tasks = store.tasks(batch)
    assert all(t.state is TaskState.COMPLETE for t in tasks), [(t.key, t.error_message) for t in tasks]
    seen = {(work / f"t{i}.txt").read_text().strip() for i in range(4)}
    assert seen <= {"0", "1"} and seen
    assert {t.slot for t in tasks} == {"gpu0", "gpu1"}


def test_a_gpu_slot_whose_cuda_check_fails_says_so_with_the_device_ray_gave_it(
    tmp_path: Path, settings: Settings, ray_cluster  # noqa: ANN001
) -> None:
    engine = make_engine("ray", settings, tmp_path / "state", [SlotSpec("gpu0", "cuda")])
    engine.start()
    try:
        events = []
        while not any(e.type == "preflight_failed" for e in events):
            polled = engine.poll(60.0)
            assert polled, f"nothing within 60 s; saw {[e.type for e in events]}"
            events += polled
    finally:
        engine.stop()
    failed = next(e for e in events if e.type == "preflight_failed")
    assert failed.message["code"] == "CUDA_UNAVAILABLE"
    assert failed.message["details"]["cuda_visible_devices"] in ("0", "1")
    slot = engine.slot("gpu0")
    assert slot.status is SlotStatus.FAILED and slot.error and slot.error["code"] == "CUDA_UNAVAILABLE"
    assert not engine.restart("gpu0")


def test_a_self_sized_engine_takes_every_gpu_and_a_node_that_joins_gets_a_slot(
    tmp_path: Path, settings: Settings, ray_cluster  # noqa: ANN001
) -> None:
    settings = settings.model_copy(update={"slot_preflight": False})
    engine = make_engine("ray", settings, tmp_path / "state", [])
    engine.start()
    joined = None
    try:
        assert [h.name for h in engine.slots] == ["gpu0", "gpu1"]
        seen = until(engine, lambda: all(h.status is SlotStatus.IDLE for h in engine.slots))
        assert {h.where["cuda_visible_devices"] for h in engine.slots} == {"0", "1"}  # type: ignore[index]
        joined = ray_cluster.add_node(num_cpus=1, num_gpus=1)
        seen = until(engine, lambda: "gpu2" in [h.name for h in engine.slots] and engine.slot("gpu2").status is SlotStatus.IDLE)
        assert "slots_changed" in [e.type for e in seen]
        gpu2 = engine.slot("gpu2")
        assert gpu2.where and gpu2.where["node_id"] == joined.node_id and gpu2.where["cuda_visible_devices"] == "0"
        assert engine.capacity().total == 3
    finally:
        engine.stop()
        if joined is not None:
            ray_cluster.remove_node(joined)


def until(engine: Engine, done: Callable[[], bool], within_s: float = 90.0) -> list:
    """Poll the engine until `done()`; returns the events seen."""
    seen: list = []
    give_up = time.monotonic() + within_s
    while not done():
        assert time.monotonic() < give_up, f"not within {within_s} s; saw {[e.type for e in seen]}"
        seen += engine.poll(1.0)
    return seen


def test_transcribe_command_on_the_ray_engine(ray_cluster, tmp_path: Path, speech: dict[str, Path]) -> None:
    """`scribefleet transcribe --engine ray --ray-address ADDR`: the command's slots are Ray actors."""
    import json
    import subprocess
    import sys

    cli = [sys.executable, "-m", "scribefleet.cli.main"]
    out = tmp_path / "out"
    args = [*cli, "transcribe", str(speech["en01.wav"]), "-o", str(out), "-f", "txt", "--engine", "ray",
            "--ray-address", ray_cluster.cluster.address, "--slots", "1", "--device", "cpu", "--json"]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (job,) = json.loads(proc.stdout)["jobs"]
    assert job["state"] == "complete" and "fox" in (out / "en01.txt").read_text().lower()
    log = (out / ".scribefleet" / "logs" / "scribefleet.log").read_text()
    assert "connected to the Ray cluster" in log
    shown = subprocess.run([*cli, "status", job["id"], "--state", str(out), "--json"], capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    node = json.loads(shown.stdout)["node"]  # the Ray node its slot ran on: "host (ip)"
    assert node and node.endswith(")") and "(" in node, shown.stdout
    bad = subprocess.run([*cli, "transcribe", str(speech["en01.wav"]), "-o", str(out), "--engine", "thread"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "choose local or ray" in bad.stderr


def test_slots_go_only_to_nodes_with_the_slot_resource(
    tmp_path: Path, settings: Settings, store: Store, ray_cluster  # noqa: ANN001
) -> None:
    """SCRIBEFLEET_RAY_SLOT_RESOURCE: a self-sized engine counts, and its actors land on, labelled nodes only."""
    labelled = ray_cluster.add_node(num_cpus=1, resources={"scribefleet-slots": 2})
    try:
        settings = settings.model_copy(update={"ray_slot_resource": "scribefleet-slots"})
        engine = make_engine("ray", settings, tmp_path / "state", [])
        work = tmp_path / "work"
        work.mkdir()
        batch = store.ensure_batch("labelled", "plan", {}, str(work))
        for i in range(3):
            store.add_task(batch, f"t{i}", "shell", {"run": f"echo {i} > t{i}.txt", "cwd": str(work)})
        run(store, engine, settings, batch)
        # the session cluster's GPU node declares no label: no GPU slot, one CPU slot on the labelled node
        assert [h.name for h in engine.slots] == ["cpu0"]
        assert engine.slots[0].where and engine.slots[0].where["node_id"] == labelled.node_id
        assert all(t.state is TaskState.COMPLETE for t in store.tasks(batch))
    finally:
        ray_cluster.remove_node(labelled)


def test_more_slots_than_the_cluster_holds_are_named_at_start_and_the_batch_still_runs(
    ray_cluster, tmp_path: Path, speech: dict[str, Path]  # noqa: ANN001
) -> None:
    """`--slots 9` of one thread each on the session's cluster of 4 CPUs (5 while a node another test removed
    is still counted): the run went on with the slots that fit and nobody was told why the others never came
    (only after SCRIBEFLEET_SLOT_READY_TIMEOUT_S, 3 minutes)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    args = [sys.executable, "-m", "scribefleet", "transcribe", str(speech["en01.wav"]), "-o", str(out), "-f", "txt",
            "--engine", "ray", "--ray-address", ray_cluster.cluster.address, "--slots", "9", "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "SCRIBEFLEET_CPU_THREADS": "1"}
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fox" in (out / "en01.txt").read_text().lower()
    log = (out / ".scribefleet" / "logs" / "scribefleet.log").read_text()
    assert "WARNING [engine] 9 slot(s) need 9 CPU; the Ray cluster has " in log, log[-3000:]


def _ray_transcribe_until_loaded(ray_cluster, wav: Path, out: Path, **env: str):  # noqa: ANN001, ANN202
    """`transcribe WAV --engine ray` on one CPU slot, read until that slot is transcribing ("loaded model
    tiny.en"): the process, what it printed so far, and its command line and environment (to run it again)."""
    import os
    import subprocess
    import sys

    args = [sys.executable, "-m", "scribefleet", "transcribe", str(wav), "-o", str(out), "-f", "txt", "--engine",
            "ray", "--ray-address", ray_cluster.cluster.address, "--slots", "1", "--device", "cpu", "--batch-size",
            "1"]  # fmt: skip
    env = {**os.environ, "SCRIBEFLEET_CPU_THREADS": "1", **env}
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stderr:  # type: ignore[union-attr]
        lines.append(line)
        if "loaded model tiny.en" in line:
            break
    return proc, "".join(lines), args, env


def _the_queued_job(out: Path) -> dict:
    """The one job of the run whose state dir is OUT, as `status --json` shows it: queued (nothing runs it)."""
    import json
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-m", "scribefleet", "status", "--state", str(out), "--json"],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    (job,) = json.loads(shown.stdout)["jobs"]
    assert job["state"] == "queued", job
    return job


def test_ctrl_c_leaves_the_job_queued_not_running_and_the_rerun_finishes_it(
    ray_cluster, tmp_path: Path, real_speech: dict[str, tuple[Path, str]]  # noqa: ANN001
) -> None:
    """Ctrl-C in the middle of a transcription on Ray: the command stopped its slots and exited 130, yet
    `status` went on saying "running" (elapsed growing) for a job nothing ran, until the next run."""
    import signal
    import subprocess
    import sys

    from helpers import wer

    wav, reference = real_speech["sonnet001"]
    out = tmp_path / "out"
    proc, said, args, env = _ray_transcribe_until_loaded(ray_cluster, wav, out)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted:" in rest, said + rest
    job = _the_queued_job(out)
    logs = subprocess.run([sys.executable, "-m", "scribefleet", "logs", job["id"], "--state", str(out)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "recovered" in logs.stdout, logs.stdout[-3000:]
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert wer(reference, (out / f"{wav.stem}.txt").read_text()) <= 0.2


def test_sigterm_stops_a_ray_run_as_ctrl_c_does_exit_143_and_the_job_is_queued(
    ray_cluster, tmp_path: Path, real_speech: dict[str, tuple[Path, str]]  # noqa: ANN001
) -> None:
    """SIGTERM to a run on the Ray engine printed Ray's native stack dump and exited 15 (ray.init's own
    handler), its job left `running`. It is now stopped as Ctrl-C stops it: one line, exit 143, job queued."""
    import signal

    wav, _ = real_speech["sonnet001"]
    out = tmp_path / "out"
    proc, said, _, _ = _ray_transcribe_until_loaded(ray_cluster, wav, out, HOME=str(tmp_path), RAY_AUTH_MODE="token")
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=120)
    said += rest
    assert proc.returncode == 143, said
    assert rest.strip().splitlines()[-1] == "terminated (SIGTERM): what finished is recorded; run the same " \
        "command again to resume", said  # fmt: skip
    assert "SIGTERM received" not in said and "Traceback" not in said and "***" not in said, said
    _the_queued_job(out)
