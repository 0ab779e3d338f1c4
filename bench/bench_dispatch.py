"""Dispatch overhead: N no-op shell tasks through the dispatcher versus `xargs -P<slots>`, in one run.

Times, on the same machine in the same run:

  xargs        `xargs -P2` running N times `bash -c true` (the floor: a fork+exec of bash per task)
  scribefleet  N shell tasks `true` in one batch of a fresh Store, run by a Dispatcher in burst
               mode on a LocalEngine with 2 CPU slots (slot start-up included)
  ray          the same on the ray engine (2 CPU slots as Ray actors) on a private one-node Ray
               cluster started before the clock runs (actor start-up included); skipped
               without the `ray` extra

and prints milliseconds per task (wall time / N) for each and the difference,
which is what the dispatcher, the store, the socket protocol and the slot add
per task. Goal (issue 3): at most 5 ms per task. Adding the tasks to the store
is timed apart (submission is not dispatch). Machines here are shared and
noisy: compare the two numbers of one run, and repeat (`--repeat`). The CPU
milliseconds per task (this process = the dispatcher; children = slots and
their commands, or xargs and its bash) say where the time goes and move less
with the load than wall time does.

The ray column's CPU numbers count this process only: Ray's own processes are
not children that get reaped.

Usage: python bench/bench_dispatch.py [--tasks N] [--slots S] [--repeat R] [--profile FILE] [--no-ray]
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scribefleet.config import Settings
from scribefleet.dispatch.dispatcher import Dispatcher
from scribefleet.engines import make_engine
from scribefleet.engines.base import SlotSpec
from scribefleet.logs import setup_logging
from scribefleet.store import Store, TaskState


def cpu_s() -> tuple[float, float]:
    """(CPU seconds of this process, of its reaped children), user + system."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def time_xargs(tasks: int, slots: int) -> tuple[float, float]:
    """(wall seconds, children's CPU seconds) for `xargs -P<slots>` to run `bash -c true` `tasks` times."""
    lines = "".join("true\n" for _ in range(tasks)).encode()
    _, kids_before = cpu_s()
    started = time.perf_counter()
    subprocess.run(["xargs", f"-P{slots}", "-n1", "bash", "-c"], input=lines, check=True)
    return time.perf_counter() - started, cpu_s()[1] - kids_before


def time_dispatcher(
    root: Path, tasks: int, slots: int, profile: Path | None, engine_name: str = "local"
) -> tuple[float, float, float, float]:
    """Seconds to add the tasks, then wall, own CPU and children's CPU seconds of the dispatcher's run."""
    state = root / engine_name / "state"
    settings = Settings(cache_dir=root / "cache", _env_file=None)
    setup_logging(state / "logs" / "scribefleet.log")  # INFO to a file, as the CLI runs it
    store = Store.open(state)
    try:
        started = time.perf_counter()
        batch = store.ensure_batch("bench", "plan", {}, str(root))
        for i in range(tasks):
            store.add_task(batch, f"t{i:05d}", "shell", {"run": "true", "cwd": str(root)})
        added_s = time.perf_counter() - started
        engine = make_engine(engine_name, settings, state, [SlotSpec(f"cpu{i}", "cpu") for i in range(slots)])
        profiler = cProfile.Profile() if profile else None
        me_before, kids_before = cpu_s()
        started = time.perf_counter()
        try:
            if profiler:
                profiler.enable()
            Dispatcher(store, engine, settings).run(burst=True, batch_id=batch)
        finally:
            if profiler:
                profiler.disable()
            run_s = time.perf_counter() - started
            me_after = cpu_s()[0]
            engine.stop()  # slots are reaped here: their CPU counts once they are
            kids_s = cpu_s()[1] - kids_before
        if profiler and profile:
            profiler.dump_stats(profile)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        counts = store.counts(batch)
        if counts[TaskState.COMPLETE] != tasks:
            raise SystemExit(f"not every task completed: {counts}")
    finally:
        store.close()
        setup_logging(None)
        logging.getLogger("scribefleet").setLevel(logging.WARNING)
    return added_s, run_s, me_after - me_before, kids_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the dispatcher run here")
    parser.add_argument("--no-ray", action="store_true", help="leave out the ray engine's column")
    args = parser.parse_args()
    ray = None if args.no_ray else _ray()
    if shutil.which("xargs") is None:
        raise SystemExit("xargs is not installed")
    n = args.tasks
    print(f"{n} no-op shell tasks on {args.slots} slots")
    for round_ in range(1, args.repeat + 1):
        with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as tmp:
            xargs_s, xargs_cpu_s = time_xargs(n, args.slots)
            added_s, ours_s, own_cpu_s, kids_cpu_s = time_dispatcher(Path(tmp), n, args.slots, args.profile)
            if ray is not None:
                ray.init(address="local", num_cpus=args.slots, include_dashboard=False, log_to_driver=False)
                try:
                    _, ray_s, ray_cpu_s, _ = time_dispatcher(Path(tmp), n, args.slots, None, "ray")
                finally:
                    ray.shutdown()
        xargs_ms, ours_ms = 1000 * xargs_s / n, 1000 * ours_s / n
        print(
            f"round {round_}: xargs -P{args.slots} {xargs_ms:.2f} ms/task | scribefleet {ours_ms:.2f} ms/task "
            f"| overhead {ours_ms - xargs_ms:+.2f} ms/task (goal <= 5) | adding the tasks {1000 * added_s / n:.2f} ms/task\n"
            f"         CPU per task: xargs+bash {1000 * xargs_cpu_s / n:.2f} ms | dispatcher {1000 * own_cpu_s / n:.2f} ms "
            f"+ slots+bash {1000 * kids_cpu_s / n:.2f} ms | load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        if ray is not None:
            ray_ms = 1000 * ray_s / n
            print(
                f"         ray engine {ray_ms:.2f} ms/task | overhead {ray_ms - xargs_ms:+.2f} ms/task, "
                f"{ray_ms - ours_ms:+.2f} ms/task over the local engine | dispatcher CPU {1000 * ray_cpu_s / n:.2f} ms/task"
            )
    return 0


def _ray():  # noqa: ANN202 - the ray module, or None without the extra
    # token authentication on, as docs/ray.md runs clusters, with a token of this run's own:
    # without one, Ray would generate one and save it in ~/.ray/auth_token
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    try:
        import ray
    except ImportError:
        print("ray is not installed (pip install 'scribefleet[ray]'): no ray column")
        return None
    return ray


if __name__ == "__main__":
    sys.exit(main())
