"""Publishing to S3, against moto's real S3 API server on loopback (no AWS, no internet)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto.server")

import boto3  # noqa: E402
import httpx  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

from scribefleet.errors import PublishFailed  # noqa: E402
from scribefleet.options import PublishOptions  # noqa: E402
from scribefleet.pipeline.publish import S3Credentials, publish_outputs, split_s3_url  # noqa: E402

BUCKET = "subtitles"


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on a free loopback port, with IAM checking keys (a real user and its key)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # the next 3 requests go unchecked: make the user, its key and its policy; every later request is checked
    httpx.post(f"{url}/moto-api/reset-auth", content=b"3").raise_for_status()
    iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="boot",
                       aws_secret_access_key="boot")  # fmt: skip
    iam.create_user(UserName="publisher")
    key = iam.create_access_key(UserName="publisher")["AccessKey"]
    iam.put_user_policy(UserName="publisher", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    creds = S3Credentials(key["AccessKeyId"], key["SecretAccessKey"])
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=creds.access_key,
                      aws_secret_access_key=creds.secret_key)  # fmt: skip
    s3.create_bucket(Bucket=BUCKET)
    yield url, creds, s3
    httpx.post(f"{url}/moto-api/reset-auth", content=b"inf")
    server.stop()


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
