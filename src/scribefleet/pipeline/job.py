"""One transcription job: one media file (or URL) through fetch -> decode -> vad -> transcribe -> diarize -> render -> publish.

Every stage leaves a checkpoint in the job's work dir (docs/architecture.md):

    fetch.json, media.<ext>   fetch       a URL's download, its content hash and metadata
    audio.npy, decode.json    decode      int16 16 kHz mono samples; what decoding warned of (a cut-off file)
    vad.json                  vad         speech ranges in seconds
    windows.jsonl             transcribe  one line per finished window
    transcript.json           transcribe  openai-whisper's result shape
    diarize.json              diarize     speaker turns (only with options.diarize)
    render/transcript.<fmt>   render      one file per requested format
    (job.outputs)             publish     the final files, written atomically

A URL job's `work_dir` is keyed by the URL (`url-<hash of URL>-<options key>`,
see jobs.create.work_dir_for) and holds the fetch, render and publish
checkpoints; after the download the content hash names a second work dir,
`<content hash>-<options key>` beside it, exactly the one a local file with the
same bytes gets, which holds decode, vad and transcribe. So the same media
under two URLs (or a URL and a file) is transcribed once. The download is
deleted once that transcript exists.

A re-run on the same work dir starts after the last finished stage: with
transcript.json present the input is not even read (it may be gone) and no
model is loaded. audio.npy is deleted once the transcript (and, with
`diarize`, the speaker turns) exists, because it is large and the transcript
is what gets reused. Speakers are put on the segments and words at render
time, so diarizing again never transcribes again.

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
import fcntl
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from scribefleet.errors import UsageError
from scribefleet.options import FORMATS, FetchOptions, PublishOptions, TranscribeOptions
from scribefleet.pipeline.checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_samples,
    read_json,
    save_audio,
)
from scribefleet.pipeline.diarize import DiarizerConfig, checkpoint_identity, diarize
from scribefleet.pipeline.fetch import downloaded, fetch_media
from scribefleet.pipeline.guards import zero_counts
from scribefleet.pipeline.language import model_warnings
from scribefleet.pipeline.media import SAMPLE_RATE, Samples, content_hash, decode_pcm16
from scribefleet.pipeline.models import ModelCache, ResolvedModel
from scribefleet.pipeline.publish import S3Credentials, publish_outputs
from scribefleet.pipeline.render import render
from scribefleet.pipeline.speakers import assign_speakers
from scribefleet.pipeline.stages import DEPENDS, STAGES, stages_to_redo
from scribefleet.pipeline.spread import transcribe_spread
from scribefleet.pipeline.vad import speech_ranges, vad_threads

log = logging.getLogger("scribefleet.pipeline")

ProgressFn = Callable[[str, float, dict[str, Any]], None]


class TranscriptionJob(BaseModel, extra="forbid"):
    """Everything a slot needs to transcribe one file: input, checkpoints, outputs, model, device."""

    input_path: Path | None = None  # a local file, or
    url: str | None = None  # a media URL, downloaded by the fetch stage
    fetch: FetchOptions = FetchOptions()
    url_allowlist: list[str] | None = None  # None: any address (the CLI); else internal ones must be listed
    publish: PublishOptions | None = None  # also upload the outputs to S3
    credentials_file: Path | None = None  # this job's own S3 keys, sealed (pipeline/sealed.py); deleted once published
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
    diarizer: DiarizerConfig = DiarizerConfig()  # the slot's diarization settings (options.diarize)
    spread_slots: int = Field(default=1, ge=1)  # slots the dispatcher may lend this job (pipeline/spread.py)
    slot_name: str = ""  # the slot running it, named in the window log

    @field_validator("rerun_stages")
    @classmethod
    def _known_stages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in value if s not in STAGES]
        if bad:
            raise ValueError(f"unknown stage(s) {', '.join(bad)}; choose from {', '.join(STAGES)}")
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _one_input(self) -> "TranscriptionJob":
        if (self.input_path is None) == (self.url is None):
            raise ValueError("a transcribe task names exactly one of input_path and url")
        return self

    @property
    def name(self) -> str:
        """How logs name the job."""
        return self.input_path.name if self.input_path is not None else str(self.url)

    def model(self, models: ModelCache) -> Any:
        """The job's model, loaded (or found warm) in `models`, the slot's model cache."""
        return models.get(
            ResolvedModel(path=self.model_path, model_id=self.model_id),
            device=self.device,
            compute_type=self.options.compute_type,
            cpu_threads=self.cpu_threads,
            batched=self.options.decodes_clips,
        )

    @field_validator("outputs")
    @classmethod
    def _known_formats(cls, value: dict[str, Path]) -> dict[str, Path]:
        bad = sorted(set(value) - set(FORMATS))
        if bad:
            raise ValueError(f"unknown output format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}")
        return value


class WorkDir:
    """The checkpoint files of one job."""

    def __init__(self, root: Path, render_dir: Path | None = None) -> None:
        self.root = root
        self.fetched = root / "fetch.json"
        self.audio = root / "audio.npy"
        self.decoded = root / "decode.json"
        self.vad = root / "vad.json"
        self.windows = root / "windows.jsonl"
        self.transcript = root / "transcript.json"
        self.diarization = root / "diarize.json"
        self.render_dir = render_dir or root / "render"
        self.rerun = root / "rerun.json"

    def checkpoints(self, stage: str) -> list[Path]:
        """The files a stage leaves behind (publish leaves the outputs, which are rewritten in place)."""
        return {
            "fetch": [self.fetched, *self.root.glob("media.*")],
            "decode": [self.audio, self.decoded],
            "vad": [self.vad],
            "transcribe": [self.windows, self.transcript, self.root / "spread.json"],
            "diarize": [self.diarization],
            "render": list(self.render_dir.glob("transcript.*")) if self.render_dir.is_dir() else [],
            "publish": [],
        }[stage]

    def rendered(self, fmt: str) -> Path:
        return self.render_dir / f"transcript.{fmt}"

    def content_twin(self, digest: str) -> Path:
        """The content-keyed work dir beside this URL-keyed one: same options key, the media's hash."""
        return self.root.with_name(f"{digest[:20]}-{self.root.name.rsplit('-', 1)[1]}")


