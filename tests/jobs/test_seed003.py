"""Seed 003's job JSON read into a request (jobs/seed003.py)."""

from __future__ import annotations

import pytest

from scribefleet.errors import UsageError
from scribefleet.jobs.seed003 import parse_request


def test_a_url_scheme_in_capitals_is_a_url() -> None:
    """RFC 3986 schemes have no case: `HTTPS://...` was refused as 'not an http(s) URL'."""
    req = parse_request({"input": {"youtube_url": "HTTPS://media.example/a.wav", "request_id": "r1",
                                   "s3_bucket": "subs"}}, "tiny.en")  # fmt: skip
    assert req.url == "HTTPS://media.example/a.wav"
    with pytest.raises(UsageError):
        parse_request({"input": {"youtube_url": "ftp://media.example/a.wav", "request_id": "r1", "s3_bucket": "subs"}},
                      "tiny.en")  # fmt: skip
