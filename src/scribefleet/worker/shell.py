"""The `shell` task kind: a plan's `run:` line, checked against an allowlist, run with bash.

The command runs in the slot's environment (CUDA_VISIBLE_DEVICES and
LD_LIBRARY_PATH already set by the engine before the slot started, so plans
never name GPU ids) and in the slot's process group, so when the dispatcher
kills that group for a timeout or a cancel, everything the command started
goes with it. stdout and stderr go to the task's log file, which is created on the
command's first output (or its failure): a command that prints nothing and
succeeds leaves no file, and its result's `log` is null.

The allowlist (Settings.shell_allow, regexes) is checked against every simple
command of the line: the line is split at `;`, `&&`, `||`, `|`, `&`, newlines,
parentheses and command substitutions, leading `VAR=value` assignments and
keywords (`if`, `do`, ...) are dropped, and the rest must fully match one
pattern. A refused line never starts. It guards against mistakes in plans; it
is not a sandbox (an allowed `python` can do anything).
"""

from __future__ import annotations

import collections
import functools
import os
import re
import select
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scribefleet.errors import InputNotFound, ShellCommandNotAllowed, ShellFailed, UsageError
from scribefleet.masking import redact

if TYPE_CHECKING:
    from scribefleet.worker.context import TaskContext

_PUNCTUATION = "();<>|&\n"
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_KEYWORDS = {"if", "then", "else", "elif", "do", "while", "until", "!", "{", "}", "time", "fi", "done", "esac"}
_ARITHMETIC = re.compile(r"\$\(\([^()]*\)\)")
_SUBSTITUTION = re.compile(r"\$\(([^()]*)\)")
STDERR_TAIL_LINES = 20
#: a kept stderr line is cut to its last this many characters, and an unfinished line is held to a few times
#: that: one 5 MB line (or a progress bar redrawn with '\r' for an hour) went whole into the error message,
#: the store and events.jsonl, and was copied again on every read
STDERR_LINE_CHARS = 300
_PARTIAL_MAX_BYTES = 4 * STDERR_LINE_CHARS * 4  # utf-8: up to 4 bytes a character
_LINE_BREAK = re.compile(rb"[\r\n]")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")  # colours and cursor moves
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
#: how often a command's pipes are left to see whether bash has exited, and how long its output is still
#: read after that when a background child keeps the pipes open
EXIT_CHECK_S = 0.25
EXIT_DRAIN_S = 0.5
#: a log past SCRIBEFLEET_TASK_LOG_MAX_MB ends with this much of the output's end
LOG_TAIL_BYTES = 64 * 1024
#: a command still running after this long reports its `run` stage (at once where the slot needs the
#: pid to kill it): shorter ones report nothing, which spares the dispatcher a store write per task
RUN_STAGE_AFTER_S = 0.1


def _tokens(command: str) -> list[str]:
    lex = shlex.shlex(_ARITHMETIC.sub("0", command), posix=True, punctuation_chars=_PUNCTUATION)
    lex.whitespace = " \t\r"
    lex.whitespace_split = True
    lex.commenters = ""  # bash only starts a comment at a word start; never hide text from the check
    return list(lex)


def _is_separator(token: str) -> bool:
    if not token or any(ch not in _PUNCTUATION for ch in token):
        return False
    return not _is_redirection(token)


def _substitutions(token: str, command: str) -> list[str]:
    """The commands of every `$(...)` inside one word, innermost first ("$(...)" in quotes runs too)."""
    found = []
    while (m := _SUBSTITUTION.search(token)) is not None:
        found.append(m.group(1))
        token = token[: m.start()] + "0" + token[m.end() :]
    if "$(" in token:
        raise ShellCommandNotAllowed("a $(...) in the shell command is not closed", command=redact(command))
    return found


def simple_commands(command: str) -> list[str]:
    """The simple commands of a bash line as the allowlist sees them (quotes removed, joined by spaces)."""
    if "`" in command:
        raise ShellCommandNotAllowed(
            "backquotes are not allowed in shell tasks; write $(...) instead", command=redact(command)
        )
    try:
        tokens = _tokens(command)
    except ValueError as exc:
        raise ShellCommandNotAllowed(f"the shell command cannot be parsed ({exc})", command=redact(command)) from exc
    segments: list[list[str]] = [[]]
    nested: list[str] = []
    for token in tokens:
        if _is_separator(token):
            segments.append([])
            continue
        nested.extend(_substitutions(token, command))
        segments[-1].append(token)
    out = [cmd for seg in segments if (cmd := _strip_segment(seg))]
    for inner in nested:
        out.extend(simple_commands(inner))
    return out


