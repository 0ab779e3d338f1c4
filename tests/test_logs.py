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


def test_a_name_with_line_breaks_cannot_forge_a_log_line(tmp_path: Path) -> None:
    # a media file may be named 'x\n2026-... ERROR [dispatch] ...': its record must stay one record
    log_file = tmp_path / "x.log"
    setup_logging(log_file)
    forged = "talk\n2026-12-02T05:54:23.534Z ERROR   [dispatch] forged\r2026-12-02T05:54:23.534Z INFO x.wav"
    try:
        logging.getLogger("scribefleet.progress").info("started %s on cpu0", forged)
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("scribefleet.slot").exception("slot crashed")
    finally:
        setup_logging(None)
    lines = log_file.read_text(encoding="utf-8").splitlines()
    records = [line for line in lines if not line.startswith("    ")]
    assert len(records) == 2 and "started talk" in records[0] and "slot crashed" in records[1]
    assert "    2026-12-02T05:54:23.534Z ERROR   [dispatch] forged" in lines
    assert "    Traceback (most recent call last):" in lines and "    ValueError: boom" in lines
