"""Secrets masked in free text, for logs, events and error messages (DESIGN invariant 5).

`redact(text)` masks what looks like a secret and leaves the rest, enough to
tell which command, file or link it was:

* `NAME=value` where NAME holds KEY, TOKEN, SECRET or PASSWORD (a command's
  environment, `--api-key=...`): `AWS_SECRET_ACCESS_KEY=***`;
* the values of a link's query parameters whose names say they sign or
  authorize it: a presigned S3 link (`X-Amz-Signature`, `X-Amz-Credential`,
  `X-Amz-Security-Token`), an Azure SAS (`sig`), a CloudFront or Google signed
  URL (`Signature`, `X-Goog-Signature`), `?token=`, `?api_key=`. Such a link
  is a password for its object until it expires; `?v=` of a video stays;
* a link's password (`https://user:***@host/`).

The logging formatter (logs.IsoFormatter), every ScribefleetError's message and
details, and the store's events pass through it; what people submit (a job's
input, as they gave it) is kept as it is where it is data, not a message.
"""

from __future__ import annotations

import re
from typing import Any

_SECRET_NAME = r"(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD)"
#: NAME=value in commands; not a link's query parameter (the next pattern keeps the rest of the link)
_ASSIGNMENT = re.compile(
    rf"(?<![?&;/])(?<![A-Za-z0-9]-)\b([A-Za-z0-9_]*{_SECRET_NAME}[A-Za-z0-9_]*)=(\"[^\"]*\"|'[^']*'|\S+)", re.I
)
_QUERY = re.compile(
    r"([?&;][^=&#\s\"'<>]*?(?:SIG|SIGNATURE|TOKEN|KEY|CREDENTIAL|SECRET|PASSWORD|PASSWD|AUTH)[^=&#\s\"'<>]*=)"
    r"[^&;#\s\"'<>]+",
    re.I,
)
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@", re.I)
MASK = "***"


def redact(text: str) -> str:
    """`text` with the values of secret-looking assignments, link parameters and link passwords masked."""
    if "=" not in text and "@" not in text:  # most log lines: nothing to look at
        return text
    text = _QUERY.sub(rf"\g<1>{MASK}", text)
    text = _USERINFO.sub(rf"\g<1>{MASK}@", text)
    return _ASSIGNMENT.sub(rf"\g<1>={MASK}", text)


def redact_value(value: Any) -> Any:
    """`value` (text, or lists and mappings of it, as JSON holds) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value
