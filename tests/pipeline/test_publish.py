"""Publishing to S3, against moto's real S3 API server on loopback (no AWS, no internet)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto.server")

from s3_server import moto_s3  # noqa: E402
from scribefleet.errors import PublishFailed  # noqa: E402
from scribefleet.options import PublishOptions  # noqa: E402
from scribefleet.pipeline.publish import S3Credentials, publish_outputs, split_s3_url  # noqa: E402

BUCKET = "subtitles"


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on loopback, checking keys: (endpoint, the keys of a real user, a client with them)."""
    with moto_s3(BUCKET, check_keys=True) as server:
        yield server.url, S3Credentials(server.access_key, server.secret_key), server.client


def test_split_s3_url() -> None:
    assert split_s3_url("s3://b/a/b") == ("b", "a/b/")
    assert split_s3_url("s3://b") == ("b", "")


def test_publish_uploads_skips_identical_and_uses_multipart(s3_server, tmp_path: Path) -> None:
    url, creds, s3 = s3_server
    small = tmp_path / "talk.srt"
    small.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    big = tmp_path / "talk.json"
    big.write_bytes(os.urandom(6 * 1024 * 1024))  # over the 5 MB multipart threshold below
    options = PublishOptions(target=f"s3://{BUCKET}/run1/", endpoint_url=url, region="us-east-1",
                             multipart_threshold_mb=5)  # fmt: skip
    got = publish_outputs({"srt": small, "json": big}, options, creds)
    assert got == {"srt": f"s3://{BUCKET}/run1/talk.srt", "json": f"s3://{BUCKET}/run1/talk.json"}
    assert s3.get_object(Bucket=BUCKET, Key="run1/talk.srt")["Body"].read() == small.read_bytes()
    head = s3.head_object(Bucket=BUCKET, Key="run1/talk.json")
    assert head["ContentLength"] == big.stat().st_size
    assert head["ETag"].strip('"').endswith("-2")  # two parts: it went up as a multipart upload
    assert s3.get_object(Bucket=BUCKET, Key="run1/talk.json")["Body"].read() == big.read_bytes()

    # a resumed job publishes again: identical objects are left alone, a changed one is replaced
    before = s3.head_object(Bucket=BUCKET, Key="run1/talk.srt")["LastModified"]
    small_etag = s3.head_object(Bucket=BUCKET, Key="run1/talk.srt")["ETag"]
    big.write_bytes(b"changed")
    publish_outputs({"srt": small, "json": big}, options, creds)
    assert s3.head_object(Bucket=BUCKET, Key="run1/talk.srt")["LastModified"] == before
    assert s3.head_object(Bucket=BUCKET, Key="run1/talk.srt")["ETag"] == small_etag
    assert s3.get_object(Bucket=BUCKET, Key="run1/talk.json")["Body"].read() == b"changed"


def test_wrong_credentials_fail_with_publish_failed_and_no_secret(s3_server, tmp_path: Path) -> None:
    url, creds, _ = s3_server
    out = tmp_path / "a.srt"
    out.write_text("x")
    options = PublishOptions(target=f"s3://{BUCKET}/p/", endpoint_url=url, region="us-east-1")
    with pytest.raises(PublishFailed) as info:
        publish_outputs({"srt": out}, options, S3Credentials(creds.access_key, "wrong-secret-123"))
    assert info.value.code == "PUBLISH_FAILED"
    assert "wrong-secret-123" not in str(info.value) and "wrong-secret-123" not in repr(info.value.details)
    with pytest.raises(PublishFailed):
        publish_outputs({"srt": out}, options, S3Credentials("AKIANOSUCHKEY", "nope"))
    assert "sekrit" not in repr(S3Credentials("a", "sekrit"))


def test_missing_bucket_fails_with_publish_failed(s3_server, tmp_path: Path) -> None:
    url, creds, _ = s3_server
    out = tmp_path / "a.srt"
    out.write_text("x")
    options = PublishOptions(target="s3://no-such-bucket/p/", endpoint_url=url, region="us-east-1")
    with pytest.raises(PublishFailed, match="NoSuchBucket"):
        publish_outputs({"srt": out}, options, creds)


def test_publish_target_must_be_s3() -> None:
    with pytest.raises(ValueError):
        PublishOptions(target="https://example.org/x")


@pytest.mark.parametrize("endpoint", ["minio:9000", "notaurl", "http://", "ftp://minio:9000"])
def test_an_endpoint_that_is_no_http_url_is_refused_before_anything_runs(endpoint: str, tmp_path: Path,
                                                                         speech: dict[str, Path]) -> None:
    # '--s3-endpoint-url minio:9000' transcribed the file, then failed it with INTERNAL_ERROR "ValueError: Invalid
    # endpoint" (botocore's bare ValueError) when the upload started
    with pytest.raises(ValueError, match="is not an http"):
        PublishOptions(target="s3://b/p/", endpoint_url=endpoint)
    import subprocess
    import sys

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "scribefleet", "transcribe", str(speech["en01.wav"]), "--out", str(out),
                           "--publish", "s3://b/p/", "--s3-endpoint-url", endpoint], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "[INVALID_OPTIONS]" in proc.stderr and "is not an http(s):// URL" in proc.stderr
    assert not out.exists(), "something ran"
