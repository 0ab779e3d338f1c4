"""Cost per task (issue 14): dispatch overhead over `xargs -P`, slot memory and controller memory, in one run.

Prints each figure with its goal beside it:

  dispatch    bench_dispatch.py's measure (N no-op shell tasks through a Dispatcher on a LocalEngine
              with S CPU slots, slot start-up included, against `xargs -P<S>` running `bash -c true`
              N times), best of --repeat rounds, on the machine as it is ("as is", its load average
              printed beside), then loaded: one more process per core spinning on the CPU meanwhile
              (both contenders run under that load).
              Goal: at most 1 ms per task over xargs, loaded or not.
  slot        resident memory (VmRSS, and its peak VmHWM) of one CPU slot process holding tiny.en,
              after it transcribed the real recording tests/data/real/sonnet001.wav in the default
              mode (batched, with VAD). Goal: at most 400 MB.
  controller  resident memory of `scribefleet serve` (auth on, one CPU slot) after start-up and one
              authenticated GET, the controller process alone (its slot processes are listed
              apart), and the heavy modules it imported: none of ray, torch, boto3, yt_dlp,
              faster_whisper, ctranslate2 may be loaded while nothing uses them. Goal: at most 150 MB.
  stream      one poll of a batch's event stream (GET /api/batches/{id}/events, four a second, on the
              controller's event loop) for a batch of --tasks jobs, all ended but 10: reading and drawing
              every job again (as before) against reading only the open ones (service/streams.py
              BatchTasks), best of --repeat. No goal: the ratio, and what a poll costs.

Machines here are shared and noisy: compare the two numbers of one round, and repeat.
Usage: python bench/bench_cost.py [--tasks N] [--slots S] [--repeat R] [--only dispatch,slot,controller,stream]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_dispatch import time_dispatcher, time_xargs  # noqa: E402

OVERHEAD_GOAL_MS, SLOT_GOAL_MB, CONTROLLER_GOAL_MB = 1.0, 400.0, 150.0
HEAVY = ("ray", "torch", "boto3", "botocore", "yt_dlp", "faster_whisper", "ctranslate2", "numpy", "av")
MUST_NOT = {"ray", "torch", "boto3", "yt_dlp", "faster_whisper", "ctranslate2"}


def verdict(value: float, goal: float) -> str:
    return f"(goal <= {goal:g}: {'met' if value <= goal else 'NOT met'})"


def proc_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of /proc/PID/status in MB (MiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


# -- dispatch overhead -------------------------------------------------------------


@contextlib.contextmanager
def cpu_load(procs: int) -> Iterator[None]:
    """`procs` processes spinning on the CPU while the block runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(procs)]
    try:
        time.sleep(0.5)  # let the load average notice
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def dispatch_round(tasks: int, slots: int) -> tuple[float, float]:
    """(xargs ms/task, scribefleet ms/task) of one round."""
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        xargs_s, _ = time_xargs(tasks, slots)
        _, ours_s, _, _ = time_dispatcher(Path(tmp), tasks, slots, None)
    return 1000 * xargs_s / tasks, 1000 * ours_s / tasks


def bench_dispatch(tasks: int, slots: int, repeat: int) -> None:
    print(f"\ndispatch: {tasks} no-op shell tasks on {slots} slots, best of {repeat} (ms per task)")
    for label, load in (("as is", 0), ("loaded", os.cpu_count() or 1)):
        with cpu_load(load) if load else contextlib.nullcontext():
            rounds = [dispatch_round(tasks, slots) for _ in range(repeat)]
            load_avg = os.getloadavg()[0]
        xargs_ms = min(x for x, _ in rounds)
        ours_ms = min(o for _, o in rounds)
        over = ours_ms - xargs_ms
        spin = f", {load} spinning processes" if load else ""
        print(f"  {label:<7} xargs -P{slots} {xargs_ms:.2f} | scribefleet {ours_ms:.2f} | overhead {over:+.2f} ms/task "
              f"{verdict(over, OVERHEAD_GOAL_MS)}  [load average {load_avg:.1f} on {os.cpu_count()} cores{spin}]")


