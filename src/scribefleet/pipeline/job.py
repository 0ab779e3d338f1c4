"""One transcription job: one media file through decode -> vad -> transcribe -> render -> publish.

Every stage leaves a checkpoint in the job's work dir (docs/architecture.md):

    audio.npy                 decode      int16 16 kHz mono samples
    vad.json                  vad         speech ranges in seconds
    windows.jsonl             transcribe  one line per finished window
    transcript.json           transcribe  openai-whisper's result shape
    render/transcript.<fmt>   render      one file per requested format
    (job.outputs)             publish     the final files, written atomically

A re-run on the same work dir starts after the last finished stage: with
transcript.json present the input is not even read (it may be gone) and no
model is loaded. audio.npy is deleted once the transcript exists, because it
is large and the transcript is what gets reused.

Chosen stages run again on request (`rerun_stages`, seed 004's `--stages`):
each chosen stage and every stage that depends on it (`DEPENDS`) lose their
checkpoints once per request (`rerun_id`), so re-rendering in a new format
does not transcribe again, and a retried attempt of the same request resumes
instead of starting over. A checkpoint a chosen stage needs but that is gone
(audio.npy after a finished transcription) is made again by its own stage.

`run_transcription` is what a slot calls for a task of kind "transcribe".
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

from scribefleet.options import FORMATS, TranscribeOptions
from scribefleet.pipeline.asr import transcribe_windows
from scribefleet.pipeline.checkpoint import (
    WindowLog,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    dequantize_audio,
    load_audio,
    quantize_audio,
    read_json,
    save_audio,
)
from scribefleet.pipeline.guards import zero_counts
from scribefleet.pipeline.language import model_warnings
from scribefleet.pipeline.media import SAMPLE_RATE, decode_audio
from scribefleet.pipeline.models import ModelCache, ResolvedModel
from scribefleet.pipeline.render import render
from scribefleet.pipeline.vad import speech_ranges

log = logging.getLogger("scribefleet.pipeline")

STAGES = ("decode", "vad", "transcribe", "render", "publish")
#: stage -> the stages whose checkpoints it reads
DEPENDS: dict[str, tuple[str, ...]] = {
    "decode": (),
    "vad": ("decode",),
    "transcribe": ("decode", "vad"),
    "render": ("transcribe",),
    "publish": ("render",),
}


def stages_to_redo(chosen: tuple[str, ...] | list[str]) -> list[str]:
    """The chosen stages and every stage downstream of one of them, in pipeline order."""
    redo = set(chosen)
    for stage in STAGES:  # STAGES is in dependency order, so one pass closes the set
        if any(dep in redo for dep in DEPENDS[stage]):
            redo.add(stage)
    return [stage for stage in STAGES if stage in redo]
ProgressFn = Callable[[str, float, dict[str, Any]], None]


class TranscriptionJob(BaseModel, extra="forbid"):
    """Everything a slot needs to transcribe one file: input, checkpoints, outputs, model, device."""

    input_path: Path
    work_dir: Path
    outputs: dict[str, Path]  # format -> final path
    options: TranscribeOptions
    device: Literal["cpu", "cuda"] = "cpu"
    cpu_threads: int = Field(default=0, ge=0)
    max_file_mb: int = Field(default=2000, gt=0)
    window_s: float = Field(default=600.0, gt=0)
    model_path: Path
    model_id: str
    rerun_stages: tuple[str, ...] = ()  # stages to run again although their checkpoints exist
    rerun_id: str = ""  # names one rerun request: its checkpoints are discarded once, not per attempt

    @field_validator("rerun_stages")
    @classmethod
    def _known_stages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in value if s not in STAGES]
        if bad:
            raise ValueError(f"unknown stage(s) {', '.join(bad)}; choose from {', '.join(STAGES)}")
        return tuple(dict.fromkeys(value))

    @field_validator("outputs")
    @classmethod
    def _known_formats(cls, value: dict[str, Path]) -> dict[str, Path]:
        bad = sorted(set(value) - set(FORMATS))
        if bad:
            raise ValueError(f"unknown output format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}")
        return value


class WorkDir:
    """The checkpoint files of one job."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.audio = root / "audio.npy"
        self.vad = root / "vad.json"
        self.windows = root / "windows.jsonl"
        self.transcript = root / "transcript.json"
        self.render_dir = root / "render"
        self.rerun = root / "rerun.json"

    def checkpoints(self, stage: str) -> list[Path]:
        """The files a stage leaves behind (publish leaves the outputs, which are rewritten in place)."""
        return {
            "decode": [self.audio],
            "vad": [self.vad],
            "transcribe": [self.windows, self.transcript],
            "render": list(self.render_dir.glob("transcript.*")) if self.render_dir.is_dir() else [],
            "publish": [],
        }[stage]

    def rendered(self, fmt: str) -> Path:
        return self.render_dir / f"transcript.{fmt}"


