"""`scribefleet submit`: one file as an async job whose id is printed at once (seed 003's run_yt_job);
`scribefleet dispatch`: the detached runner it starts.

With a controller (`--controller` or SCRIBEFLEET_CONTROLLER) the file is
uploaded and a job created there; a URL is sent as it is (`{"url"}`), the
controller fetches it (one job per playlist entry). Without one the job goes into the local
store of `--out` (`jobs.create.submit_file`, the same task spec as
`scribefleet transcribe`) and a detached runner, `scribefleet dispatch`
(`jobs.run.run_queued`), is started in its own session with its output in the
state dir's logs. The runner runs every queued task of that store and exits
when none is left; if another dispatcher holds the state dir's lock it waits
for it and then runs whatever is still queued, so a submitted job is never
stranded.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from scribefleet import client
from scribefleet.cli import edge
from scribefleet.cli.render import write_json
from scribefleet.errors import InputNotFound, UsageError
from scribefleet.options import FetchOptions, is_http_url
from scribefleet.jobs.create import submit_file
from scribefleet.jobs.lookup import state_dir_of
from scribefleet.jobs.run import run_queued, start_runner
from scribefleet.jobs.views import TaskView, task_view
from scribefleet.logs import setup_logging


def submit(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(metavar="FILE|URL", help="One media file, or a media URL (a playlist: one job per entry).")],
    controller: Annotated[Optional[str], typer.Option("--controller", parser=edge.text_value("--controller", "a controller URL"), help="Controller URL (default: SCRIBEFLEET_CONTROLLER; unset: the local store).")] = None,
    token: Annotated[Optional[str], typer.Option("--token", parser=edge.text_value("--token", "an API token"), help="API token (default: SCRIBEFLEET_TOKEN, which ps does not show).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", parser=edge.path_value("--out"), help="Without a controller: folder for outputs and the state dir OUT/.scribefleet.")] = Path("out"),
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
    json_out: Annotated[bool, typer.Option("--json", help="Print the job as JSON instead of its id.")] = False,
) -> None:
    """Submit one file as a background job; print its id at once."""

    def body() -> int:
        options = edge.transcribe_options(
            model=model, language=language, task=task, formats=formats, device=device, compute_type=compute_type,
            batch_size=batch_size, vad=vad, word_timestamps=word_timestamps, beam_size=beam_size,
            initial_prompt=initial_prompt, diarize=diarize, speakers=speakers, min_speakers=min_speakers,
            max_speakers=max_speakers, speaker_names=speaker_names.resolve() if speaker_names else None,
        )  # fmt: skip
        settings = edge.settings_of(ctx)
        fetch = edge.fetch_options(cookies=cookies, proxy=proxy, socket_timeout_s=socket_timeout,
                                   max_duration_s=max_duration)  # fmt: skip
        target = edge.publish_options(publish, endpoint_url=s3_endpoint_url, region=s3_region)
        url = controller or settings.controller
        if url:
            if fetch != FetchOptions():
                raise UsageError("--cookies, --proxy, --socket-timeout and --max-duration are for URLs fetched here; "
                                 "a controller fetches with its own settings: drop them, or submit without "
                                 "--controller", controller=url)  # fmt: skip
            sent = target.model_dump(mode="json", exclude_defaults=True) if target else None
            # the job request may be sent again (a timeout, a 5xx, a lost answer): the controller answers a known
            # key with the job it made, so one submit makes one job
            key = secrets.token_urlsafe(18)
            with client.connect(url, token, settings) as conn:
                if is_http_url(file):  # the controller fetches it (its allowlist applies)
                    jobs = conn.create_url_job(file, options.model_dump(mode="json"), publish=sent, idempotency_key=key)
                else:
                    file_path = Path(file)
                    if not file_path.is_file():
                        raise InputNotFound(f"{file} is not a file: name one media file or URL", input=str(file))
                    upload = conn.upload(file_path)
                    jobs = [conn.create_job(upload["uploadId"], options.model_dump(mode="json"), publish=sent,
                                            idempotency_key=key)]
                views = [TaskView.from_api(job, conn.url).as_json(controller=conn.url, job=job) for job in jobs]
                view, where = views[0], f"--controller {conn.url}"
        else:
            submitted = submit_file(file, out, options, settings, fetch=fetch, publish=target)
            start_runner(out.resolve())
            state_dir = state_dir_of(out)
            views = [task_view(t).as_json(state_dir=str(state_dir)) for t in submitted]
            view, where = views[0], f"--state {state_dir}"
        if len(views) > 1:  # a playlist: one job per entry, one id per line
            if json_out:
                write_json(views)
            else:
                sys.stdout.write("".join(v["job_id"] + "\n" for v in views))
            edge.stderr_console().print(f"submitted {len(views)} jobs; follow them with: scribefleet status JOB {where}")
            return 0
        if json_out:
            write_json(view)
        else:
            sys.stdout.write(view["job_id"] + "\n")
        edge.stderr_console().print(f"submitted; follow it with: scribefleet status {view['job_id']} {where}")
        return 0

    edge.run(body)


def dispatch(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", parser=edge.path_value("--out"), help="OUT folder (or its .scribefleet state dir) whose queued jobs to run.")] = Path("out"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run every queued job of a state dir until none is left (what submit starts in the background)."""

    def body() -> int:
        settings = edge.settings_of(ctx)
        setup_logging(state_dir_of(out) / "logs" / "scribefleet.log", verbose=verbose, max_mb=settings.log_max_mb,
                      backups=settings.log_backups)  # fmt: skip
        return run_queued(out, settings)

    edge.run(body)
