"""The shell kind: the allowlist (seed 000's export chains pass, the rest is refused) and the run itself."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scribefleet.config import SHELL_ALLOW_DEFAULT, Settings
from scribefleet.errors import InputNotFound, ShellCommandNotAllowed, ShellFailed, UsageError
from scribefleet.worker.kinds import KINDS, TaskContext
from scribefleet.worker.shell import (LOG_TAIL_BYTES, RUN_STAGE_AFTER_S, STDERR_LINE_CHARS, STDERR_TAIL_LINES, check_command, redact,
                                      run_shell, simple_commands)

SEED_000 = (
    'export LD_LIBRARY_PATH="$HOME/ml-env/lib/python3.13/site-packages/nvidia/cublas/lib:$LD_LIBRARY_PATH" && '
    "source ~/ml-env/bin/activate && python script.py --in ${item} 2>&1 | tee out.log"
)

ALLOWED = [
    SEED_000,
    "export A=1 B=2; export C",
    "OMP_NUM_THREADS=2 python3 -m scribefleet.cli.main status",
    "mkdir -p out && ffmpeg -i in.mp4 -vn out/a.wav > /dev/null 2>&1",
    "for f in *.wav; do echo $f >> list.txt; done",
    'if [ -f done ]; then exit 0; else echo "a; sudo b" && echo $((1 + 2)); fi',
    "echo $(nproc) $(date +%s)",
    "~/bin/prepare.sh --fast && ./run.py",
    "# a comment line\ntrue",
]

REFUSED = {
    "sudo rm -rf /": "sudo rm -rf /",
    "echo ok && sudo true": "sudo true",
    "echo ok | sh": "sh",
    'echo "$(sudo id)"': "sudo id",  # a substitution inside quotes still runs
    'echo "$(echo $(sudo id))"': "sudo id",
    "X=1 sudo id": "sudo id",  # an assignment prefix does not make a command harmless
    "> out sudo id": "sudo id",  # nor does a leading redirection
    "(cd /tmp; curl http://x | bash)": "curl http://x",
    "bash -c 'anything'": "bash -c anything",
    "eval echo hi": "eval echo hi",
}


@pytest.mark.parametrize("command", ALLOWED)
def test_the_default_allowlist_permits_export_chains_and_ordinary_commands(command: str) -> None:
    check_command(command, SHELL_ALLOW_DEFAULT)


@pytest.mark.parametrize("command", sorted(REFUSED))
def test_the_default_allowlist_refuses_everything_else(command: str) -> None:
    with pytest.raises(ShellCommandNotAllowed) as err:
        check_command(command, SHELL_ALLOW_DEFAULT)
    assert err.value.code == "SHELL_COMMAND_NOT_ALLOWED"
    assert err.value.details["refused"] == REFUSED[command]
    assert "SCRIBEFLEET_SHELL_ALLOW" in err.value.message


def test_backquotes_and_broken_quoting_are_refused_and_allow_all_skips_the_check() -> None:
    for command in ("echo `id`", "echo 'unterminated"):
        with pytest.raises(ShellCommandNotAllowed):
            check_command(command, SHELL_ALLOW_DEFAULT)
    check_command("sudo id", [], allow_all=True)
    check_command("sudo id", [r"sudo id"])


def test_simple_commands_are_what_the_patterns_see() -> None:
    assert simple_commands("A=1 python x.py 2>&1 | tee log; echo $(nproc)") == ["python x.py 2 >& 1", "tee log", "echo $", "nproc"]


def test_secrets_are_masked_in_what_is_logged() -> None:
    masked = redact("export OPENAI_API_KEY=sk-123 HF_TOKEN='abc' && python x.py --password=hunter2")
    assert "sk-123" not in masked and "abc" not in masked and "OPENAI_API_KEY=***" in masked


@pytest.fixture
def ctx(tmp_path: Path, settings: Settings) -> TaskContext:
    progress: list[tuple[str, float, dict | None]] = []
    context = TaskContext(
        task_id="t1", slot_name="cpu0", device="cpu", cpu_threads=1, log_path=tmp_path / "logs" / "t1.log",
        settings=settings, progress=lambda stage, fraction, extra=None: progress.append((stage, fraction, extra)),
    )  # fmt: skip
    context.seen = progress  # type: ignore[attr-defined]
    return context


def test_a_shell_task_writes_stdout_and_stderr_to_its_log(ctx: TaskContext, tmp_path: Path) -> None:
    result = KINDS["shell"]({"run": "echo out; echo err >&2; echo $GREETING > g.txt", "cwd": str(tmp_path),
                             "env": {"GREETING": "hi"}}, ctx)  # fmt: skip
    assert result["exit_status"] == 0 and result["log"] == str(ctx.log_path)
    log = ctx.log_path.read_text()
    assert log.startswith("$ echo out;") and "out\n" in log and "err\n" in log and "[exit status 0]" in log
    assert (tmp_path / "g.txt").read_text() == "hi\n"
    assert ctx.seen == []  # type: ignore[attr-defined]  # over within RUN_STAGE_AFTER_S: no stage to tell


def test_a_command_that_keeps_running_reports_its_run_stage_once(ctx: TaskContext, tmp_path: Path) -> None:
    run_shell({"run": f"sleep {3 * RUN_STAGE_AFTER_S}; echo done", "cwd": str(tmp_path)}, ctx)
    assert [(stage, fraction) for stage, fraction, _ in ctx.seen] == [("run", 0.0)]  # type: ignore[attr-defined]
    assert ctx.seen[0][2]["pid"] > 0  # type: ignore[attr-defined]


def test_a_thread_slot_is_told_the_pid_of_the_command_group_at_once(ctx: TaskContext, tmp_path: Path) -> None:
    ctx.own_process_group = True  # a thread slot kills the command's own group, by this pid
    run_shell({"run": "true", "cwd": str(tmp_path)}, ctx)
    assert ctx.seen[0][0] == "run" and ctx.seen[0][2]["pid"] > 0  # type: ignore[attr-defined]


def test_a_silent_command_leaves_no_log_file_and_a_failed_one_always_does(ctx: TaskContext, tmp_path: Path) -> None:
    result = run_shell({"run": "true", "cwd": str(tmp_path)}, ctx)
    assert result["log"] is None and not ctx.log_path.exists()
    with pytest.raises(ShellFailed):
        run_shell({"run": "exit 3", "cwd": str(tmp_path)}, ctx)
    assert ctx.log_path.read_text() == "$ exit 3\n[exit status 3]\n"


def test_output_without_a_final_newline_and_on_both_streams_is_all_logged(ctx: TaskContext, tmp_path: Path) -> None:
    with pytest.raises(ShellFailed) as err:
        run_shell({"run": "head -c 200000 /dev/zero | tr '\\0' x; printf 'last words' >&2; exit 1", "cwd": str(tmp_path)}, ctx)
    assert err.value.details["stderr_tail"] == "last words"
    log = ctx.log_path.read_text()
    assert "x" * 200000 in log and "x" * 200001 not in log and log.endswith("last words\n[exit status 1]\n")


def test_a_non_zero_exit_is_shell_failed_with_status_and_stderr_tail(ctx: TaskContext, tmp_path: Path) -> None:
    with pytest.raises(ShellFailed) as err:
        run_shell({"run": "for i in $(seq 1 30); do echo line$i >&2; done; exit 7", "cwd": str(tmp_path)}, ctx)
    details = err.value.details
    assert details["exit_status"] == 7 and details["stderr_tail"].splitlines() == [f"line{i}" for i in range(11, 31)]
    assert "exited with status 7: line30" in err.value.message


def test_a_refused_or_empty_command_never_starts(ctx: TaskContext, tmp_path: Path) -> None:
    with pytest.raises(ShellCommandNotAllowed):
        run_shell({"run": f"touch {tmp_path}/x; sudo id"}, ctx)
    assert not (tmp_path / "x").exists() and not ctx.log_path.exists()
    with pytest.raises(UsageError):
        run_shell({"run": "  "}, ctx)


def test_a_huge_stderr_line_progress_bars_and_colours_make_a_short_readable_message(ctx: TaskContext, tmp_path: Path) -> None:
    # one 5 MB stderr line went whole into the message (5 MB in the store, events.jsonl and every log line);
    # an unfinished line was re-copied on every read (quadratic), and colour codes and control bytes came along
    run = ("for i in $(seq 1 500); do printf '\\r%3d%% downloading' $i >&2; done; echo >&2; "
           "head -c 3000000 /dev/zero | tr '\\0' x >&2; "
           "printf '\\n\\033[31mfatal:\\033[0m disk \\001full\\n\\n' >&2; exit 4")  # fmt: skip
    started = time.monotonic()
    with pytest.raises(ShellFailed) as err:
        run_shell({"run": run, "cwd": str(tmp_path)}, ctx)
    assert time.monotonic() - started < 20
    details = err.value.details
    tail = details["stderr_tail"].splitlines()
    assert tail[-1] == "fatal: disk ?full" and tail[-2] == "..." + "x" * (STDERR_LINE_CHARS - 3)
    assert tail[-3] == "500% downloading" and tail[0] == "483% downloading"
    assert len(tail) == STDERR_TAIL_LINES and all(len(line) <= STDERR_LINE_CHARS for line in tail)
    assert err.value.message.startswith("shell command exited with status 4: fatal: disk ?full (full output in ")
    assert ctx.log_path.stat().st_size > 3_000_000, "the log keeps everything"


def test_a_command_that_prints_without_end_cannot_fill_the_disk(ctx: TaskContext, tmp_path: Path) -> None:
    # the task log had no bound: a command printing in a loop wrote until its timeout or a full disk
    ctx.settings = ctx.settings.model_copy(update={"task_log_max_mb": 1})
    result = run_shell({"run": "seq 1 700000; echo; echo the end", "cwd": str(tmp_path)}, ctx)
    assert result["exit_status"] == 0
    log = ctx.log_path.read_bytes()
    assert 2**20 + LOG_TAIL_BYTES <= len(log) < 2**20 + LOG_TAIL_BYTES + 1000
    head, _, rest = log.partition(b"[... ")
    assert head.startswith(b"$ seq 1 700000") and b"\n1\n2\n3\n" in head and b"bytes of output not kept" in rest
    assert log.endswith(b"699999\n700000\n\nthe end\n[exit status 0]\n")


def test_a_command_that_leaves_a_background_child_ends_when_bash_does(ctx: TaskContext, tmp_path: Path) -> None:
    # `server & echo started` held the task until the child exited (or the task's timeout): the child kept the
    # output pipes open, and the task waited for them to close instead of for bash
    started = time.monotonic()
    result = run_shell({"run": "sleep 30 & echo started; echo bye >&2", "cwd": str(tmp_path)}, ctx)
    assert time.monotonic() - started < 10
    assert result["exit_status"] == 0
    log = ctx.log_path.read_text()
    assert "started\n" in log and "bye\n" in log and log.endswith("[exit status 0]\n")
    with pytest.raises(ShellFailed) as err:
        run_shell({"run": "sleep 30 & echo last words >&2; exit 5", "cwd": str(tmp_path)}, ctx)
    assert err.value.details["exit_status"] == 5 and err.value.details["stderr_tail"] == "last words"
    assert time.monotonic() - started < 20


def test_a_cwd_that_is_no_folder_fails_with_input_not_found(ctx: TaskContext, tmp_path: Path) -> None:
    # Popen's FileNotFoundError / NotADirectoryError reached the user as INTERNAL_ERROR ("a bug")
    (tmp_path / "a-file").write_text("")
    for cwd, says in ((tmp_path / "nope", "does not exist"), (tmp_path / "a-file", "is not a folder")):
        with pytest.raises(InputNotFound) as err:
            run_shell({"run": "echo hi", "cwd": str(cwd)}, ctx)
        assert err.value.code == "INPUT_NOT_FOUND" and str(cwd) in err.value.message and says in err.value.message
