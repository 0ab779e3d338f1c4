"""The dispatcher on real slots with shell tasks: exactly once, concurrency, crashes, timeouts, cascade."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from helpers import exits_within

from scribefleet.dispatch.monitor import DispatchEvent
from scribefleet.store import TaskState

if TYPE_CHECKING:
    from .conftest import Fleet


def test_many_tasks_on_two_slots_each_complete_exactly_once(fleet: Fleet) -> None:
    keys = [f"t{i:03d}" for i in range(100)]
    for key in keys:
        # 20 ms each: 2 s of work, so a slot that comes up a second after the other (a Ray actor on a busy
        # machine) still gets some, as a real batch's second slot would
        fleet.add(key, f"echo {key} >> runs.txt; sleep 0.02")
    fleet.run(slots=2)
    tasks = fleet.store.tasks(fleet.batch_id)
    assert {t.state for t in tasks} == {TaskState.COMPLETE}
    assert all(t.attempts == 1 for t in tasks)
    assert sorted((fleet.work / "runs.txt").read_text().split()) == keys
    dispatched = [e for e in fleet.store.events(fleet.batch_id) if e.type == "dispatched"]
    assert len(dispatched) == 100 and {e.data["slot"] for e in dispatched} == {"cpu0", "cpu1"}
    assert "MONITOR slots busy 0/2 | queue empty | running 0 | stuck 0 | done 100 failed 0" in fleet.log_text


def test_two_slots_run_two_tasks_at_the_same_time(fleet: Fleet) -> None:
    # a rendezvous through two FIFOs: neither command can finish unless both run at once
    os.mkfifo(fleet.work / "a.fifo")
    os.mkfifo(fleet.work / "b.fifo")
    fleet.add("a", "date +%s.%N > a.start; echo A > b.fifo; read x < a.fifo; date +%s.%N > a.end", timeout_s=30, max_attempts=1)
    fleet.add("b", "date +%s.%N > b.start; read x < b.fifo; echo B > a.fifo; date +%s.%N > b.end", timeout_s=30, max_attempts=1)
    fleet.run(slots=2)
    assert fleet.task("a").is_complete and fleet.task("b").is_complete
    t = {name: float((fleet.work / name).read_text()) for name in ("a.start", "a.end", "b.start", "b.end")}
    assert t["a.start"] < t["b.end"] and t["b.start"] < t["a.end"]  # the two runs overlap
    assert fleet.task("a").slot != fleet.task("b").slot


@pytest.mark.local_only("SIGKILLs the slot process")
def test_a_slot_killed_mid_task_is_restarted_and_the_task_requeued(fleet: Fleet) -> None:
    marker = fleet.work / "marker"
    # the second run outlasts RUN_STAGE_AFTER_S, so it reports its run stage as the first did
    fleet.add("victim", "if [ -f marker ]; then echo second run; sleep 0.3; else sleep 30; fi", max_attempts=3)
    killed: list[int] = []

    def kill_slot_on_first_attempt(event: DispatchEvent) -> None:
        if event.type == "task_progress" and event.task.attempts == 1 and not killed:
            marker.touch()
            pid = fleet.engine.slot(event.data["slot"]).pid
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    fleet.run(slots=1, listeners=[kill_slot_on_first_attempt])
    task = fleet.task("victim")
    assert task.is_complete and task.attempts == 2 and killed
    assert fleet.event_types("victim") == ["task_added", "dispatched", "stage", "retry", "dispatched", "stage", "completed"]
    log = fleet.log_text
    assert "slot cpu0 crashed (killed by SIGKILL) while running task victim" in log
    assert "task victim re-queued after [SLOT_CRASHED] on cpu0 (attempt 1/3" in log
    assert "slot cpu0 restarted" in log and "task victim completed on cpu0" in log


@pytest.mark.local_only("SIGSTOPs the slot process")
def test_a_slot_whose_heartbeats_stop_is_declared_hung_killed_restarted_and_its_task_requeued(fleet: Fleet) -> None:
    fleet.settings.heartbeat_s = 0.2
    fleet.settings.slot_silent_after_s = 1.0
    os.mkfifo(fleet.work / "up.fifo")
    run = "echo $$ >> shells; if [ -f marker ]; then exit 0; fi; touch marker; echo up > up.fifo; sleep 30"
    fleet.add("frozen", run, timeout_s=20)  # unnoticed, the hang would end as TASK_TIMEOUT instead
    stopped: list[int] = []
    heard: list[DispatchEvent] = []

    def freeze_slot_once_running(event: DispatchEvent) -> None:
        heard.append(event)
        if event.type == "task_progress" and not stopped:
            fleet.wait_fifo("up.fifo")
            stopped.append(fleet.engine.slot("cpu0").pid)
            os.kill(stopped[0], signal.SIGSTOP)  # alive, but silent: no more heartbeats

    fleet.run(slots=1, listeners=[freeze_slot_once_running])
    task = fleet.task("frozen")
    assert task.is_complete and task.attempts == 2  # the hung attempt counts
    retry = [e for e in fleet.store.events(task_id=task.id) if e.type == "retry"]
    assert [e.data["code"] for e in retry] == ["SLOT_CRASHED"] and "stopped answering" in retry[0].data["message"]
    assert [e.data["pid"] for e in heard if e.type == "slot_hung"] == stopped
    first_shell = int((fleet.work / "shells").read_text().split()[0])
    assert _gone(stopped[0]) and _gone(first_shell)  # the whole group went, the stopped slot included
    log = fleet.log_text
    assert f"WARNING [dispatch] slot cpu0 (pid {stopped[0]}) is hung: no heartbeat for " in log
    assert "s (limit 1 s) while running task frozen, attempt 1; killing its process group" in log
    assert "task frozen re-queued after [SLOT_CRASHED] on cpu0 (attempt 1/3" in log and "slot cpu0 restarted" in log


@pytest.mark.local_only("the command kills its slot process ($PPID)")
def test_a_task_that_kills_its_slot_every_time_fails_with_slot_crashed(fleet: Fleet) -> None:
    fleet.settings.shell_allow.append(r"kill -9 \$PPID")
    fleet.add("crasher", "kill -9 $PPID", max_attempts=2)
    fleet.add("bystander", "echo fine")
    fleet.run(slots=1)
    crasher = fleet.task("crasher")
    assert crasher.state is TaskState.FAILED and crasher.error_code == "SLOT_CRASHED" and crasher.attempts == 2
    assert crasher.error_details["how"] == "killed by SIGKILL"
    assert fleet.task("bystander").is_complete  # the restarted slot goes on with the batch


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].startswith("Z")  # a zombie waiting to be reaped is dead
    except FileNotFoundError:
        return True


def test_a_timeout_kills_the_whole_process_group_and_fails_the_task(fleet: Fleet) -> None:
    fleet.add("slow", "echo $$ > shell.pid; sleep 30 & echo $! > child.pid; wait", timeout_s=0.5, max_attempts=1)
    fleet.run(slots=1)
    task = fleet.task("slow")
    assert (task.state, task.error_code) == (TaskState.FAILED, "TASK_TIMEOUT")
    assert "longer than its 0.5 s limit" in task.error_message
    for name in ("shell.pid", "child.pid"):
        assert _gone(int((fleet.work / name).read_text()))
    assert "task slow on cpu0 ran past its" in fleet.log_text


def test_a_timed_out_task_is_retried_while_attempts_remain(fleet: Fleet) -> None:
    fleet.add("flaky", "if [ -f marker ]; then exit 0; fi; touch marker; sleep 30", timeout_s=1.0, max_attempts=2)
    fleet.run(slots=1)
    task = fleet.task("flaky")
    assert task.is_complete and task.attempts == 2
    retry = [e for e in fleet.store.events(task_id=task.id) if e.type == "retry"]
    assert [e.data["code"] for e in retry] == ["TASK_TIMEOUT"]


def test_a_failure_skips_its_dependents_and_names_the_task_at_fault(fleet: Fleet) -> None:
    fleet.add("a", "echo oops >&2; exit 3")
    fleet.add("b", "touch b.ran", needs=["a"])
    fleet.add("c", "touch c.ran", needs=["b"])
    fleet.add("d", "touch d.ran")
    fleet.run(slots=2)
    a, b, c = fleet.task("a"), fleet.task("b"), fleet.task("c")
    assert (a.state, a.error_code) == (TaskState.FAILED, "SHELL_FAILED")
    assert a.error_details["exit_status"] == 3 and a.error_details["stderr_tail"] == "oops"
    assert a.attempts == 1  # a non-zero exit is not retried
    for skipped in (b, c):
        assert (skipped.state, skipped.error_code) == (TaskState.SKIPPED, "DEPENDENCY_FAILED")
        assert skipped.error_details["root"] == "a"
    assert "'a', which failed" in b.error_message and "'b', which was skipped because 'a'" in c.error_message
    assert not (fleet.work / "b.ran").exists() and not (fleet.work / "c.ran").exists()
    assert fleet.task("d").is_complete


def test_cancel_of_a_queued_and_of_a_running_task(fleet: Fleet) -> None:
    from scribefleet.store import Store

    os.mkfifo(fleet.work / "up.fifo")
    running = fleet.add("running", "echo $$ > running.pid; echo up > up.fifo; sleep 30")
    queued = fleet.add("queued", "touch queued.ran")
    fleet.add("after_running", "touch after.ran", needs=["running"])
    fleet.add("after_queued", "touch after.ran", needs=["queued"])
    other_terminal = Store.open(fleet.state_dir)  # `scribefleet cancel` from another terminal
    other_terminal.request_cancel(queued)

    def cancel_once_up(event: DispatchEvent) -> None:
        if event.type == "task_progress" and event.task.id == running:
            fleet.wait_fifo("up.fifo")  # returns once the command is really running
            other_terminal.request_cancel(running)

    fleet.run(slots=1, listeners=[cancel_once_up])
    other_terminal.close()
    for key in ("running", "queued"):
        task = fleet.task(key)
        assert (task.state, task.error_code) == (TaskState.CANCELED, "USER_CANCELED")
    for key in ("after_running", "after_queued"):
        assert (fleet.task(key).state, fleet.task(key).error_code) == (TaskState.SKIPPED, "DEPENDENCY_FAILED")
    assert _gone(int((fleet.work / "running.pid").read_text()))
    assert not (fleet.work / "queued.ran").exists() and not (fleet.work / "after.ran").exists()
    assert fleet.store.pending_cancels() == []


def test_a_running_task_canceled_is_killed_with_everything_it_started_within_5_s(fleet: Fleet) -> None:
    from scribefleet.store import Store

    os.mkfifo(fleet.work / "up.fifo")
    target = fleet.add("busy", "sleep 60 & echo $! > child.pid; echo $$ > shell.pid; echo up > up.fifo; wait")
    other_terminal = Store.open(fleet.state_dir)
    gone_in_time: list[bool] = []
    watchers: list[threading.Thread] = []

    def watch(pids: list[int]) -> None:  # from the moment the cancel is requested
        gone_in_time.extend(exits_within(pid, 5.0) for pid in pids)

    def cancel_once_up(event: DispatchEvent) -> None:
        if event.type == "task_progress" and not watchers:
            fleet.wait_fifo("up.fifo")
            pids = [int((fleet.work / name).read_text()) for name in ("shell.pid", "child.pid")]
            other_terminal.request_cancel(target)
            watcher = threading.Thread(target=watch, args=(pids,))
            watcher.start()
            watchers.append(watcher)

    fleet.run(slots=1, listeners=[cancel_once_up])
    for watcher in watchers:
        watcher.join()
    other_terminal.close()
    task = fleet.task("busy")
    assert (task.state, task.error_code, task.attempts) == (TaskState.CANCELED, "USER_CANCELED", 1)
    assert gone_in_time == [True, True]
    assert "task busy canceled (its process group on cpu0 was killed)" in fleet.log_text


def test_a_refused_command_never_starts(fleet: Fleet) -> None:
    fleet.add("sneaky", "touch started && sudo rm -rf /tmp/nothing")
    fleet.run(slots=1)
    task = fleet.task("sneaky")
    assert (task.state, task.error_code) == (TaskState.FAILED, "SHELL_COMMAND_NOT_ALLOWED")
    assert task.error_details["refused"] == "sudo rm -rf /tmp/nothing"
    assert not (fleet.work / "started").exists()


def test_progress_stuck_warning_monitor_and_idle_debug_lines(fleet: Fleet) -> None:
    fleet.settings.stuck_after_s = 0.2
    fleet.settings.monitor_interval_s = 0.2
    fleet.settings.heartbeat_s = 0.2
    fleet.add("quiet", "sleep 1")
    fleet.add("next", "true")
    fleet.run(slots=1)
    log = fleet.log_text
    assert "WARNING [dispatch]" not in log  # nothing failed
    assert "task quiet on slot cpu0 is stuck: no progress for" in log
    assert "MONITOR slots busy 1/1 | queue shell:1 | running 1 | stuck 1 | done 0 failed 0" in log
    assert "nothing dispatched - queue: shell:2; free slots: 0 of 1; models loaded: cpu0=[]" in log
    assert "DEBUG   [dispatch] heartbeat from slot cpu0 (quiet)" in log


def test_progress_is_written_to_the_store_and_heard_by_listeners(fleet: Fleet) -> None:
    heard: list[tuple[str, str | None]] = []
    fleet.add("one", "echo hello; sleep 0.5")  # long enough to report its run stage on every engine
    fleet.run(slots=1, listeners=[lambda e: heard.append((e.type, e.task.key if e.task else None))])
    assert ("task_dispatched", "one") in heard and ("task_completed", "one") in heard
    assert ("task_progress", "one") in heard and ("slot_ready", None) in heard
    task = fleet.task("one")
    assert task.result["exit_status"] == 0 and task.progress == 1.0
    log_path = Path(task.result["log"])
    assert log_path == fleet.store.task_log_path(task) and "hello" in log_path.read_text()


@pytest.mark.local_only("slot processes that never become ready")
def test_tasks_fail_instead_of_waiting_forever_when_no_slot_can_start(fleet: Fleet) -> None:
    fleet.settings.slot_ready_timeout_s = 0.001  # every start is "too slow": the slot is given up
    fleet.settings.slot_restart_limit = 2
    fleet.add("a", "true")
    fleet.add("b", "true", needs=["a"])
    fleet.run(slots=1)
    a, b = fleet.task("a"), fleet.task("b")
    assert (a.state, a.error_code, a.attempts) == (TaskState.FAILED, "SLOT_CRASHED", 0)
    assert "died 2 times before it became ready" in a.error_message
    assert (b.state, b.error_code) == (TaskState.SKIPPED, "DEPENDENCY_FAILED")


@pytest.mark.local_only("a cuda slot process and its preflight")
def test_a_gpu_slot_that_fails_preflight_fails_gpu_tasks_instead_of_running_them_on_the_cpu(fleet: Fleet) -> None:
    ctranslate2 = pytest.importorskip("ctranslate2")
    if ctranslate2.get_cuda_device_count() > 0:
        pytest.skip("this machine has a usable GPU; the preflight would pass")
    from scribefleet.dispatch.dispatcher import Dispatcher
    from scribefleet.engines.base import SlotSpec
    from scribefleet.engines.local import LocalEngine, SlotStatus

    fleet.add("needs_gpu", "touch gpu.ran", resources="gpu")
    fleet.add("anywhere", "touch any.ran")
    engine = LocalEngine(fleet.settings, fleet.state_dir, [SlotSpec("gpu0", "cuda", gpu_index=0), SlotSpec("cpu0", "cpu")])
    try:
        Dispatcher(fleet.store, engine, fleet.settings).run(batch_id=fleet.batch_id)
    finally:
        engine.stop()
    gpu_task = fleet.task("needs_gpu")
    assert (gpu_task.state, gpu_task.error_code) == (TaskState.FAILED, "CUDA_UNAVAILABLE")
    assert not (fleet.work / "gpu.ran").exists()
    assert fleet.task("anywhere").is_complete and fleet.task("anywhere").slot == "cpu0"
    assert engine.slot("gpu0").status is SlotStatus.FAILED
    assert "slot gpu0 failed its preflight [CUDA_UNAVAILABLE]" in fleet.log_text


def test_a_cancel_from_another_thread_reaches_the_running_dispatcher_through_the_store(fleet: Fleet) -> None:
    from scribefleet.dispatch import request_cancel
    from scribefleet.store import Store

    os.mkfifo(fleet.work / "up.fifo")
    target = fleet.add("long", "echo $$ > long.pid; echo up > up.fifo; sleep 30")
    fleet.add("after", "touch after.ran", needs=["long"])
    applied: list[bool] = []

    def cancel_from_elsewhere() -> None:  # as `scribefleet cancel` does, with its own store
        fleet.wait_fifo("up.fifo")
        with Store.open(fleet.state_dir) as store:
            applied.append(request_cancel(store, target, fleet.settings))

    canceler = threading.Thread(target=cancel_from_elsewhere)
    canceler.start()
    fleet.run(slots=1)
    canceler.join()
    # left to the running dispatcher, which applied it: only a run killing the task's slot writes this line
    # (`applied` is False unless that run had already ended when the sender looked for it: a loaded machine)
    assert "task long canceled (its process group on cpu0 was killed)" in fleet.log_text, (applied, fleet.log_text)
    assert (fleet.task("long").state, fleet.task("long").error_code) == (TaskState.CANCELED, "USER_CANCELED")
    assert fleet.task("after").state is TaskState.SKIPPED and not (fleet.work / "after.ran").exists()
    assert _gone(int((fleet.work / "long.pid").read_text())) and fleet.store.pending_cancels() == []


def test_dispatcher_cancel_of_a_batch_from_another_thread(fleet: Fleet) -> None:
    from scribefleet.dispatch import Dispatcher

    os.mkfifo(fleet.work / "up.fifo")
    fleet.add("running", "echo up > up.fifo; sleep 30")
    fleet.add("queued", "touch queued.ran")
    engine = fleet.make_engine(1)
    dispatcher = Dispatcher(fleet.store, engine, fleet.settings)

    def cancel_batch() -> None:
        fleet.wait_fifo("up.fifo")
        dispatcher.cancel(fleet.batch_id)

    canceler = threading.Thread(target=cancel_batch)
    canceler.start()
    try:
        dispatcher.run(burst=True, batch_id=fleet.batch_id)
    finally:
        canceler.join()
        engine.stop()
    assert {t.key: t.state for t in fleet.store.tasks(fleet.batch_id)} == {
        "running": TaskState.CANCELED, "queued": TaskState.CANCELED,
    }  # fmt: skip
    assert not (fleet.work / "queued.ran").exists()
    assert "task running canceled (its process group on cpu0 was killed)" in fleet.log_text