class _JobRun:
    """One execution of a job: runs the unfinished stages, times them, reports progress."""

    def __init__(self, job: TranscriptionJob, models: ModelCache, progress: ProgressFn) -> None:
        self.job = job
        self.models = models
        self.progress = progress
        self.work = WorkDir(job.work_dir)
        self.timings_s: dict[str, float] = {}
        self.extra: dict[str, Any] = {}
        self.skipped: list[str] = []
        self.resumed_from: str | None = None
        self.extra_result: dict[str, Any] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Run a stage: progress at start and end, its time in timings_s."""
        if self.skipped and not self.timings_s:  # every stage before this one was already done
            self.resumed_from = name
        self.progress(name, 0.0, dict(self.extra))
        started = time.monotonic()
        yield
        self.timings_s[name] = round(time.monotonic() - started, 3)
        log.debug("%s: stage %s took %.2f s", self.job.input_path.name, name, self.timings_s[name])
        self.progress(name, 1.0, dict(self.extra))

    def skip(self, name: str) -> None:
        """A stage whose checkpoint already exists: only report it as done."""
        self.skipped.append(name)
        self.progress(name, 1.0, dict(self.extra))

    def discard_for_rerun(self) -> list[str]:
        """Drop the checkpoints of the stages this rerun request redoes, unless an earlier attempt did."""
        redo = stages_to_redo(self.job.rerun_stages)
        if not redo:
            return []
        request = {"id": self.job.rerun_id, "stages": redo}
        if self.job.rerun_id and read_json(self.work.rerun) == request:
            return redo  # applied by an earlier attempt of this request: resume what it redid
        for stage in redo:
            for path in self.work.checkpoints(stage):
                path.unlink(missing_ok=True)
        atomic_write_json(self.work.rerun, request)
        log.info("%s: running again %s", self.job.input_path.name, ", ".join(redo))
        return redo

    def execute(self) -> dict[str, Any]:
        self.work.root.mkdir(parents=True, exist_ok=True)
        rerun = self.discard_for_rerun()
        transcript = read_json(self.work.transcript)
        if transcript is None:
            audio = self.audio()
            ranges = self.ranges(audio)
            transcript = self.transcribe(audio, ranges)
            del audio
        else:
            self.extra["audio_s"] = transcript["duration"]
            for name in ("decode", "vad", "transcribe"):
                self.skip(name)
        self.work.audio.unlink(missing_ok=True)
        self.render(transcript)
        with self.stage("publish"):
            published = self.publish()
        return {
            "outputs": published,
            "duration_s": transcript["duration"],
            "language": transcript["language"],
            "language_probability": transcript.get("language_probability"),
            "warnings": transcript.get("warnings", []),
            "segments": len(transcript["segments"]),
            "guards": transcript.get("guards") or zero_counts(),  # how often each hallucination guard fired
            "resumed_from": self.resumed_from,
            "timings_s": self.timings_s,
            "stages_run": list(self.timings_s),
            **self.extra_result,
            **({"rerun_stages": rerun} if rerun else {}),
        }

    def audio(self) -> np.ndarray:
        if self.work.audio.exists():
            audio = load_audio(self.work.audio)
            self.extra["audio_s"] = round(audio.shape[0] / SAMPLE_RATE, 3)
            self.skip("decode")
            return audio
        with self.stage("decode"):
            samples = quantize_audio(decode_audio(self.job.input_path, max_file_mb=self.job.max_file_mb))
            save_audio(self.work.audio, samples)
            # continue from exactly what the checkpoint holds, so a resumed run sees the same samples
            audio = dequantize_audio(samples)
            del samples
            self.extra["audio_s"] = round(audio.shape[0] / SAMPLE_RATE, 3)
        return audio

    def ranges(self, audio: np.ndarray) -> list[tuple[float, float]]:
        # per-window languages cut windows of ~20 s at silences: they need the short ranges too
        batched = self.job.options.is_batched or self.job.options.language_per_window
        stored = read_json(self.work.vad)
        if isinstance(stored, dict) and stored.get("batched") == batched:
            self.skip("vad")
            return [(float(s), float(e)) for s, e in stored["ranges"]]
        with self.stage("vad"):
            ranges = speech_ranges(audio, batched=batched)
            atomic_write_json(self.work.vad, {"batched": batched, "ranges": ranges})
        return ranges

    def transcribe(self, audio: np.ndarray, ranges: list[tuple[float, float]]) -> dict[str, Any]:
        job = self.job
        with self.stage("transcribe"):
            model = self.models.get(
                ResolvedModel(path=job.model_path, model_id=job.model_id),
                device=job.device,
                compute_type=job.options.compute_type,
                cpu_threads=job.cpu_threads,
            )

            def on_progress(fraction: float, where: dict[str, Any]) -> None:
                self.progress("transcribe", fraction, {**self.extra, **where})

            transcript = transcribe_windows(
                model,
                audio,
                ranges,
                job.options,
                window_s=job.window_s,
                log=WindowLog(self.work.windows),
                on_progress=on_progress,
            )
            # said in the transcript (and the task's result), not only in the slot's log
            if warnings := model_warnings(model, job.options, job.model_id):
                for warning in warnings:
                    log.warning("%s: %s", job.input_path.name, warning)
                transcript["warnings"] = warnings
            atomic_write_json(self.work.transcript, transcript)
            self.extra_result["compute_type"] = model.model.compute_type  # what CTranslate2 really runs
        return transcript

    def render(self, transcript: dict[str, Any]) -> None:
        # a new transcript makes every earlier rendering stale
        fresh = any(stage in self.timings_s for stage in DEPENDS["render"])
        missing = [fmt for fmt in self.job.outputs if fresh or not self.work.rendered(fmt).exists()]
        if not missing:
            self.skip("render")
            return
        with self.stage("render"):
            for fmt in missing:
                atomic_write_text(self.work.rendered(fmt), render(transcript, fmt))

    def publish(self) -> dict[str, str]:
        published = {}
        for fmt, target in self.job.outputs.items():
            data = self.work.rendered(fmt).read_bytes()
            # an identical file already there (published just before a crash) is left alone,
            # so a resumed batch does not touch finished outputs
            if not (target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data):
                # temp file next to the target + rename: a reader never sees half an output
                atomic_write_bytes(target, data)
            published[fmt] = str(target)
        return published


def run_transcription(job: TranscriptionJob, models: ModelCache, progress: ProgressFn) -> dict[str, Any]:
    """Run (or resume) one job; returns {"outputs", "duration_s", "language", "language_probability",
    "warnings", "segments", "guards", "resumed_from", "timings_s", "stages_run", "rerun_stages"?}."""
    return _JobRun(job, models, progress).execute()
