"""Task kinds a slot can run: `KINDS` maps a kind name to its handler.

A handler is `handler(spec: dict, ctx: TaskContext) -> dict`: it gets the
task's spec as stored and a context from the slot (the warm model cache, a
progress function, the task's log file, the slot's name and device), returns
the task's result, and raises a ScribefleetError with a stable code when the
task fails. Add a kind by adding its handler to `KINDS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from scribefleet.errors import OutOfMemory, UsageError
from scribefleet.store.models import TASK_KINDS, TaskKind
from scribefleet.worker.aggregate import run_aggregate
from scribefleet.worker.context import ProgressFn, TaskContext
from scribefleet.worker.llm import run_llm
from scribefleet.worker.shell import run_shell

log = logging.getLogger("scribefleet.kinds")

__all__ = ["KINDS", "WINDOW_KIND", "ProgressFn", "TaskContext", "run_transcribe", "run_window"]

def _transcription_job(spec: dict[str, Any], ctx: TaskContext) -> Any:
    """The TranscriptionJob of a transcribe task's spec, on this slot."""
    # imported here: a slot that only runs shell tasks never pays for faster-whisper
    from pydantic import ValidationError

    from scribefleet.pipeline.diarize import DiarizerConfig
    from scribefleet.pipeline.job import TranscriptionJob

    fields = {k: v for k, v in spec.items() if k in TranscriptionJob.model_fields}
    fields["device"] = ctx.device  # the slot decides where it runs
    fields["diarizer"] = DiarizerConfig.from_settings(ctx.settings)  # the slot's settings, never the spec's
    fields["slot_name"] = ctx.slot_name
    fields.setdefault("cpu_threads", ctx.cpu_threads)
    try:
        return TranscriptionJob(**fields)
    except ValidationError as exc:
        raise UsageError(f"invalid transcribe task: {exc.errors()[0].get('msg')}", task_id=ctx.task_id) from exc


def run_transcribe(spec: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Handler of the `transcribe` kind: one pipeline job on this slot's device."""
    from scribefleet.pipeline.job import run_transcription

    job = _transcription_job(spec, ctx)

    def progress(stage: str, fraction: float, extra: dict[str, Any] | None = None) -> None:
        ctx.progress(stage, fraction, extra)

    try:
        return run_transcription(job, ctx.models, progress)
    except OutOfMemory:
        batch_size = job.options.batch_size
        if batch_size <= 1:
            raise
        smaller = max(1, batch_size // 2)
        log.warning("task %s ran out of memory with batch size %d; retrying once with %d", ctx.task_id, batch_size, smaller)
        job = job.model_copy(update={"options": job.options.model_copy(update={"batch_size": smaller})})
        result = run_transcription(job, ctx.models, progress)
        return {**result, "batch_size": smaller}


def run_window(spec: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Handler of the `window` kind: this slot, lent to a spread transcription, decodes one of its windows.

    Not a stored task: the dispatcher (dispatch/lending.py) hands it out with the
    owner's spec and work dir; pipeline/spread.py says what it does.
    """
    from scribefleet.pipeline.spread import help_spread

    job = _transcription_job(spec, ctx)

    def model() -> Any:
        return job.model(ctx.models)

    def progress(fraction: float, where: dict[str, Any]) -> None:
        ctx.progress("transcribe", fraction, where)

    return help_spread(model, job.options, work_dir=job.work_dir, slot_name=ctx.slot_name, on_progress=progress)


#: a lent slot's run (dispatch/lending.py), beside the stored kinds
WINDOW_KIND = "window"

KINDS: dict[str, Callable[[dict[str, Any], TaskContext], dict[str, Any]]] = {
    TaskKind.TRANSCRIBE.value: run_transcribe,
    TaskKind.SHELL.value: run_shell,
    TaskKind.AGGREGATE.value: run_aggregate,
    TaskKind.LLM.value: run_llm,
    WINDOW_KIND: run_window,
}
assert set(KINDS) == {*TASK_KINDS, WINDOW_KIND}, "every task kind of store/models.py needs a handler"
