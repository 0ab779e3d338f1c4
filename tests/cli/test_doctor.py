"""`scribefleet doctor` through a tiny Typer app that registers it, as the real CLI does."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from scribefleet.cli.doctor import doctor
from scribefleet.config import Settings
from scribefleet.worker.hardware import CACHE_FILE

app = typer.Typer()


@app.callback()
def _root() -> None:
    """Keeps `doctor` a subcommand, as in the real app."""


app.command()(doctor)


def _doctor(*args: str, obj: object = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["doctor", *args], obj=obj)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout


def test_json_without_loading(tmp_path: Path) -> None:
    code, out = _doctor("--json", "--no-load", obj=Settings(cache_dir=tmp_path, _env_file=None))
    report = json.loads(out)
    assert code == (0 if report["ok"] else 1)
    hw = report["hardware"]
    assert hw["cpu_cores"] > 0 and "cpu" in hw["compute_types"]
    assert (tmp_path / CACHE_FILE).is_file()  # the settings in ctx.obj were used
    assert report["model"] is None
    cpu = [d for d in report["devices"] if d["device"] == "cpu"]
    assert len(cpu) == 1 and cpu[0]["ok"] and "load_s" not in cpu[0]
    assert len(report["devices"]) == len(hw["gpus"]) + 1
    assert {lib["name"] for lib in report["cuda_libraries"]} >= {"libcuda.so.1", "libcublas.so.12"}
    if not hw["gpus"]:
        assert code == 0  # the CPU works: a machine without a GPU is healthy
        assert report["slot_plan"] == [{"name": "cpu0", "device": "cpu", "gpu_index": None, "cpu_threads": hw["cpu_cores"]}]
        assert report["problems"] == hw["problems"] and report["problems"]


def test_json_loads_the_model_on_the_cpu() -> None:
    code, out = _doctor("--json")  # Settings() built inside, cache in the test's private XDG_CACHE_HOME
    report = json.loads(out)
    assert report["model"]["name"] == "tiny.en" and Path(report["model"]["path"]).is_dir()
    cpu = next(d for d in report["devices"] if d["device"] == "cpu")
    assert cpu["ok"] and cpu["load_s"] > 0 and cpu["infer_s"] > 0
    assert code == (0 if report["ok"] else 1)


def test_unknown_model_fails_with_exit_1(tmp_path: Path) -> None:
    code, out = _doctor("--json", "--model", str(tmp_path / "no-such-model"))
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert report["model"]["error"]["code"] == "MODEL_NOT_FOUND"
    assert any("no-such-model" in p for p in report["problems"])


def test_tables_and_problems_with_fixes(tmp_path: Path) -> None:
    code, out = _doctor("--no-load", "--refresh", obj=Settings(cache_dir=tmp_path, _env_file=None))
    for heading in ("Hardware", "Slot plan for --device auto", "CUDA libraries", "Device check"):
        assert heading in out
    assert "libcublas.so.12" in out
    report_problems = json.loads(_doctor("--json", "--no-load", obj=Settings(cache_dir=tmp_path, _env_file=None))[1])["problems"]
    if report_problems:
        assert "Problems" in out and "Fix:" in out
    assert ("every device is usable" in out) == (code == 0)


def test_usage_error_is_exit_2() -> None:
    assert _doctor("--bogus")[0] == 2
