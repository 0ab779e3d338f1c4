"""Seed 003's handler: its input JSON in, its output JSON out, one transcription in this process.

The JSON both ways is `jobs.seed003`'s (the controller's `/api/handler/...` routes read and answer
the same): `{"input": {"youtube_url", "request_id", "s3_bucket", ...}}` in,
`{"status": "done", "request_id", "srt_path", "srt_key", "srt_bucket"}` or
`{"status": "error", "request_id", "error": "<CODE>: <message>"}` out.

The job is the same pipeline as every other (fetch -> ... -> publish) with its
checkpoints under `SCRIBEFLEET_STATE_DIR/serverless`, so a request retried
after its worker died resumes. A `Worker` keeps its models loaded between
invocations (a warm RunPod worker pays the model load once), but nothing a
request wrote: once it has ended its folders and local SRT are removed
(serverless/workspace.py; a failed upload keeps its transcript for a retry).
The S3 keys of the input go straight to this job's upload (`S3Credentials`);
they are not stored in the job, not put in the environment and never logged.
"""

from __future__ import annotations

import logging
from typing import Any

from scribefleet.config import Settings
from scribefleet.errors import PublishFailed, ScribefleetError
from scribefleet.jobs.create import work_dir_for
from scribefleet.jobs.redact import redact_paths
from scribefleet.jobs.seed003 import SeedRequest, done_output, error_output, parse_request, request_id_of
from scribefleet.pipeline.job import TranscriptionJob, run_transcription
from scribefleet.pipeline.models import ModelCache, resolve_model
from scribefleet.serverless.workspace import keep_for_retry, remove_request, request_lock

log = logging.getLogger("scribefleet.serverless")


def _device() -> str:
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


class Worker:
    """Runs seed 003 jobs one after another with a warm model cache."""

    def __init__(self, settings: Settings, *, device: str | None = None) -> None:
        self.settings = settings
        self.models = ModelCache(max_models=settings.slot_max_models, cpu_workers=settings.cpu_workers)
        self.device = device or _device()
        self.root = settings.state_dir / "serverless"

    def handle(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One job: `{"input": {...}}` (a RunPod job, which also carries `id`) -> the seed's output JSON."""
        request_id = request_id_of(payload)
        try:
            return self._run(parse_request(payload, self.settings.api_default_model))
        except ScribefleetError as err:
            log.info("request %s failed: %s", request_id or "-", err.code)
            # the caller is not this machine's user: its folders are named by their last component, as the API does
            message = redact_paths(err.message, self.settings, self.settings.state_dir) or err.message
            return error_output(request_id, err.code, message)
        except Exception as err:  # noqa: BLE001 - the contract answers every failure as JSON
            log.exception("request %s failed unexpectedly", request_id or "-")
            return error_output(request_id, "INTERNAL_ERROR", f"{type(err).__name__}; see the worker log")

    def _run(self, req: SeedRequest) -> dict[str, Any]:
        resolved = resolve_model(req.options.model, self.settings)
        work_dir = work_dir_for(self.root, req.url, None, req.options.result_key(resolved.model_id))
        srt = self.root / "out" / req.srt_name
        job = TranscriptionJob(
            url=req.url, work_dir=work_dir, outputs={"srt": srt}, options=req.options, device=self.device,
            max_file_mb=self.settings.max_file_mb, window_s=self.settings.window_s, model_path=resolved.path,
            model_id=resolved.model_id, cpu_threads=self.settings.cpu_threads, publish=req.publish,
        )  # fmt: skip
        log.info("request %s: %s", req.request_id, req.url)
        with request_lock(work_dir):
            try:
                result = run_transcription(job, self.models, lambda stage, fraction, extra: None,
                                           credentials=req.credentials)  # fmt: skip
            except PublishFailed:
                keep_for_retry(work_dir, srt)
                raise
            except Exception:  # an interrupted request (Ctrl-C, SIGTERM) keeps its checkpoints: run again, it resumes
                remove_request(work_dir, srt)
                raise
            remove_request(work_dir, srt)  # the SRT is in S3: nothing of the request stays here
        return done_output(req.request_id, result["published"])
