"""pipeline/sealed.py: a queued job's S3 keys on disk, encrypted, owner-only, and gone once forgotten."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

pytest.importorskip("cryptography")

from scribefleet.errors import PublishFailed  # noqa: E402
from scribefleet.pipeline.publish import S3Credentials  # noqa: E402
from scribefleet.pipeline.sealed import forget, seal, unseal  # noqa: E402


def test_keys_are_sealed_owner_only_read_back_and_forgotten(tmp_path: Path) -> None:
    folder = tmp_path / "sealed"
    keys = S3Credentials("AKIA-sealed-test", "secret-sealed-test-value")
    path = seal(folder, keys)
    assert b"secret-sealed-test-value" not in path.read_bytes() and b"AKIA-sealed-test" not in path.read_bytes()
    for p in (path, folder / ".key"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert unseal(path) == keys and "secret-sealed-test-value" not in repr(unseal(path))
    second = seal(folder, S3Credentials("a", "b"))  # one key for the folder, a file per job
    assert second != path and unseal(second).secret_key == "b"
    forget(path)
    assert not path.exists()
    with pytest.raises(PublishFailed, match="gone"):
        unseal(path)
    second.write_bytes(b"not a token")
    with pytest.raises(PublishFailed, match="cannot be read"):
        unseal(second)
    forget(folder / ".key")  # only sealed files are ever deleted by forget
    assert (folder / ".key").exists()