# -- slot memory -----------------------------------------------------------------


def bench_slot(threads: int) -> None:
    from scribefleet.config import Settings
    from scribefleet.engines.base import SlotSpec
    from scribefleet.engines.local import LocalEngine
    from scribefleet.options import TranscribeOptions
    from scribefleet.pipeline.models import resolve_model

    sys.path.insert(0, str(ROOT / "tests"))
    from data.fetch_real import fetch

    audio = fetch() / "sonnet001.wav"
    with tempfile.TemporaryDirectory(prefix="bench-cost-slot-") as tmp:
        work = Path(tmp)
        settings = Settings(cache_dir=work / "cache", _env_file=None)
        resolved = resolve_model("tiny.en", settings)
        options = TranscribeOptions(formats="txt")  # the default mode: batched, with VAD
        spec = {
            "input_path": str(audio), "display": audio.name, "work_dir": str(work / "job"),
            "outputs": {"txt": str(work / "out" / "sonnet001.txt")}, "options": options.model_dump(mode="json"),
            "model_path": str(resolved.path), "model_id": resolved.model_id,
        }  # fmt: skip
        engine = LocalEngine(settings, work / "state", [SlotSpec("cpu0", "cpu", cpu_threads=threads)])
        engine.start()
        try:
            _wait_for(engine, "ready")
            started = time.monotonic()
            engine.assign("cpu0", {"task_id": "sonnet", "kind": "transcribe", "spec": spec, "attempt": 1})
            end = _wait_for(engine, "done", "failed")
            took_s = time.monotonic() - started
            if end.type != "done":
                raise SystemExit(f"the transcription failed: {end.message}")
            pid = engine.slot("cpu0").pid
            assert pid is not None
            rss, peak = proc_mb(pid), proc_mb(pid, "VmHWM")
        finally:
            engine.stop()
    print(f"\nslot: one CPU slot ({threads} thread(s)) with tiny.en after transcribing sonnet001.wav ({took_s:.1f} s)")
    print(f"  resident {rss:.0f} MB {verdict(rss, SLOT_GOAL_MB)}, peak {peak:.0f} MB {verdict(peak, SLOT_GOAL_MB)}")


def _wait_for(engine, *types: str, within_s: float = 300.0):  # noqa: ANN001, ANN202 - an Engine, a SlotEvent
    give_up = time.monotonic() + within_s
    while time.monotonic() < give_up:
        for event in engine.poll(1.0):
            if event.type in types:
                return event
            if event.type in ("died", "preflight_failed"):
                raise SystemExit(f"the slot {event.type}: {event.stderr_tail or event.message}")
    raise SystemExit(f"no {'/'.join(types)} from the slot within {within_s:.0f} s")


# -- controller memory -------------------------------------------------------------

