"""Logging set-up: ISO 8601 timestamps to the millisecond, rotating files, --verbose.

Every process (CLI, dispatcher, slot) calls `setup_logging` once; every line
goes through `masking.redact` (secret-looking assignments, a presigned link's
signature, a link's password are masked). Loggers are
named after what speaks: `scribefleet.dispatch`, `scribefleet.slot.gpu0`...
Lines look like:

    2026-11-23T13:37:29.123Z INFO  [dispatch] task a1b2 dispatched to cpu0 ...

A record that holds line breaks (a traceback, a slot's stderr, a file named
with a newline) goes on in lines indented by four spaces, so every line at the
left margin starts a record: a name cannot forge a log line.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import time
from pathlib import Path

from scribefleet.errors import OutputWriteFailed
from scribefleet.masking import redact

ROOT = "scribefleet"
_BREAK = re.compile(r"\r\n|\r|\n")


class IsoFormatter(logging.Formatter):
    """`2026-11-23T13:37:29.123Z LEVEL [name] message` in UTC."""

    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        t = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        return f"{t}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        record.short = record.name.removeprefix(ROOT + ".") or ROOT
        text = redact(super().format(record))  # a presigned link or a command's KEY=... never reaches a log
        return _BREAK.sub("\n    ", text) if "\n" in text or "\r" in text else text


FORMAT = "%(asctime)s %(levelname)-7s [%(short)s] %(message)s"


class RotatingFile(logging.handlers.RotatingFileHandler):
    """A rotating log file that formats each line once: it rotates when the file has reached
    `maxBytes` (so a file ends at most one line past it), where the standard library formats
    every line a second time to measure it (a tenth of the dispatcher's time per task)."""

    def shouldRollover(self, record: logging.LogRecord) -> bool:  # noqa: N802 - the stdlib's name
        if self.stream is None:
            self.stream = self._open()
        return self.maxBytes > 0 and self.stream.tell() >= self.maxBytes


def setup_logging(
    log_file: Path | None,
    *,
    verbose: bool = False,
    console: logging.Handler | None = None,
    max_mb: int = 20,
    backups: int = 5,
) -> logging.Logger:
    """Configure the `scribefleet` logger tree; returns it. Safe to call again."""
    root = logging.getLogger(ROOT)
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    fmt = IsoFormatter(FORMAT)
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            fh = RotatingFile(log_file, maxBytes=max_mb * 1024 * 1024, backupCount=backups, encoding="utf-8")
        except OSError as exc:  # a state dir on a read-only disk, a file where the logs folder should be
            raise OutputWriteFailed(
                f"could not open the log file {log_file} ({exc.strerror or exc}) - fix write permission on "
                f"{log_file.parent} or free disk space, or pass another output folder",
                path=str(log_file),
                os_error=str(exc),
            ) from exc
        fh.setFormatter(fmt)
        root.addHandler(fh)
    if console is not None:
        console.setFormatter(fmt)
        root.addHandler(console)
    return root