class _JobRun:
    """One execution of a job: runs the unfinished stages, times them, reports progress."""

    def __init__(self, job: TranscriptionJob, models: ModelCache, progress: ProgressFn,
                 credentials: S3Credentials | None = None) -> None:
        self.job = job
        self.models = models
        self.progress = progress
        self.credentials = credentials
        self.work = WorkDir(job.work_dir)
        self.input_path = job.input_path
        self.metadata: dict[str, Any] = {}
        self.timings_s: dict[str, float] = {}
        self.extra: dict[str, Any] = {}
        self.skipped: list[str] = []
        self.resumed_from: str | None = None
        self.extra_result: dict[str, Any] = {}
        self.decode_warnings: list[str] = []  # said in the result, not only in the slot's log

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Run a stage: progress at start and end, its time in timings_s."""
        if self.skipped and not self.timings_s:  # every stage before this one was already done
            self.resumed_from = name
        self.progress(name, 0.0, dict(self.extra))
        started = time.monotonic()
        yield
        self.timings_s[name] = round(time.monotonic() - started, 3)
        log.debug("%s: stage %s took %.2f s", self.job.name, name, self.timings_s[name])
        self.progress(name, 1.0, dict(self.extra))

    def skip(self, name: str) -> None:
        """A stage whose checkpoint already exists: only report it as done."""
        self.skipped.append(name)
        self.progress(name, 1.0, dict(self.extra))

    def discard_for_rerun(self, work: WorkDir, among: tuple[str, ...] = STAGES) -> list[str]:
        """Drop the checkpoints in `work` of the stages (of `among`) this rerun request redoes, unless an earlier
        attempt did."""
        redo = [s for s in stages_to_redo(self.job.rerun_stages) if s in among]
        if not redo:
            return []
        request = {"id": self.job.rerun_id, "stages": redo}
        if self.job.rerun_id and read_json(work.rerun) == request:
            return redo  # applied by an earlier attempt of this request: resume what it redid
        for stage in redo:
            for path in work.checkpoints(stage):
                path.unlink(missing_ok=True)
        atomic_write_json(work.rerun, request)
        log.info("%s: running again %s", self.job.name, ", ".join(redo))
        return redo

    def execute(self) -> dict[str, Any]:
        self.work.root.mkdir(parents=True, exist_ok=True)
        if self.job.url is None:
            return self.transcribe_and_publish(self.discard_for_rerun(self.work))
        url_work = self.work
        rerun = self.discard_for_rerun(url_work, ("fetch", "render", "publish"))
        fetched = read_json(url_work.fetched)
        content_rerun: list[str] = []
        if fetched:
            self.work = WorkDir(url_work.content_twin(fetched["digest"]), render_dir=url_work.render_dir)
            content_rerun = self.discard_for_rerun(self.work, ("decode", "vad", "transcribe", "diarize"))
        media = downloaded(url_work.root)
        if fetched and (self.transcribed() or (media and media.name == fetched["file"])):
            self.skip("fetch")
            self.input_path = media
        else:
            with self.stage("fetch"):
                fetched = self.fetch(url_work)
            self.work = WorkDir(url_work.content_twin(fetched["digest"]), render_dir=url_work.render_dir)
            content_rerun = self.discard_for_rerun(self.work, ("decode", "vad", "transcribe", "diarize"))
        self.metadata = fetched["metadata"]
        self.work.root.mkdir(parents=True, exist_ok=True)
        # two URLs of the same media share this dir: one transcribes, the other waits and reuses
        with (self.work.root / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            result = self.transcribe_and_publish(sorted(set(rerun + content_rerun), key=STAGES.index))
        for leftover in url_work.checkpoints("fetch")[1:]:
            leftover.unlink(missing_ok=True)  # the transcript exists: the download is not needed again
        return result

    def fetch(self, url_work: WorkDir) -> dict[str, Any]:
        job = self.job
        assert job.url is not None
        got = fetch_media(
            job.url, url_work.root, job.fetch, max_file_mb=job.max_file_mb, allowlist=job.url_allowlist,
            on_progress=lambda fraction: self.progress("fetch", fraction, dict(self.extra)),
        )  # fmt: skip
        self.input_path = got.path
        state = {"file": got.path.name, "digest": content_hash(got.path), "metadata": got.metadata}
        atomic_write_json(url_work.fetched, state)
        return state

    def transcribe_and_publish(self, rerun: list[str]) -> dict[str, Any]:
        transcript = read_json(self.work.transcript)
        wants_speakers = self.job.options.diarize
        diarization = self.stored_diarization() if wants_speakers else None
        if transcript is None or (wants_speakers and diarization is None):
            audio, ranges = self.audio_and_ranges(load_model=transcript is None)
            if transcript is None:
                transcript = self.transcribe(audio, ranges)
            else:
                self.skip("transcribe")
            if wants_speakers and diarization is None:
                diarization = self.diarize(audio, ranges)
            del audio
        else:
            self.extra["audio_s"] = transcript["duration"]
            for name in ("decode", "vad", "transcribe"):
                self.skip(name)
        if diarization is not None:
            if "diarize" not in self.timings_s:
                self.skip("diarize")
            self.extra_result["speakers"] = diarization["speakers"]
        self.work.audio.unlink(missing_ok=True)
        self.work.decoded.unlink(missing_ok=True)  # its warnings are in the transcript now
        made_from = {k: v for k, v in diarization.items() if k not in ("turns", "names")} if diarization else None
        self.render(assign_speakers(transcript, diarization) if diarization else transcript, made_from)
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
            **({"metadata": self.metadata} if self.metadata else {}),
            **self.extra_result,
            **({"rerun_stages": rerun} if rerun else {}),
        }

    def audio_and_ranges(self, *, load_model: bool) -> tuple[Samples, list[tuple[float, float]]]:
        """The decode and vad stages; with `load_model`, the model loads in this thread meanwhile.

        Decoding the media and VAD take one core; loading the model (and importing
        faster-whisper) takes seconds of the other. The model is loaded here, not in
        the helper thread, because CTranslate2 runs slower from a thread other than
        the one that loaded it once that one is gone (cobatch.SharedBatches.serve).
        """
        if not load_model:
            audio = self.audio()
            return audio, self.ranges(audio)
        found: dict[str, Any] = {}

        def media() -> None:
            try:
                found["audio"] = self.audio()
                found["ranges"] = self.ranges(found["audio"])
            except BaseException as exc:  # noqa: BLE001 - raised again in the job's own thread
                found["error"] = exc

        helper = threading.Thread(target=media, name=f"media-{self.job.name}", daemon=True)
        helper.start()
        try:
            self.job.model(self.models)
        finally:
            helper.join()  # the media's error first: a broken file says so, whatever the model does
            if "error" in found:
                raise found["error"]
        return found["audio"], found["ranges"]

    def audio(self) -> Samples:
        """The recording's samples: its audio checkpoint, or decoded (and checkpointed) now; kept as 16-bit
        samples through the job (`Samples`), half the memory of floats."""
        if self.work.audio.exists():
            audio = load_samples(self.work.audio)
            self.extra["audio_s"] = round(audio.shape[0] / SAMPLE_RATE, 3)
            self.decode_warnings = list((read_json(self.work.decoded) or {}).get("warnings") or [])
            self.skip("decode")
            return audio
        with self.stage("decode"):
            if self.input_path is None:
                raise UsageError(f"{self.job.name}: the download is gone; run again with --stages fetch")
            samples = decode_pcm16(self.input_path, max_file_mb=self.job.max_file_mb, warnings=self.decode_warnings)
            atomic_write_json(self.work.decoded, {"warnings": self.decode_warnings})  # before the audio it speaks of
            save_audio(self.work.audio, samples)
            # exactly what the checkpoint holds, so a resumed run sees the same samples
            audio = Samples(samples)
            self.extra["audio_s"] = round(audio.shape[0] / SAMPLE_RATE, 3)
        return audio

    def ranges(self, audio: Samples) -> list[tuple[float, float]]:
        # per-window languages cut windows of ~20 s at silences: they need the short ranges too
        batched = self.job.options.is_batched or self.job.options.language_per_window
        stored = read_json(self.work.vad)
        if isinstance(stored, dict) and stored.get("batched") == batched:
            self.skip("vad")
            return [(float(s), float(e)) for s, e in stored["ranges"]]
        with self.stage("vad"):
            # the slots the dispatcher may lend this job are idle until the window plan is announced
            threads = vad_threads(self.job.cpu_threads, self.job.spread_slots)
            log.debug("%s: VAD on %d threads", self.job.name, threads)
            ranges = speech_ranges(audio, batched=batched, threads=threads,
                                   on_progress=lambda fraction: self.progress("vad", fraction, dict(self.extra)))
            atomic_write_json(self.work.vad, {"batched": batched, "ranges": ranges})
        return ranges

    def transcribe(self, audio: Samples, ranges: list[tuple[float, float]]) -> dict[str, Any]:
        job = self.job
        with self.stage("transcribe"):
            model = self.job.model(self.models)

            def on_progress(fraction: float, where: dict[str, Any]) -> None:
                self.progress("transcribe", fraction, {**self.extra, **where})

            def announce(spread: dict[str, Any]) -> None:  # other slots may help: the dispatcher lends them
                self.progress("transcribe", 0.0, {**self.extra, "spread": spread})

            transcript, spread = transcribe_spread(
                model, audio, ranges, job.options, work_dir=self.work.root, window_s=job.window_s,
                slots=job.spread_slots, slot_name=job.slot_name, announce=announce, on_progress=on_progress,
            )  # fmt: skip
            if spread is not None:
                self.extra_result["spread"] = spread
            # said in the transcript (and the task's result), not only in the slot's log
            if warnings := model_warnings(model, job.options, job.model_id):
                for warning in warnings:
                    log.warning("%s: %s", job.input_path.name, warning)
            if warnings := self.decode_warnings + warnings:
                transcript["warnings"] = warnings
            atomic_write_json(self.work.transcript, transcript)
            self.extra_result["compute_type"] = model.model.compute_type  # what CTranslate2 really runs
        return transcript

    def transcribed(self) -> bool:
        """Whether the stages that read the media are all done (a URL's download is not needed again)."""
        if not self.work.transcript.exists():
            return False
        return not self.job.options.diarize or self.work.audio.exists() or self.stored_diarization() is not None

    def stored_diarization(self) -> dict[str, Any] | None:
        """diarize.json when it was made by the backend now configured for the speaker options asked, else None."""
        stored = read_json(self.work.diarization)
        identity = checkpoint_identity(self.job.diarizer, self.job.options)
        if isinstance(stored, dict) and all(stored.get(k) == v for k, v in identity.items()):
            return stored
        return None

    def diarize(self, audio: Samples, ranges: list[tuple[float, float]]) -> dict[str, Any]:
        with self.stage("diarize"):

            def on_progress(fraction: float) -> None:
                self.progress("diarize", fraction, dict(self.extra))

            diarization = diarize(
                audio,
                ranges,
                self.job.options,
                self.job.diarizer,
                device=self.job.device,
                threads=self.job.cpu_threads,
                on_progress=on_progress,
            )
            atomic_write_json(self.work.diarization, diarization)
        return diarization

    def render(self, transcript: dict[str, Any], made_from: dict[str, Any] | None) -> None:
        # a new transcript makes every earlier rendering stale, and so do other speakers (or none): jobs with and
        # without diarize share the work dir, its render_dir/speakers.json says which speakers were rendered
        stamp = self.work.render_dir / "speakers.json"
        fresh = any(stage in self.timings_s for stage in DEPENDS["render"]) or read_json(stamp) != {"from": made_from}
        missing = [fmt for fmt in self.job.outputs if fresh or not self.work.rendered(fmt).exists()]
        if not missing:
            self.skip("render")
            return
        with self.stage("render"):
            for fmt in missing:
                shown = {**transcript, "metadata": self.metadata} if fmt == "json" and self.metadata else transcript
                atomic_write_text(self.work.rendered(fmt), render(shown, fmt))
            atomic_write_json(stamp, {"from": made_from})

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
        if self.job.publish is not None:
            self.extra_result["published"] = publish_outputs(
                {fmt: Path(p) for fmt, p in published.items()}, self.job.publish, self.credentials,
            )  # fmt: skip
        return published


def run_transcription(job: TranscriptionJob, models: ModelCache, progress: ProgressFn, *,
                      credentials: S3Credentials | None = None) -> dict[str, Any]:
    """Run (or resume) one job; returns {"outputs", "duration_s", "language", "language_probability", "warnings",
    "segments", "guards", "resumed_from", "timings_s", "stages_run", "speakers"? (with diarize), "published"?,
    "metadata"?, "rerun_stages"?}.

    `credentials` (the serverless handler's, from its input) are used for this job's uploads only; a queued
    job's own keys come sealed (`job.credentials_file`), and are deleted once its outputs are published.
    """
    if credentials is None and job.credentials_file is not None and job.publish is not None:
        from scribefleet.pipeline.sealed import forget, unseal

        result = _JobRun(job, models, progress, unseal(job.credentials_file)).execute()
        forget(job.credentials_file)
        return result
    return _JobRun(job, models, progress, credentials).execute()