def bench_controller() -> None:
    token = secrets.token_hex(24)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="bench-cost-serve-") as tmp:
        modules_file = Path(tmp) / "modules.txt"
        env = {**os.environ, "SCRIBEFLEET_API_TOKENS": token}
        # `scribefleet serve` as the console script runs it, plus a SIGUSR1 handler that writes the
        # names of the loaded modules to a file (the only change to the measured process)
        code = (
            "import signal, sys\n"
            f"signal.signal(signal.SIGUSR1, lambda *_: open({str(modules_file)!r}, 'w').write('\\n'.join(sorted(sys.modules))))\n"
            "from scribefleet.cli.main import main\n"
            "main()\n"
        )
        cmd = [sys.executable, "-c", code, "serve", "--port", str(port), "--state", str(Path(tmp) / "state"),
               "--slots", "1", "--device", "cpu"]  # fmt: skip
        with open(Path(tmp) / "serve.log", "wb") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            _get(f"{base}/health", None, within_s=60.0, proc=proc, log=Path(tmp) / "serve.log")
            _get(f"{base}/api/jobs", token, within_s=10.0, proc=proc, log=Path(tmp) / "serve.log")
            time.sleep(2.0)  # idle: start-up done, the one request answered, the slot started
            rss = proc_mb(proc.pid)
            slots = {int(p): proc_mb(int(p)) for p in _children(proc.pid)}
            os.kill(proc.pid, signal.SIGUSR1)
            for _ in range(50):
                if modules_file.exists() and modules_file.stat().st_size:
                    break
                time.sleep(0.1)
            loaded = set(modules_file.read_text().split()) if modules_file.exists() else set()
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    heavy = [m for m in HEAVY if m in loaded]
    bad = sorted(MUST_NOT & set(heavy))
    print(f"\ncontroller: `scribefleet serve` (one CPU slot) after start-up and one GET, {len(loaded)} modules loaded")
    print(f"  resident {rss:.0f} MB {verdict(rss, CONTROLLER_GOAL_MB)}; its slot processes apart: "
          + (", ".join(f"pid {p} {mb:.0f} MB" for p, mb in slots.items()) or "none"))
    print(f"  heavy modules loaded: {', '.join(heavy) or 'none'}"
          + (f"  -- NOT met: {', '.join(bad)} must not be imported while unused" if bad else ""))


def _children(pid: int) -> list[str]:
    """Child pids of every thread of `pid` (the slots are started by the dispatcher's thread)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += (task / "children").read_text().split()
    return found


def _get(url: str, token: str | None, *, within_s: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    give_up = time.monotonic() + within_s
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"scribefleet serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                answer.read()
                return
        except OSError:
            if time.monotonic() > give_up:
                raise SystemExit(f"no answer from {url} within {within_s:.0f} s:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.2)


def bench_stream(tasks: int, repeat: int) -> None:
    from scribefleet.config import Settings
    from scribefleet.jobs.views import batch_progress
    from scribefleet.options import TranscribeOptions
    from scribefleet.service import jobs as J
    from scribefleet.service.controller import Controller
    from scribefleet.service.streams import BatchTasks

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(_env_file=None, cache_dir=Path(tmp) / "cache", offline=True)
        controller = Controller(settings, Path(tmp) / "state", slots=1, device="cpu")  # never started: idle
        writer = controller.uploads.new_writer("a.wav")
        writer.write((ROOT / "tests" / "data" / "en01.wav").read_bytes())
        upload = writer.finish()
        batch = J.create_batch(controller, "bench")
        ids = [J.create_job(controller, upload.upload_id, TranscribeOptions(formats=["txt"]), batch.id).id
               for _ in range(tasks)]  # fmt: skip
        for task_id in ids[:-10]:
            controller.cancel(task_id)  # applied at once: no dispatcher runs

        def whole() -> None:
            rows = controller.store.tasks(batch.id)
            [J.job_json(t, controller) for t in rows]
            J.batch_progress_json(rows)

        watched = BatchTasks(controller, batch.id)
        watched.read()  # the stream's first poll reads every job once

        def incremental() -> None:
            batch_progress(view for _, _, view in watched.read()).as_api_json()

        def best_ms(poll) -> float:  # noqa: ANN001
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                poll()
                times.append((time.perf_counter() - start) * 1000)
            return min(times)

        before, after = best_ms(whole), best_ms(incremental)
        controller.stop()
    print(f"\nstream: one poll of a batch's event stream, {tasks} jobs of which 10 open, best of {repeat}")
    print(f"  every job read again {before:.1f} ms | ended jobs read once {after:.1f} ms | {before / after:.0f}x less")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="dispatch rounds per load (the best is kept)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the measured slot")
    parser.add_argument("--only", default="dispatch,slot,controller,stream",
                        help="which of dispatch,slot,controller,stream to run")
    args = parser.parse_args()
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    if "dispatch" in parts:
        bench_dispatch(args.tasks, args.slots, args.repeat)
    if "slot" in parts:
        bench_slot(args.threads)
    if "controller" in parts:
        bench_controller()
    if "stream" in parts:
        bench_stream(args.tasks, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
