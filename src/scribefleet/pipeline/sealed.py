"""S3 keys of one queued job, kept sealed on disk until its slot publishes (the controller's seed 003 jobs).

A job that the controller queues runs later, in a slot process, perhaps after
a restart of the controller: the keys a request carried must outlive the
request, but must not sit in the store, the task spec, the job JSON, events or
logs. `seal` writes them to `<folder>/<random>.sealed` encrypted with Fernet
(AES-128-CBC + HMAC-SHA256, from `cryptography`) under a key in
`<folder>/.key`; both files are 0600 and the folder 0700. The spec carries
only the sealed file's path. `unseal` reads them back in the slot; the slot
deletes the sealed file once the job's outputs are published (`forget`), and
the controller deletes it when the job ends otherwise.

This keeps the keys out of everything that is shown, copied or backed up
with the store; someone who can read the state folder as its owner can still
unseal them while the job is unfinished, which is the same trust as the
controller's own AWS settings.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from scribefleet.errors import PublishFailed
from scribefleet.pipeline.publish import S3Credentials

SUFFIX = ".sealed"


def _fernet(folder: Path):  # noqa: ANN202 - cryptography's type, imported lazily
    from cryptography.fernet import Fernet

    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    key_file = folder / ".key"
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Fernet(key_file.read_bytes())
    with os.fdopen(fd, "wb") as fh:
        fh.write(Fernet.generate_key())
    return Fernet(key_file.read_bytes())


def seal(folder: Path, credentials: S3Credentials) -> Path:
    """Write `credentials` encrypted to a new file in `folder`; its path (no secret in it) goes in the spec."""
    token = _fernet(folder).encrypt(json.dumps(
        {"access_key": credentials.access_key, "secret_key": credentials.secret_key,
         "session_token": credentials.session_token}).encode())  # fmt: skip
    path = folder / f"{secrets.token_hex(12)}{SUFFIX}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(token)
    return path


def unseal(path: Path) -> S3Credentials:
    """The credentials of a sealed file; PUBLISH_FAILED when they are gone or unreadable."""
    from cryptography.fernet import InvalidToken

    try:
        data = json.loads(_fernet(path.parent).decrypt(path.read_bytes()))
    except FileNotFoundError as exc:
        raise PublishFailed("this job's S3 keys are gone (the job ended before, or its state folder was cleaned); "
                            "submit the request again") from exc  # fmt: skip
    except (InvalidToken, ValueError, OSError) as exc:
        raise PublishFailed(f"this job's S3 keys cannot be read ({type(exc).__name__}); submit the request again") from exc
    return S3Credentials(data["access_key"], data["secret_key"], data.get("session_token"))


def forget(path: Path | str | None) -> None:
    """Delete a sealed file (the job no longer needs its keys)."""
    if path and str(path).endswith(SUFFIX):
        Path(path).unlink(missing_ok=True)
