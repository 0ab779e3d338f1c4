"""`scribefleet transcribe`: a batch of media files as a generated plan of transcribe tasks.

The flags become TranscribeOptions; `jobs.run.run_transcribe` checks the
inputs, resolves the model, records the batch (or finds the one a previous
run of the same command made) and runs it in burst mode; this module shows
the progress and the outcome. Re-running the same command only runs what is
not finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scribefleet.cli import edge
from scribefleet.cli.progress import BatchProgress
from scribefleet.cli.render import report_outcome
from scribefleet.fsio import make_dir
from scribefleet.jobs.run import run_transcribe
from scribefleet.logs import setup_logging


def transcribe(
    ctx: typer.Context,
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT...", help="Media files, folders (recursive), globs, or http(s) URLs (media links, pages yt-dlp knows, playlists).")],
    out: Annotated[Path, typer.Option("--out", "-o", "--output_dir", "--output-dir", parser=edge.path_value("--out"), help="Folder for outputs and the resumable state (OUT/.scribefleet).")] = Path("out"),
    model: edge.Model = "tiny.en",
    language: edge.Language = None,
    task: edge.Task = "transcribe",
    formats: edge.Formats = "all",
    device: edge.Device = "auto",
    compute_type: edge.ComputeType = "auto",
    batch_size: edge.BatchSize = 8,
    vad: edge.Vad = True,
    word_timestamps: edge.WordTimestamps = False,
    beam_size: edge.BeamSize = 5,
    initial_prompt: edge.InitialPrompt = None,
    diarize: edge.Diarize = False,
    speakers: edge.Speakers = None,
    min_speakers: edge.MinSpeakers = None,
    max_speakers: edge.MaxSpeakers = None,
    speaker_names: edge.SpeakerNames = None,
    cookies: edge.Cookies = None,
    proxy: edge.Proxy = None,
    socket_timeout: edge.SocketTimeout = None,
    max_duration: edge.MaxDuration = None,
    publish: edge.Publish = None,
    s3_endpoint_url: edge.S3EndpointUrl = None,
    s3_region: edge.S3Region = None,
    allow_missing: edge.AllowMissing = False,
    engine: edge.EngineName = None,
    ray_address: edge.RayAddress = None,
    slots_per_gpu: edge.SlotsPerGpu = None,
    slots: Annotated[Optional[int], typer.Option("--slots", min=1, help="Number of slots (default: one per GPU, else 1 CPU slot); no more than the machine holds (memory, 2 per core, 26 per GPU), with a warning.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo every job, ignoring finished work and checkpoints.")] = False,
    stages: Annotated[Optional[str], typer.Option("--stages", help="Run these stages again (comma-separated, e.g. render or transcribe,render) for every job, finished ones too, from the other stages' checkpoints.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging (dispatch decisions, heartbeats).")] = False,
) -> None:
    """Transcribe media files into subtitles and transcripts, resumably."""

    def body() -> int:
        options = edge.transcribe_options(
            model=model, language=language, task=task, formats=formats, device=device, compute_type=compute_type,
            batch_size=batch_size, vad=vad, word_timestamps=word_timestamps, beam_size=beam_size,
            initial_prompt=initial_prompt, diarize=diarize, speakers=speakers, min_speakers=min_speakers,
            max_speakers=max_speakers, speaker_names=speaker_names.resolve() if speaker_names else None,
        )  # fmt: skip
        settings = edge.with_engine(ctx, engine, ray_address, slots_per_gpu)
        fetch = edge.fetch_options(cookies=cookies, proxy=proxy, socket_timeout_s=socket_timeout,
                                   max_duration_s=max_duration)  # fmt: skip
        target = edge.publish_options(publish, endpoint_url=s3_endpoint_url, region=s3_region)
        rerun = edge.stage_list(stages)  # every flag is checked before anything is written
        state_dir = make_dir(out.resolve() / ".scribefleet")  # OUTPUT_WRITE_FAILED for a file or read-only disk
        console = edge.stderr_console()
        progress = BatchProgress(console, json_mode=json_out, log_every_s=settings.progress_log_s)
        setup_logging(state_dir / "logs" / "scribefleet.log", verbose=verbose, console=progress.log_handler(verbose),
                      max_mb=settings.log_max_mb, backups=settings.log_backups)  # fmt: skip
        store, batch_id = run_transcribe(inputs, out, options, settings, slots=slots, force=force,
                                         allow_missing=allow_missing, stages=rerun,
                                         listeners=[progress.on_event], watch=progress.live, fetch=fetch,
                                         publish=target)  # fmt: skip
        line = f"{{done}}/{{total}} done, {{failed}}. Outputs and state: {state_dir.parent}"
        return report_outcome(console, store.tasks(batch_id=batch_id), json_out=json_out, batch_id=batch_id,
                              state_dir=str(state_dir), line=line)  # fmt: skip

    edge.run(body)