def _is_redirection(token: str) -> bool:
    return bool(token) and set(token) <= set("<>&") and ("<" in token or ">" in token)


def _strip_segment(tokens: list[str]) -> str:
    """One simple command without what precedes the command name: keywords, VAR=x, redirections."""
    words = list(tokens)
    while words:
        if words[0] in _KEYWORDS or _ASSIGNMENT.match(words[0]):
            words.pop(0)
        elif _is_redirection(words[0]):
            del words[:2]  # the operator and its target
        elif words[0].isdigit() and len(words) > 1 and _is_redirection(words[1]):
            del words[:3]  # 2>&1, 2> file
        else:
            break
    if not words or words[0] in ("for", "case", "$") or words[0].startswith("#"):
        return ""  # loop/case headers, bare assignments, the "$" of "$(", comments: they run nothing
    if any(ch.isspace() for ch in words[0]):
        return "\0" + words[0]  # a quoted command name with spaces matches no pattern
    return " ".join(words)


def check_command(command: str, patterns: Iterable[str], *, allow_all: bool = False) -> None:
    """Raise ShellCommandNotAllowed unless every simple command matches one of `patterns`."""
    if allow_all:
        return
    compiled = [re.compile(p) for p in patterns]
    for simple in simple_commands(command):
        if not any(p.fullmatch(simple) for p in compiled):
            shown = simple.lstrip("\0")
            raise ShellCommandNotAllowed(
                f"shell command not allowed: {redact(shown)!r} matches no pattern of shell_allow; add a pattern "
                "to SCRIBEFLEET_SHELL_ALLOW (a JSON list of regexes) or set SCRIBEFLEET_SHELL_ALLOW_ALL=1",
                command=redact(command),
                refused=redact(shown),
            )


class _TaskLog:
    """The task's log file, created on its first write: most short commands print nothing, and
    creating a file per task cost more than the rest of the slot's work for it.

    It keeps at most `max_bytes` of output: then the rest is dropped but for its last LOG_TAIL_BYTES,
    written with a note at the end, so a command that prints without end cannot fill the disk."""

    def __init__(self, path: Path, command: str, max_bytes: int) -> None:
        self.path, self._header, self._file = path, f"$ {redact(command)}\n".encode(), None
        self._ends_line = True
        self._room, self._dropped, self._tail = max_bytes, 0, bytearray()

    @property
    def written(self) -> bool:
        return self._file is not None

    def write(self, data: bytes) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed by close()
            self._file.write(self._header)
        kept = data[: max(0, self._room)]
        if kept:
            self._file.write(kept)
            self._room -= len(kept)
            self._ends_line = kept.endswith(b"\n")
        if len(kept) < len(data):
            self._dropped += len(data) - len(kept)
            self._tail += data[len(kept):]
            del self._tail[:-LOG_TAIL_BYTES]

    def _flush_tail(self) -> None:
        if not self._dropped or self._file is None:
            return
        skipped = self._dropped - len(self._tail)
        note = (f"{'' if self._ends_line else chr(10)}[... {skipped:,} bytes of output not kept: the log keeps "
                f"SCRIBEFLEET_TASK_LOG_MAX_MB; the last {len(self._tail):,} bytes follow ...]\n")  # fmt: skip
        self._file.write(note.encode() + bytes(self._tail))
        self._ends_line = self._tail.endswith(b"\n")
        self._dropped, self._tail = 0, bytearray()

    def end(self, status: int) -> None:
        """The exit status line, on a line of its own."""
        self._flush_tail()
        self._room = max(self._room, 0) + 64  # the status line always goes in
        self.write(f"{'' if self._ends_line else chr(10)}[exit status {status}]\n".encode())

    def close(self) -> None:
        if self._file is not None:
            self._flush_tail()
            self._file.close()


