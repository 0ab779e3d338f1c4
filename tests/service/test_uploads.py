"""Uploads: streamed to disk under the limit, never held whole in memory, names that stay in their folder."""

from __future__ import annotations

import hashlib
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scribefleet.service.uploads import form_filename, safe_filename
from service.harness import AUTH, DATA, Service

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024
BOUNDARY = "sfboundary0123456789"


def test_safe_filename() -> None:
    cases = {
        "../../etc/passwd": "passwd",
        "..\\..\\windows\\system.ini": "system.ini",
        "a\x00b.wav": "ab.wav",
        "tab\tand\nnewline\r.mp3": "tabandnewline.mp3",
        "..": "upload",
        "": "upload",
        "/": "upload",
        ".hidden.wav": "hidden.wav",
        "Grüße – 会議 2024.m4a": "Grüße – 会議 2024.m4a",
        "x" * 300 + ".flac": "x" * 195 + ".flac",
        "ü" * 150 + ".wav": "ü" * 98 + ".wav",
        "archive.tar.gz": "archive.tar.gz",
        "noext": "noext",
        # a right-to-left override shows "invoice_\u202Evaw.exe" as "invoice_exe.wav": every format character goes
        "invoice_\u202evaw.exe": "invoice_vaw.exe",
        "a\u2066b\u2069\u200bc\u200f\u061c\ufeffd\u2028e.wav": "abcde.wav",
        "\u202e.wav": "wav",
    }
    for given, wanted in cases.items():
        assert safe_filename(given) == wanted, given
        assert len(safe_filename(given).encode()) <= 200


def test_a_browsers_form_escapes_are_undone() -> None:
    # the HTML standard's multipart encoding (Chromium, Firefox, curl): only ", CR and LF are escaped
    assert form_filename(b'say %22hi%22.wav') == 'say "hi".wav'
    assert safe_filename(form_filename(b"a%0Ab%0dc.wav")) == "abc.wav"
    assert form_filename("100% sure %41 %2F.wav".encode()) == "100% sure %41 %2F.wav"  # any other % stays
    assert form_filename("café.wav".encode()) == "café.wav"


async def test_upload_is_stored_whole_under_a_safe_name(idle: Service) -> None:
    data = (DATA / "en01.wav").read_bytes()
    root = idle.controller.uploads.root
    # httpx, like browsers, writes control characters in a file name as %XX: they arrive as text
    names = {"../../etc/passwd.wav": "passwd.wav", "a\x00b.wav": "a%00b.wav", "日本語の録音.wav": "日本語の録音.wav",
             "..": "upload", "/abs/olute/x.wav": "x.wav", "..\\..\\boot.ini": "boot.ini"}  # fmt: skip
    raw = {"a\x00b\x01.wav": "ab.wav", "../\x7f../x.wav": "x.wav", "..\x00/..": "upload"}  # sent as raw bytes
    async with idle.client() as client:
        for given, wanted in [*names.items(), *raw.items()]:
            if given in raw:
                head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{given}"\r\n\r\n').encode()
                resp = await client.post(
                    "/api/uploads", headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                    content=head + data + f"\r\n--{BOUNDARY}--\r\n".encode(),
                )  # fmt: skip
            else:
                resp = await client.post("/api/uploads", headers=AUTH, files={"file": (given, data, "audio/wav")})
            assert resp.status_code == 201, resp.text
            body = resp.json()
            assert body["filename"] == wanted and body["sizeBytes"] == len(data)
            stored = idle.controller.uploads.get(body["uploadId"])
            assert stored.path.resolve().is_relative_to(root.resolve())
            assert stored.path.parent == root / body["uploadId"] and stored.path.name == wanted
            assert stored.path.read_bytes() == data and stored.sha256 == hashlib.sha256(data).hexdigest()
    assert not list(Path("/etc").glob("passwd.wav"))
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(
        p.stem for p in root.glob("*.json")
    ), "one folder and one record per upload, nothing else"


