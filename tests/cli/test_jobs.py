"""`scribefleet cancel` and `scribefleet logs` from another process, against a running or finished plan."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

from cli.test_plan import CLI, await_fifo, run_cli, store_of, write_plan
from helpers import exits_within

ISO_MS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"

BLOCKING_PLAN = """
    tasks:
      - id: blocker
        kind: shell
        run: echo $$$$ > blocker.pid; echo up > up.fifo; sleep 60
      - id: waiter
        kind: shell
        run: touch waiter.ran
      - id: after_blocker
        kind: shell
        needs: [blocker]
        run: touch after.ran
      - id: after_waiter
        kind: shell
        needs: [waiter]
        run: touch after.ran
"""


def start_blocked_run(tmp_path: Path) -> subprocess.Popen:
    """A `plan run` on one slot whose first task blocks, every other task queued behind it."""
    plan = write_plan(tmp_path, BLOCKING_PLAN)
    os.mkfifo(tmp_path / "up.fifo")
    proc = subprocess.Popen([*CLI, "plan", "run", str(plan), "--slots", "1", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert await_fifo(tmp_path / "up.fifo") == "up\n"
    return proc


def test_cancel_a_queued_then_a_running_task_from_another_process(tmp_path: Path) -> None:
    run = start_blocked_run(tmp_path)
    state = str(tmp_path / ".scribefleet")
    follow = subprocess.Popen([*CLI, "logs", "blocker", "--state", str(tmp_path), "--follow"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    queued = run_cli("cancel", "waiter", "--state", state)
    assert "waiter: canceled [USER_CANCELED]" in queued.stdout
    store = store_of(tmp_path / ".scribefleet")
    blocker_id = next(t.id for t in store.tasks() if t.key == "blocker")
    running = run_cli("cancel", blocker_id, "--state", state)  # by id; it waits until the task has ended
    assert "blocker: canceled [USER_CANCELED]" in running.stdout, running.stdout
    assert exits_within(int((tmp_path / "blocker.pid").read_text()), 5), "the canceled command still runs"
    at = {e.type: e.at for e in store.events(task_id=blocker_id)}
    assert at["canceled"] - at["cancel_requested"] < 5, "the running task was not canceled within 5 s"
    stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 1, stderr
    jobs = {j["name"]: j for j in json.loads(stdout)["jobs"]}
    for key in ("blocker", "waiter"):
        assert (jobs[key]["state"], jobs[key]["error_code"]) == ("canceled", "USER_CANCELED")
    for key in ("after_blocker", "after_waiter"):
        assert (jobs[key]["state"], jobs[key]["error_code"]) == ("skipped", "DEPENDENCY_FAILED")
    assert not (tmp_path / "waiter.ran").exists() and not (tmp_path / "after.ran").exists()
    followed, _ = follow.communicate(timeout=30)  # --follow returns by itself once the task has ended
    assert follow.returncode == 0
    assert re.search(rf"^{ISO_MS}  blocker  canceled  code=USER_CANCELED$", followed, flags=re.M), followed
    assert "echo up > up.fifo" in followed  # the command's own log


def test_cancel_a_whole_batch_and_what_cannot_be_canceled(tmp_path: Path) -> None:
    run = start_blocked_run(tmp_path)
    batch_id = json.loads(run_cli("status", str(tmp_path), "--json").stdout)["batch_id"]
    proc = run_cli("cancel", batch_id, "--state", str(tmp_path))
    assert "blocker: canceled [USER_CANCELED]" in proc.stdout and "waiter: canceled" in proc.stdout
    stdout, _ = run.communicate(timeout=60)
    states = {j["name"]: j["state"] for j in json.loads(stdout)["jobs"]}
    assert states["blocker"] == states["waiter"] == "canceled", states
    assert {states["after_blocker"], states["after_waiter"]} <= {"canceled", "skipped"}
    assert "nothing to cancel" in run_cli("cancel", "blocker", "--state", str(tmp_path)).stdout
    missing = run_cli("cancel", "no-such-task", "--state", str(tmp_path), check=1)
    assert "no-such-task" in missing.stderr
    assert "INPUT_NOT_FOUND" in run_cli("cancel", "x", "--state", str(tmp_path / "nowhere"), check=1).stderr


def test_logs_of_a_shell_task_and_of_its_batch(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, """
        tasks:
          - id: talk
            kind: shell
            run: echo hello from the task; echo a warning >&2
          - id: after
            kind: shell
            needs: [talk]
            run: "false"
    """)
    summary = json.loads(run_cli("plan", "run", str(plan), "--json", check=1).stdout)
    task = run_cli("logs", "talk", "--state", str(tmp_path)).stdout
    assert re.search(rf"^task [0-9a-f]{{12}} talk \(shell\) of batch {summary['batch_id']}: complete", task)
    for event in ("task_added", "dispatched", "completed"):
        assert re.search(rf"^{ISO_MS}  talk  {event}", task, flags=re.M), f"no {event} event:\n{task}"
    assert re.search(rf"^{ISO_MS} INFO +\[dispatch\] task talk \(shell\) dispatched .*command: echo hello", task, flags=re.M)
    output = task.split("-- output (")[1]
    assert "hello from the task" in output and "a warning" in output and "[exit status 0]" in output
    failed = run_cli("logs", "after", "--state", str(tmp_path / ".scribefleet")).stdout
    assert "SHELL_FAILED" in failed and "[exit status 1]" in failed
    batch = run_cli("logs", summary["batch_id"], "--state", str(tmp_path)).stdout
    assert f"batch {summary['batch_id']} (plan)" in batch and "complete 1, failed 1" in batch
    assert re.search(rf"^{ISO_MS}  \(batch\)  batch_created", batch, flags=re.M)
    assert re.search(rf"^{ISO_MS}  after  task_added  key=after kind=shell needs=\['talk'\]", batch, flags=re.M)
    assert re.search(rf"^{ISO_MS}  after  failed  code=SHELL_FAILED", batch, flags=re.M)
    assert re.search(rf"^{ISO_MS} INFO +\[cli\] batch {summary['batch_id']}: plan", batch, flags=re.M)
    assert re.search(r"\[dispatch\] MONITOR slots busy 0/1", batch)
    # a second run of another plan in the same state dir stays out of this batch's log
    other = write_plan(tmp_path, "tasks: [{id: solo, kind: shell, run: echo solo}]\n", name="other.yaml")
    run_cli("plan", "run", str(other), "--state", str(tmp_path / ".scribefleet"))
    again = run_cli("logs", summary["batch_id"], "--state", str(tmp_path)).stdout
    assert "task solo" not in again and "task talk" in again


def test_logs_tail_keeps_the_last_lines_of_each_part(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, """
        tasks:
          - id: talk
            kind: shell
            run: for i in $(seq 1 30); do echo line $i; done
    """)
    batch_id = json.loads(run_cli("plan", "run", str(plan), "--json").stdout)["batch_id"]
    whole = run_cli("logs", "talk", "--state", str(tmp_path)).stdout
    last = run_cli("logs", "talk", "--state", str(tmp_path), "--tail", "2").stdout

    def part(text: str, name: str) -> list[str]:
        return text.split(f"-- {name}")[1].split("\n-- ")[0].partition("\n")[2].splitlines()

    for name in ("events", "log", "output"):
        assert part(last, name) == part(whole, name)[-2:], (name, last)
        assert len(part(whole, name)) > 2, whole
    assert part(last, "output") == ["line 30", "[exit status 0]"]
    assert re.search(r"^-- output \(.*\) \(last 2 of \d+ lines\) --$", last, flags=re.M), last
    assert last.splitlines()[0] == whole.splitlines()[0]  # the task's state line stays
    nothing = run_cli("logs", "talk", "--state", str(tmp_path), "-n", "0").stdout
    assert all(part(nothing, name) == [] for name in ("events", "log", "output")), nothing
    batch = run_cli("logs", batch_id, "--state", str(tmp_path), "--tail", "2").stdout
    assert len(part(batch, "events")) == 2 and len(part(batch, "log")) == 2, batch
    refused = run_cli("logs", "talk", "--state", str(tmp_path), "--tail", "-1", check=2)
    assert "--tail" in refused.stderr


def test_ctrl_c_exits_130_with_a_hint_and_loses_nothing(tmp_path: Path) -> None:
    run = start_blocked_run(tmp_path)
    run.send_signal(signal.SIGINT)
    stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    assert "interrupted" in stderr and "run the same command again to resume" in stderr
    assert exits_within(int((tmp_path / "blocker.pid").read_text()), 10), "the slot's command outlived the run"
    store = store_of(tmp_path / ".scribefleet")
    assert not any(t.is_terminal for t in store.tasks() if t.key in ("blocker", "waiter")), "nothing was lost or ended"


def test_status_after_kill_9_says_the_running_task_is_interrupted_and_changes_nothing(tmp_path: Path) -> None:
    """`kill -9` of a run left its task `running` in the store, and `status` said running (its elapsed time
    growing) until the next run. No process holds the folder then: status says so, and writes nothing."""
    run = start_blocked_run(tmp_path)
    live = json.loads(run_cli("status", str(tmp_path), "--json").stdout)
    (blocker,) = [j for j in live["jobs"] if j["name"] == "blocker"]
    assert blocker["state"] == "running" and "interrupted" not in blocker, blocker
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)
    assert exits_within(int((tmp_path / "blocker.pid").read_text()), 10), "the slot's command outlived the run"
    store = store_of(tmp_path / ".scribefleet")
    events_before = len(store.events())

    shown = json.loads(run_cli("status", str(tmp_path), "--json").stdout)
    jobs = {j["name"]: j for j in shown["jobs"]}
    message = "interrupted: no run holds this folder; rerun to resume"
    assert jobs["blocker"]["state"] == "running" and jobs["blocker"]["interrupted"] is True, jobs["blocker"]
    assert jobs["blocker"]["message"] == message and jobs["blocker"]["eta_s"] is None
    assert jobs["waiter"]["state"] == "queued" and "interrupted" not in jobs["waiter"]
    line = run_cli("status", "blocker", "--state", str(tmp_path)).stdout
    assert f"blocker: running ({message})" in line, line
    table = run_cli("status", str(tmp_path), env={"COLUMNS": "250"}).stdout  # wide enough not to fold it
    assert f"running ({message})" in table, table
    elapsed = jobs["blocker"]["elapsed_s"]
    assert json.loads(run_cli("status", blocker["id"], "--state", str(tmp_path), "--json").stdout)["elapsed_s"] == elapsed

    # a read-only look: the task stays as the killed run left it, for the next run to recover
    assert store.task(blocker["id"]).state.value == "running" and len(store.events()) == events_before


def test_sigterm_stops_a_run_as_ctrl_c_does_with_exit_143(tmp_path: Path) -> None:
    """SIGTERM (`kill`, a service manager, a container stopping) ended a run at once: no message, exit -15,
    its task left `running` for the next run. It is now handled as Ctrl-C is: slots stopped, task queued."""
    run = start_blocked_run(tmp_path)
    run.send_signal(signal.SIGTERM)
    stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "terminated (SIGTERM): what finished is recorded; run the same " \
        "command again to resume" and "Traceback" not in stderr, stderr  # fmt: skip
    assert exits_within(int((tmp_path / "blocker.pid").read_text()), 10), "the slot's command outlived the run"
    store = store_of(tmp_path / ".scribefleet")
    blocker = next(t for t in store.tasks() if t.key == "blocker")
    assert blocker.is_queued and "recovered" in [e.type for e in store.events(task_id=blocker.id)]