def _copy_output(
    proc: subprocess.Popen[bytes], log: _TaskLog, tail: collections.deque[str], running: Callable[[], None], after_s: float
) -> None:
    """Copy the command's stdout and stderr to the log as they come, keeping stderr's last lines (`\r` ends one too);
    call `running()` once the command has run for `after_s`."""
    assert proc.stdout is not None and proc.stderr is not None
    err_fd, partial = proc.stderr.fileno(), b""
    poller, open_fds = select.poll(), {proc.stdout.fileno(), err_fd}
    for fd in open_fds:
        poller.register(fd, select.POLLIN)
    tell_at: float | None = time.monotonic() + after_s
    give_up_at: float | None = None  # set once bash has exited
    check_at = time.monotonic() + EXIT_CHECK_S
    while open_fds:
        wake = [t for t in (tell_at, give_up_at, check_at) if t is not None]
        ready = poller.poll(max(0.0, min(wake) - time.monotonic()) * 1000)
        now = time.monotonic()
        if tell_at is not None and now >= tell_at:
            running()
            tell_at = None
        if give_up_at is not None and now >= give_up_at:
            break
        if give_up_at is None and now >= check_at:
            check_at = now + EXIT_CHECK_S
            if proc.poll() is not None:
                # bash is done, but something it started in the background (`server &`) still holds the
                # pipes: the task ends with bash, as in a terminal, once what is already written is read
                give_up_at, check_at = now + EXIT_DRAIN_S, None
        for fd, _ in ready:
            data = os.read(fd, 65536)
            if not data:
                poller.unregister(fd)
                open_fds.discard(fd)
                continue
            log.write(data)
            if fd == err_fd:
                *lines, partial = _LINE_BREAK.split(partial + data)
                tail.extend(text for text in map(_tail_line, lines) if text)
                partial = partial[-_PARTIAL_MAX_BYTES:]
    if partial and (text := _tail_line(partial)):
        tail.append(text)


def _tail_line(raw: bytes) -> str:
    """A stderr line as the error message shows it: readable text (no colour codes or control bytes), its end
    kept when it is long; '' for a blank line."""
    text = _CONTROL.sub("?", _ANSI.sub("", raw.decode(errors="replace"))).strip()
    return text if len(text) <= STDERR_LINE_CHARS else "..." + text[-(STDERR_LINE_CHARS - 3):]


@functools.lru_cache(maxsize=8)
def _bash(search_path: str | None) -> str:
    """bash as found on PATH, looked up once per PATH rather than by every task's exec."""
    return shutil.which("bash", path=search_path) or "bash"


def run_shell(spec: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Handler of the `shell` kind: spec {"run": str, "cwd"?: str, "env"?: {str: str}}.

    The result names the task's log file when the command wrote anything (or failed)."""
    command = spec.get("run")
    if not isinstance(command, str) or not command.strip():
        raise UsageError("a shell task needs a non-empty 'run' command", task_id=ctx.task_id)
    check_command(command, ctx.settings.shell_allow, allow_all=ctx.settings.shell_allow_all)
    cwd = spec.get("cwd") or None
    if cwd is not None and not Path(cwd).is_dir():  # Popen's bare FileNotFoundError was INTERNAL_ERROR
        raise InputNotFound(
            f"the shell task's cwd {cwd} is not a folder{'' if Path(cwd).exists() else ' (it does not exist)'}: fix "
            "'cwd', or make the folder in a task this one needs", cwd=str(cwd),
        )  # fmt: skip
    extra_env = spec.get("env") or {}
    # None inherits the slot's environment as is: copying it costs more than the rest of a short task
    env = {**os.environ, **{str(k): str(v) for k, v in extra_env.items()}} if extra_env else None
    started = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    log = _TaskLog(ctx.log_path, command, ctx.settings.task_log_max_mb * 2**20)
    try:
        # in a slot process the command stays in the slot's process group, which the dispatcher
        # kills as a whole on timeout or cancel; a slot that is a thread kills the command's own
        # group instead, whose id is the pid in the first progress message, sent at once there
        with subprocess.Popen(
            ["bash", "-c", command], executable=_bash((env or os.environ).get("PATH")), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=cwd, env=env, start_new_session=ctx.own_process_group,
        ) as proc:  # fmt: skip
            after_s = 0.0 if ctx.own_process_group else RUN_STAGE_AFTER_S  # a thread slot kills by this pid
            _copy_output(proc, log, tail, lambda: ctx.progress("run", 0.0, {"pid": proc.pid}), after_s)
            status = proc.wait()
        if log.written or status != 0:
            log.end(status)
    finally:
        log.close()
    elapsed_s = round(time.monotonic() - started, 3)
    if status != 0:
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        last = f": {tail[-1]}" if tail else ""
        raise ShellFailed(
            f"shell command {how}{last} (full output in {ctx.log_path})",
            exit_status=status, stderr_tail="\n".join(tail), log=str(ctx.log_path), elapsed_s=elapsed_s,
        )  # fmt: skip
    return {"exit_status": 0, "log": str(ctx.log_path) if log.written else None, "elapsed_s": elapsed_s}
