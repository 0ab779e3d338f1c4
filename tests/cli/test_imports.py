"""What the CLI and the controller load at start: no heavy library a command does not use.

`scribefleet serve` idles at a fraction of its former memory because the
pipeline (numpy, PyAV, faster-whisper), cloud SDKs and Ray are imported by the
code that uses them, not at start-up (bench/bench_cost.py measures the process).
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("numpy", "av", "faster_whisper", "ctranslate2", "torch", "ray", "boto3", "botocore", "yt_dlp")


def loaded_after(*modules: str) -> set[str]:
    """The heavy modules a fresh interpreter holds after importing `modules`."""
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_cli_and_the_controller_start_without_the_pipeline_cloud_sdks_or_ray() -> None:
    modules = ("scribefleet.cli.main", "scribefleet.service.app", "scribefleet.service.controller",
               "scribefleet.engines.local", "scribefleet.dispatch.dispatcher")  # fmt: skip
    assert loaded_after(*modules) == set()


def test_the_pipeline_does_load_them_so_the_check_can_fail() -> None:
    assert {"numpy", "av"} <= loaded_after("scribefleet.pipeline.job")
