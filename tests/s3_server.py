"""moto's real S3 API server on loopback for the publish tests, optionally checking keys like AWS does."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import httpx
from moto.server import ThreadedMotoServer


@dataclass
class S3Server:
    """A running server: its endpoint, a user's keys (when checked) and a client with them."""

    url: str
    access_key: str
    secret_key: str
    client: object


@contextlib.contextmanager
def moto_s3(*buckets: str, check_keys: bool = False) -> Iterator[S3Server]:
    """ThreadedMotoServer on a free port. `check_keys`: IAM on, a user with full rights made, every request
    after that signed with a real key of it (so a wrong key fails as on AWS)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    access, secret = "test", "test"
    try:
        # moto keeps its state per process, shared by every server: start from nothing
        httpx.post(f"{url}/moto-api/reset").raise_for_status()
        if check_keys:
            # the next 3 requests go unchecked: the user, its key and its policy; every later one is checked
            httpx.post(f"{url}/moto-api/reset-auth", content=b"3").raise_for_status()
            iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="boot",
                               aws_secret_access_key="boot")  # fmt: skip
            iam.create_user(UserName="publisher")
            key = iam.create_access_key(UserName="publisher")["AccessKey"]
            iam.put_user_policy(UserName="publisher", PolicyName="all", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
            access, secret = key["AccessKeyId"], key["SecretAccessKey"]
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=access,
                              aws_secret_access_key=secret)  # fmt: skip
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield S3Server(url, access, secret, client)
    finally:
        if check_keys:
            httpx.post(f"{url}/moto-api/reset-auth", content=b"inf")
        server.stop()
