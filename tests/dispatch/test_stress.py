"""Stress: a 300-task shell graph on 4 slots while slots are SIGKILLed at random moments.

Invariant 1 under fire: every task ends complete exactly once in the store, and
no two runs of one task ever overlap. Each command takes an exclusive flock on
its task's lock file with `flock -n` before it starts: the kernel releases that
lock only when every process that holds the file open (the command's bash and
everything it started) has exited, so a retry that started while any process
of a killed run was still alive fails loudly ("overlap"). Each run also logs
`start`/`end` lines (task, pid, time) to one O_APPEND file, whose order the
checker reads as the order things happened.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from collections import defaultdict
from typing import TYPE_CHECKING

import pytest

from scribefleet.dispatch.dispatcher import Dispatcher
from scribefleet.engines.local import LocalEngine, SlotStatus
from scribefleet.store import TaskState

if TYPE_CHECKING:
    from .conftest import Fleet

TASKS, SLOTS, KILLS, SEED = 300, 4, 15, 20260207

COMMAND = (
    "exec 9>>locks/{key}; flock -n 9 || {{ echo \"overlap {key} $$\" >> runs.log; exit 1; }}\n"
    "for n in {needs}; do [ -e done/$n ] || {{ echo \"early {key} $n\" >> runs.log; exit 1; }}; done\n"
    "echo \"start {key} $$ $EPOCHREALTIME\" >> runs.log\n"
    "sleep {sleep_s}\n"
    "touch done/{key}\n"
    "echo \"end {key} $$ $EPOCHREALTIME\" >> runs.log\n"
)


def _graph(rng: random.Random) -> dict[str, list[str]]:
    """task key -> the keys it needs (earlier tasks only; about a third of the tasks have needs)."""
    keys = [f"t{i:03d}" for i in range(TASKS)]
    graph: dict[str, list[str]] = {}
    for i, key in enumerate(keys):
        needs = rng.sample(keys[max(0, i - 12) : i], k=min(i, rng.choice([1, 2]))) if i and rng.random() < 0.35 else []
        graph[key] = needs
    return graph


def _killer(engine: LocalEngine, rng: random.Random, stop: threading.Event, kills: list[tuple[str, int, str]]) -> None:
    """SIGKILL a slot process (mostly busy ones) at random moments, KILLS times at most."""
    while len(kills) < KILLS and not stop.wait(rng.uniform(0.05, 0.35)):
        live = [(h.name, h.proc, h.status) for h in engine.slots if h.proc is not None and h.status.is_alive]
        busy = [s for s in live if s[2] is SlotStatus.BUSY]
        pool = busy if busy and rng.random() < 0.8 else live
        if not pool:
            continue
        name, proc, status = rng.choice(pool)
        try:
            pidfd = os.pidfd_open(proc.pid)  # from here on the pid cannot name another process
        except OSError:
            continue
        try:
            if proc.returncode is None:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                kills.append((name, proc.pid, status.value))
        finally:
            os.close(pidfd)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].startswith("Z")
    except FileNotFoundError:
        return True


@pytest.mark.local_only("SIGKILLs slot processes")
@pytest.mark.slow
def test_random_slot_kills_lose_nothing_and_never_overlap_two_runs_of_a_task(fleet: Fleet) -> None:
    rng = random.Random(SEED)
    fleet.settings.shell_allow_all = True  # exec/flock are not in the default allowlist
    fleet.settings.slot_restart_limit = KILLS + 1  # a slot killed while starting is never given up
    (fleet.work / "locks").mkdir()
    (fleet.work / "done").mkdir()
    graph = _graph(rng)
    for key, needs in graph.items():
        command = COMMAND.format(key=key, needs=" ".join(needs) or "''", sleep_s=rng.choice(["0.02", "0.05", "0.2", "0.5"]))
        fleet.add(key, command, needs=needs, max_attempts=KILLS + 2, timeout_s=60)

    engine = fleet.make_engine(SLOTS)
    stop, kills = threading.Event(), []
    killer = threading.Thread(target=_killer, args=(engine, random.Random(SEED + 1), stop, kills), daemon=True)
    killer.start()
    try:
        Dispatcher(fleet.store, engine, fleet.settings).run(burst=True, batch_id=fleet.batch_id)
    finally:
        stop.set()
        killer.join()
        engine.stop()

    # no retry started while a process of its killed run lived (the lock says so), none before its needs
    lines = (fleet.work / "runs.log").read_text().splitlines()
    assert not [line for line in lines if line.startswith(("overlap", "early"))]

    # the store: each task complete, exactly once, after as many dispatches as attempts
    tasks = fleet.store.tasks(fleet.batch_id)
    assert len(tasks) == TASKS and {t.state for t in tasks} == {TaskState.COMPLETE}
    events = defaultdict(list)
    for e in fleet.store.events(fleet.batch_id):
        events[e.task_id].append(e.type)
    for t in tasks:
        assert events[t.id].count("completed") == 1, t.key
        assert events[t.id].count("dispatched") == t.attempts, t.key
    assert len(kills) >= KILLS // 2, f"only {len(kills)} kills happened"
    assert sum(t.attempts for t in tasks) > TASKS, "no kill hit a running task; the test proved nothing"

    # the runs: an end only for the newest start, no task before its needs
    first_start, last_line, current, ends = {}, {}, {}, defaultdict(int)
    unfinished = []
    for index, line in enumerate(lines):
        what, key, pid = line.split()[:3]
        if what == "start":
            if key in current and current[key][1] is None:
                unfinished.append(int(current[key][0]))  # the previous run of this task never ended: killed
            first_start.setdefault(key, index)
            current[key] = (pid, None)
        else:
            assert what == "end" and current[key][0] == pid, f"line {index}: {line!r} ends a run that a newer one replaced"
            current[key] = (pid, index)
            ends[key] += 1
        last_line[key] = index
    assert set(ends) == set(graph) and all(current[k][1] is not None for k in graph)  # every task's last run ended
    for key, needs in graph.items():
        for need in needs:
            assert last_line[need] < first_start[key], f"{key} started before its need {need} was done"
    assert unfinished, "no run was cut short by a kill"
    assert all(_gone(pid) for pid in unfinished)
    log = fleet.log_text
    # each extra attempt is a re-queue after a logged crash (a kill in the last instant may go unseen)
    assert 0 < log.count("crashed (killed by SIGKILL)") <= len(kills)
    assert log.count("re-queued after [SLOT_CRASHED]") == sum(t.attempts for t in tasks) - TASKS