async def _multipart(size_bytes: int, chunk_bytes: int, pulled: list[int]) -> AsyncIterator[bytes]:
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    chunk = b"\x01" * chunk_bytes
    for _ in range(size_bytes // chunk_bytes):
        pulled.append(chunk_bytes)
        yield chunk
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


async def test_an_upload_over_the_limit_is_refused_while_streaming(idle: Service) -> None:
    assert idle.settings.max_file_mb == 10
    pulled: list[int] = []
    root = idle.controller.uploads.root
    tracemalloc.start()
    try:
        async with idle.client() as client:
            resp = await client.post(
                "/api/uploads", headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                content=_multipart(50 * MIB, MIB, pulled),
            )  # fmt: skip
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "FILE_TOO_LARGE" and resp.json()["error"]["details"]["limit_mb"] == 10
    # the handler stopped reading just past the limit: it never took the other ~39 MB
    assert 10 * MIB <= sum(pulled) <= 12 * MIB
    # and nothing near the upload's size was ever held in memory (client and server together)
    assert peak_bytes < 8 * MIB, f"peak {peak_bytes / MIB:.1f} MiB"
    assert not [p for p in root.rglob("*") if p.is_file()], "the partial file must be gone"
    assert not [p for p in root.iterdir()], "and its folder too"


async def test_an_upload_just_under_the_limit_is_kept(idle: Service) -> None:
    pulled: list[int] = []
    async with idle.client() as client:
        resp = await client.post(
            "/api/uploads", headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            content=_multipart(10 * MIB, MIB, pulled),
        )  # fmt: skip
    assert resp.status_code == 201, resp.text
    assert resp.json()["sizeBytes"] == 10 * MIB
    assert idle.controller.uploads.get(resp.json()["uploadId"]).path.stat().st_size == 10 * MIB


async def test_broken_and_wrong_bodies(idle: Service) -> None:
    root = idle.controller.uploads.root
    async with idle.client() as client:
        as_json = await client.post("/api/uploads", headers=AUTH, json={"file": "x"})
        no_file = await client.post("/api/uploads", headers=AUTH, files={"other": ("a.wav", b"123")})
        field_only = await client.post("/api/uploads", headers=AUTH, data={"file": "not a file"})
        truncated = await client.post(
            "/api/uploads", headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            content=(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="cut.wav"\r\n\r\n'
                     + "x" * 100_000).encode(),
        )  # fmt: skip
        two = await client.post(
            "/api/uploads", headers=AUTH, files=[("file", ("a.wav", b"1")), ("file", ("b.wav", b"2"))]
        )
    for resp in (as_json, no_file, field_only, truncated, two):
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["code"] == "INVALID_REQUEST"
    # the double upload's first file arrived whole, but the request was refused: no id reached the client, so
    # nobody could ever use or delete it, and nothing stays
    assert list(root.iterdir()) == []


async def test_upload_metrics(idle: Service) -> None:
    async with idle.client() as client:
        await client.post("/api/uploads", headers=AUTH, files={"file": ("a.wav", b"x" * 1000)})
        await client.post("/api/uploads", headers=AUTH, json={})
        text = (await client.get("/metrics", headers=AUTH)).text
    assert "scribefleet_upload_bytes_total 1000.0" in text
    assert 'scribefleet_uploads_total{result="stored"} 1.0' in text
    assert 'scribefleet_uploads_total{result="invalid"} 1.0' in text


def test_a_body_cut_off_is_refused_as_such_and_keeps_nothing(live: str, running: Service) -> None:
    """Real sockets: a client that stops after the file part, and one that goes away mid-file."""
    root = running.controller.uploads.root
    before = set(root.glob("*"))
    host, port = live.removeprefix("http://").split(":")
    audio = (DATA / "en01.wav").read_bytes()
    part = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="cut.wav"\r\n\r\n').encode() + audio
    head = (f"POST {{}} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['Authorization']}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {{}}\r\n\r\n")  # fmt: skip
    for path in ("/api/uploads", "/v1/audio/transcriptions"):
        cut = part + f"\r\n--{BOUNDARY}".encode()  # the file part ended, the closing "--" never came
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(head.format(path, len(cut)).encode() + cut)
            answer = _http_answer(sock)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b"INVALID_REQUEST" in answer and b"cut off" in answer, answer[-300:]
        with socket.create_connection((host, int(port)), timeout=30) as sock:  # gone mid-file
            sock.sendall(head.format(path, len(part) + 10_000).encode() + part[: len(part) // 2])
    deadline = time.monotonic() + 30
    while set(root.glob("*")) != before:  # the server notices the closed socket on its own time
        assert time.monotonic() < deadline, sorted(set(root.glob("*")) - before)
        time.sleep(0.1)


def _http_answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0
