"""Seed 003's job contract, translated once: its input JSON to our job's pieces, a job's end to its output JSON.

Input (unchanged from the seed; `youtube_url` may be any media URL)::

    {"input": {"youtube_url", "request_id", "s3_bucket", "s3_key_prefix", "s3_endpoint_url",
               "aws_access_key", "aws_secret_key"}}

plus optional `model`, `language` and `s3_region`. Output::

    {"status": "done", "request_id", "srt_path": "s3://bucket/prefix/<request_id>.srt", "srt_key", "srt_bucket"}
    {"status": "error", "request_id", "error": "<CODE>: <message>"}

and, for a job still on its way (the controller's status route), `{"status": "starting"|"running",
"request_id"}`. The serverless handler (`scribefleet handle`, the RunPod worker) and the controller's
`/api/handler/...` routes both read requests with `parse_request` and answer with `done_output` /
`error_output`. The input's S3 keys become an `S3Credentials` (whose repr hides them) and nothing else:
they are never part of the options, the publish target or anything logged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from scribefleet.errors import ScribefleetError, UsageError
from scribefleet.options import PublishOptions, TranscribeOptions, http_url_problem, is_http_url
from scribefleet.pipeline.publish import S3Credentials, split_s3_url

_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class SeedRequest:
    """One seed 003 job as our pieces: the media URL, the SRT's name, options, publish target and keys."""

    url: str
    request_id: str
    options: TranscribeOptions
    publish: PublishOptions
    credentials: S3Credentials | None

    @property
    def srt_name(self) -> str:
        """The SRT's file name, which is also its name in the bucket: `<request_id>.srt`."""
        return f"{self.request_id}.srt"


def request_id_of(payload: Any) -> str:
    """The request id a job names (a RunPod job's own `id` when its input has none), for error answers too."""
    given = payload.get("input") if isinstance(payload, dict) else None
    if not isinstance(given, dict):
        return ""
    return str(given.get("request_id") or payload.get("id") or "")


def parse_request(payload: Any, default_model: str) -> SeedRequest:
    """`{"input": {...}}` -> SeedRequest; INVALID_OPTIONS saying what is wrong (never echoing a key)."""
    given = payload.get("input") if isinstance(payload, dict) else None
    if not isinstance(given, dict):
        raise UsageError('the job JSON needs an "input" object (seed 003\'s input contract)')
    request_id = request_id_of(payload)
    url = given.get("youtube_url") or given.get("url")
    if not isinstance(url, str) or not is_http_url(url):
        raise UsageError("input.youtube_url must be an http(s) URL of a video or media file")
    if problem := http_url_problem(url):
        raise UsageError(f"input.youtube_url is not a well-formed URL: {problem}")
    if not _REQUEST_ID.match(request_id):
        raise UsageError("input.request_id must be 1-128 letters, digits, '.', '_' or '-' (it names the SRT)")
    bucket = given.get("s3_bucket")
    if not isinstance(bucket, str) or not bucket:
        raise UsageError("input.s3_bucket is required: the SRT is uploaded there")
    prefix = given.get("s3_key_prefix") or ""
    if not isinstance(prefix, str):
        raise UsageError("input.s3_key_prefix must be a string such as \"transcriptions/\"")
    try:
        options = TranscribeOptions(model=given.get("model") or default_model, language=given.get("language"),
                                    formats=("srt",))  # fmt: skip
        publish = PublishOptions(target=f"s3://{bucket}/{prefix.lstrip('/')}",
                                 endpoint_url=given.get("s3_endpoint_url") or None,
                                 region=given.get("s3_region") or None)  # fmt: skip
    except ValidationError as exc:
        raise UsageError("; ".join(str(e["msg"]) for e in exc.errors())) from exc
    credentials = None
    if given.get("aws_access_key") or given.get("aws_secret_key"):
        credentials = S3Credentials(str(given.get("aws_access_key") or ""), str(given.get("aws_secret_key") or ""))
    return SeedRequest(url, request_id, options, publish, credentials)


def done_output(request_id: str, published: dict[str, str]) -> dict[str, Any]:
    """The seed's answer for a finished job whose SRT was published (`published`: format -> s3:// URL)."""
    srt_path = published["srt"]
    bucket, key = split_s3_url(srt_path)
    return {"status": "done", "request_id": request_id, "srt_path": srt_path, "srt_key": key.rstrip("/"),
            "srt_bucket": bucket}  # fmt: skip


def error_output(request_id: str | None, code: str, message: str) -> dict[str, Any]:
    """The seed's answer for a failed job: our error code starts the message."""
    return {"status": "error", "request_id": request_id or None, "error": f"{code}: {message}"}


def error_of(request_id: str | None, err: ScribefleetError) -> dict[str, Any]:
    return error_output(request_id, err.code, err.message)
