"""The stages of a transcription job and what each reads, in pipeline order (see pipeline/job.py).

Plain names without numpy or PyAV, so the CLI can check `--stages` and the views
can name stages without importing the pipeline (a third of a second).
"""

from __future__ import annotations

STAGES = ("fetch", "decode", "vad", "transcribe", "diarize", "render", "publish")
#: stage -> the stages whose checkpoints it reads
DEPENDS: dict[str, tuple[str, ...]] = {
    "fetch": (),
    "decode": ("fetch",),
    "vad": ("decode",),
    "transcribe": ("decode", "vad"),
    "diarize": ("decode", "vad"),
    "render": ("transcribe", "diarize"),
    "publish": ("render",),
}


def stages_to_redo(chosen: tuple[str, ...] | list[str]) -> list[str]:
    """The chosen stages and every stage downstream of one of them, in pipeline order."""
    redo = set(chosen)
    for stage in STAGES:  # STAGES is in dependency order, so one pass closes the set
        if any(dep in redo for dep in DEPENDS[stage]):
            redo.add(stage)
    return [stage for stage in STAGES if stage in redo]
