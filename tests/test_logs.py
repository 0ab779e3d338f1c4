"""The log files: one line per record, rotated once a file reaches its size."""

from __future__ import annotations

import logging
from pathlib import Path

from scribefleet.logs import setup_logging


def test_a_log_file_rotates_once_it_reaches_its_size_and_keeps_every_line_whole(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "x.log"
    log = setup_logging(log_file, max_mb=1, backups=2)
    try:
        for i in range(1500):  # about 1.5 MB of lines of 1 KB
            logging.getLogger("scribefleet.test").info("line %04d %s", i, "x" * 1000)
    finally:
        setup_logging(None)
    rotated = Path(f"{log_file}.1")
    assert rotated.exists() and not Path(f"{log_file}.2").exists()
    assert 1024 * 1024 <= rotated.stat().st_size < 1024 * 1024 + 1100  # rotated at the limit, one line past at most
    lines = rotated.read_text().splitlines() + log_file.read_text().splitlines()
    assert [int(line.split("line ")[1][:4]) for line in lines] == list(range(1500))
    assert all(line.endswith("x" * 1000) and "INFO    [test] line" in line for line in lines)
    assert log.name == "scribefleet"
