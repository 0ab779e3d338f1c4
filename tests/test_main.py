"""`python -m scribefleet`: the CLI under the interpreter's module flag."""

from __future__ import annotations

import subprocess
import sys

from scribefleet import __version__


def test_python_dash_m_scribefleet_is_the_cli() -> None:
    # without a __main__ module it answered "No module named scribefleet.__main__"
    done = subprocess.run([sys.executable, "-m", "scribefleet", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"scribefleet {__version__}"
