"""Publishing outputs to S3 (and S3-compatible stores): the upload half of the `publish` stage.

After the local atomic write every output is uploaded with boto3 to
`s3://bucket/prefix/<output file name>`. boto3 finds the endpoint, region and
credentials the standard way (AWS_* variables, ~/.aws files, instance roles)
unless the job names them (`PublishOptions.endpoint_url`, `region`; explicit
`S3Credentials`, which the serverless handler takes from its input and which
are never stored or logged).

* Large files go up in parts (boto3's managed transfer, `multipart_threshold_mb`).
* An explicit endpoint means an S3-compatible server: path-style addressing,
  and checksums only where the API requires them (botocore >= 1.36 adds CRC
  checksums to every request by default, which several such servers refuse).
* Idempotent: each object carries the file's sha256 in its metadata; an object
  already there with the same sha256 is not uploaded again, so a resumed job
  does not upload twice what it published before a crash.

Any failure is PUBLISH_FAILED; the local outputs and every checkpoint stay, so
a resume retries only the upload.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from scribefleet.errors import PublishFailed
from scribefleet.options import PublishOptions

log = logging.getLogger("scribefleet.publish")

_MIB = 1024 * 1024
SHA256_KEY = "sha256"  # object metadata (x-amz-meta-sha256)


@dataclass(frozen=True)
class S3Credentials:
    """An access key for one job; repr hides the secret so it cannot reach a log by accident."""

    access_key: str
    secret_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        return "S3Credentials(access_key=***, secret_key=***)"


def split_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/a/b/` -> ("bucket", "a/b/")."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def s3_client(options: PublishOptions, credentials: S3Credentials | None = None):  # noqa: ANN201 - botocore's type
    """A boto3 S3 client for `options` (standard AWS settings for whatever they leave open)."""
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"} if options.endpoint_url else {},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 3, "mode": "standard"},
    )  # fmt: skip
    keys = {}
    if credentials is not None:
        keys = {"aws_access_key_id": credentials.access_key, "aws_secret_access_key": credentials.secret_key,
                "aws_session_token": credentials.session_token}  # fmt: skip
    return boto3.session.Session().client(
        "s3", endpoint_url=options.endpoint_url, region_name=options.region, config=config, **keys
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_MIB):
            digest.update(chunk)
    return digest.hexdigest()


def publish_outputs(outputs: dict[str, Path], options: PublishOptions,
                    credentials: S3Credentials | None = None) -> dict[str, str]:
    """Upload every output under `options.target`; returns {format: s3:// URL}."""
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3_url(options.target)
    transfer = TransferConfig(multipart_threshold=options.multipart_threshold_mb * _MIB,
                              multipart_chunksize=max(5, options.multipart_threshold_mb // 2) * _MIB)  # fmt: skip
    published: dict[str, str] = {}
    try:
        client = s3_client(options, credentials)
        for fmt, path in outputs.items():
            key = prefix + path.name
            digest = _sha256(path)
            if _already_there(client, bucket, key, digest):
                log.debug("s3://%s/%s is up to date", bucket, key)
            else:
                client.upload_file(str(path), bucket, key, Config=transfer,
                                   ExtraArgs={"Metadata": {SHA256_KEY: digest}})  # fmt: skip
                log.info("published %s to s3://%s/%s", path.name, bucket, key)
            published[fmt] = f"s3://{bucket}/{key}"
    except (BotoCoreError, ClientError) as exc:
        raise PublishFailed(
            f"uploading to {options.target} failed: {_reason(exc)}; check the bucket, the endpoint and the "
            "credentials, then run again (only the upload is repeated)", target=options.target,
        ) from exc  # fmt: skip
    except Exception as exc:  # boto3's transfer manager wraps errors in its own (S3UploadFailedError)
        if type(exc).__module__.split(".")[0] not in ("boto3", "botocore", "s3transfer"):
            raise
        raise PublishFailed(f"uploading to {options.target} failed: {_reason(exc)}; check the bucket, the endpoint "
                            "and the credentials, then run again", target=options.target) from exc  # fmt: skip
    return published


def _already_there(client, bucket: str, key: str, digest: str) -> bool:  # noqa: ANN001
    from botocore.exceptions import ClientError

    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return head.get("Metadata", {}).get(SHA256_KEY) == digest


def _reason(exc: Exception) -> str:
    """The error without request details (no signature, no key material)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response["Error"]
        return f"{err.get('Code')}: {err.get('Message') or ''}".strip()
    return str(exc).splitlines()[0][:300]
