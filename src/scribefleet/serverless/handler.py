"""Seed 003's handler: its input JSON in, its output JSON out, one transcription in this process.

Input (unchanged from the seed; `youtube_url` may be any media URL)::

    {"input": {"youtube_url", "request_id", "s3_bucket", "s3_key_prefix", "s3_endpoint_url",
               "aws_access_key", "aws_secret_key"}}

plus optional `model`, `language` and `s3_region`. Output::

    {"status": "done", "request_id", "srt_path": "s3://bucket/prefix/<request_id>.srt", "srt_key", "srt_bucket"}
    {"status": "error", "request_id", "error": "<CODE>: <message>"}

The job is the same pipeline as every other (fetch -> ... -> publish) with its
checkpoints under `SCRIBEFLEET_STATE_DIR/serverless`, so a retried request
resumes and the same media is transcribed once. A `Worker` keeps its models
loaded between invocations (a warm RunPod worker pays the model load once).
The S3 keys of the input go straight to this job's upload (`S3Credentials`);
they are not stored in the job, not put in the environment and never logged.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scribefleet.config import Settings
from scribefleet.errors import ScribefleetError, UsageError
from scribefleet.jobs.create import work_dir_for
from scribefleet.options import PublishOptions, TranscribeOptions
from scribefleet.pipeline.job import TranscriptionJob, run_transcription
from scribefleet.pipeline.models import ModelCache, resolve_model
from scribefleet.pipeline.publish import S3Credentials, split_s3_url

log = logging.getLogger("scribefleet.serverless")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _device() -> str:
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


class Worker:
    """Runs seed 003 jobs one after another with a warm model cache."""

    def __init__(self, settings: Settings, *, device: str | None = None) -> None:
        self.settings = settings
        self.models = ModelCache(max_models=settings.slot_max_models)
        self.device = device or _device()
        self.root = settings.state_dir / "serverless"

    def handle(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One job: `{"input": {...}}` (a RunPod job, which also carries `id`) -> the seed's output JSON."""
        given = payload.get("input") if isinstance(payload, dict) else None
        request_id = str(given.get("request_id") or payload.get("id") or "") if isinstance(given, dict) else ""
        try:
            if not isinstance(given, dict):
                raise UsageError('the job JSON needs an "input" object (seed 003\'s input contract)')
            return self._run(given, request_id)
        except ScribefleetError as err:
            log.info("request %s failed: %s", request_id or "-", err.code)
            return {"status": "error", "request_id": request_id or None, "error": f"{err.code}: {err.message}"}
        except Exception as err:  # noqa: BLE001 - the contract answers every failure as JSON
            log.exception("request %s failed unexpectedly", request_id or "-")
            return {"status": "error", "request_id": request_id or None,
                    "error": f"INTERNAL_ERROR: {type(err).__name__}; see the worker log"}  # fmt: skip

    def _run(self, given: dict[str, Any], request_id: str) -> dict[str, Any]:
        url = given.get("youtube_url") or given.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise UsageError("input.youtube_url must be an http(s) URL of a video or media file")
        if not _REQUEST_ID.match(request_id):
            raise UsageError("input.request_id must be 1-128 letters, digits, '.', '_' or '-' (it names the SRT)")
        bucket = given.get("s3_bucket")
        if not isinstance(bucket, str) or not bucket:
            raise UsageError("input.s3_bucket is required: the SRT is uploaded there")
        prefix = str(given.get("s3_key_prefix") or "")
        try:
            options = TranscribeOptions(model=given.get("model") or self.settings.api_default_model,
                                        language=given.get("language"), formats=("srt",))  # fmt: skip
            publish = PublishOptions(target=f"s3://{bucket}/{prefix.lstrip('/')}",
                                     endpoint_url=given.get("s3_endpoint_url") or None,
                                     region=given.get("s3_region") or None)  # fmt: skip
        except ValidationError as exc:
            raise UsageError("; ".join(str(e["msg"]) for e in exc.errors())) from exc
        credentials = None
        if given.get("aws_access_key") or given.get("aws_secret_key"):
            credentials = S3Credentials(str(given.get("aws_access_key") or ""), str(given.get("aws_secret_key") or ""))
        resolved = resolve_model(options.model, self.settings)
        job = TranscriptionJob(
            url=url, work_dir=work_dir_for(self.root, url, None, options.result_key(resolved.model_id)),
            outputs={"srt": self.root / "out" / f"{request_id}.srt"}, options=options, device=self.device,
            max_file_mb=self.settings.max_file_mb, window_s=self.settings.window_s, model_path=resolved.path,
            model_id=resolved.model_id, cpu_threads=self.settings.cpu_threads, publish=publish,
        )  # fmt: skip
        log.info("request %s: %s", request_id, url)
        result = run_transcription(job, self.models, lambda stage, fraction, extra: None, credentials=credentials)
        srt_path = result["published"]["srt"]
        srt_bucket, srt_key = split_s3_url(srt_path)
        return {"status": "done", "request_id": request_id, "srt_path": srt_path,
                "srt_key": srt_key.rstrip("/"), "srt_bucket": srt_bucket}  # fmt: skip
