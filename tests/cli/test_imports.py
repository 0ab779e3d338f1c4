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
    assert {"numpy"} <= loaded_after("scribefleet.pipeline.job")


def test_transcribe_walks_a_folder_and_plans_its_slots_without_the_pipeline(tmp_path) -> None:
    """The command's own process finds the media and resolves the bundled model without numpy, PyAV or
    faster-whisper (about half a second of a short file's run on 2 cores); only its slots load them."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "clip.wav").write_bytes(b"RIFF")  # found by its extension, never opened here
    code = (
        "import sys\nfrom pathlib import Path\nfrom scribefleet.config import Settings\n"
        "from scribefleet.jobs.inputs import check_inputs\nfrom scribefleet.pipeline.models import resolve_model\n"
        f"found = check_inputs([{str(tmp_path / 'in')!r}], out_dir=Path({str(tmp_path / 'out')!r}))\n"
        "assert [f.path.name for f in found] == ['clip.wav']\n"
        "resolve_model('tiny.en', Settings())\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert set(out.split()) == set()


def test_python_dash_m_scribefleet_is_the_cli() -> None:
    # `python -m scribefleet transcribe ...` said "'scribefleet' is a package and cannot be directly executed"
    proc = subprocess.run([sys.executable, "-m", "scribefleet", "transcribe", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "--format" in proc.stdout and "--language" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "scribefleet", "transcribe", "x.wav", "--format", "docx"],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "error [INVALID_OPTIONS]" in bad.stderr
