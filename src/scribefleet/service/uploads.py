"""Uploads: multipart bodies streamed to disk under a size limit, under names no client can aim.

`receive_multipart` feeds the request body, chunk by chunk as it arrives, to
python-multipart's streaming parser. The `file` part goes straight into a
hidden partial file in `STATE/uploads/<uploadId>/` while its sha256 is
computed; the moment it passes the limit the partial file is deleted and
FILE_TOO_LARGE (413) is raised, without reading the rest. Nothing holds more
than one chunk of the file in memory. Only when the part is complete is the
file renamed to its final name and its record `STATE/uploads/<uploadId>.json`
written, so an upload either exists whole or not at all. A request refused
after its file arrived (the rest of the body broken, a second file; for the
routes that make a job at once, a bad option or model) deletes the upload
with `UploadStore.discard`: no job will ever read it, and nobody knows its id.
The upload an OpenAI route made for its job is that job's alone, and the
controller removes it once the job has ended (service/controller.py).

The stored name comes from `safe_filename` (after `form_filename` undid the
`%22` a browser sends for a double quote): the client's last path component
only, without NUL, control characters, format characters (the bidirectional
overrides and isolates such as U+202E, zero-width characters, BOM: they make a
name look like another), line separators or leading dots, at most 200 bytes,
extension kept. The folder is named by the server's own random id, so no part
of the client's name can reach outside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from scribefleet.errors import FileTooLarge, InvalidRequest, NotFound, OutputWriteFailed

MAX_NAME_BYTES = 200
MAX_FIELD_BYTES = 64 * 1024  # a form field that is not the file (model, language, prompt...)
MAX_FIELDS = 64
_UPLOAD_ID = re.compile(r"[0-9a-f]{16}")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f/\\]")
#: Unicode categories a stored name loses: controls, format characters (bidi controls, zero-width), separators
_FORM_ESCAPE = re.compile(r"%(22|0[AaDd])")
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def safe_filename(name: str | None) -> str:
    """A file name that is only a name: last path component, no controls/NUL/leading dots, extension kept."""
    name = unicodedata.normalize("NFC", name or "")
    name = re.split(r"[/\\]", name)[-1]  # the client's folders never count
    name = "".join(c for c in name if unicodedata.category(c) not in _INVISIBLE)
    name = _UNSAFE.sub("", name).strip().lstrip(".").strip()
    if name in ("", ".", ".."):
        name = "upload"
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext.encode()) > 16:
        stem, ext = name, ""
    budget = MAX_NAME_BYTES - len(ext.encode()) - (1 if ext else 0)
    stem = stem.encode()[:budget].decode(errors="ignore").rstrip(". ") or "upload"
    return f"{stem}.{ext}" if ext else stem


def form_filename(raw: bytes) -> str:
    """A multipart part's `filename` as the client meant it. Browsers (the HTML standard's form encoding) and
    curl escape a double quote as `%22` and CR/LF as `%0D`/`%0A` there, and leave every other `%` alone:
    `say "hi".wav` arrives as `say %22hi%22.wav`."""
    return _FORM_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), raw.decode("utf-8", errors="replace"))


@dataclass(frozen=True)
class Upload:
    """A stored upload."""

    upload_id: str
    filename: str
    size_bytes: int
    sha256: str
    created_at: float
    path: Path

    def to_json(self) -> dict[str, Any]:
        return {"uploadId": self.upload_id, "filename": self.filename, "sizeBytes": self.size_bytes}


class UploadStore:
    """The uploads folder of a controller: `<root>/<uploadId>/<name>` plus `<root>/<uploadId>.json`."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    def _record(self, upload_id: str) -> Path:
        return self.root / f"{upload_id}.json"

    def get(self, upload_id: str) -> Upload:
        """The upload with this id, or NotFound."""
        record = self._record(upload_id) if _UPLOAD_ID.fullmatch(upload_id or "") else None
        try:
            data = json.loads(record.read_text(encoding="utf-8")) if record else None
        except (OSError, ValueError):
            data = None
        if not data or not (self.root / upload_id / data["filename"]).is_file():
            raise NotFound(f"no upload has the id {upload_id!r}; upload the file with POST /api/uploads", uploadId=upload_id)
        data["path"] = self.root / upload_id / data["filename"]
        return Upload(**data)

    def new_writer(self, filename: str | None) -> UploadWriter:
        return UploadWriter(self, secrets.token_hex(8), safe_filename(filename))

    def discard(self, upload: Upload) -> None:
        """Delete an upload no job will use (its request was refused after the file arrived)."""
        self.remove(upload.upload_id)

    def remove(self, upload_id: str) -> bool:
        """Delete the upload with this id (a server id, never a path); whether there was one."""
        if not _UPLOAD_ID.fullmatch(upload_id or ""):
            return False
        record = self._record(upload_id)
        existed = record.exists() or (self.root / upload_id).exists()
        record.unlink(missing_ok=True)  # first: from here on the upload does not exist for `get`
        shutil.rmtree(self.root / upload_id, ignore_errors=True)
        return existed

    def ids(self) -> list[str]:
        """The ids of the stored uploads (their records)."""
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.json") if _UPLOAD_ID.fullmatch(p.stem))


class UploadWriter:
    """One file part being written: partial file, running size and hash, limit enforced per chunk."""

    def __init__(self, store: UploadStore, upload_id: str, filename: str) -> None:
        self.store, self.upload_id, self.filename = store, upload_id, filename
        self.folder = store.root / upload_id
        self.folder.mkdir(parents=True, exist_ok=False)
        self.partial = self.folder / f".partial-{secrets.token_hex(4)}"
        self._fh: IO[bytes] | None = open(self.partial, "xb")  # noqa: SIM115 - closed in finish/abort
        self._hash = hashlib.sha256()
        self.size_bytes = 0

    def write(self, chunk: bytes) -> None:
        self.size_bytes += len(chunk)
        if self.size_bytes > self.store.max_bytes:
            self.abort()
            limit_mb = self.store.max_bytes // (1024 * 1024)
            raise FileTooLarge(
                f"the upload is larger than the {limit_mb} MB limit (SCRIBEFLEET_MAX_FILE_MB); "
                "split the file or raise the limit",
                limit_mb=limit_mb,
            )
        assert self._fh is not None
        self._fh.write(chunk)
        self._hash.update(chunk)

    def finish(self) -> Upload:
        """Move the complete file to its name and write its record; the upload exists from here on."""
        assert self._fh is not None
        self._fh.close()
        self._fh = None
        final = self.folder / self.filename
        os.replace(self.partial, final)
        upload = Upload(self.upload_id, self.filename, self.size_bytes, self._hash.hexdigest(), time.time(), final)
        record = {k: v for k, v in asdict(upload).items() if k != "path"}
        tmp = self.store.root / f".{self.upload_id}.json.tmp"
        tmp.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.store._record(self.upload_id))
        return upload

    def abort(self) -> None:
        """Delete whatever was written (the partial file and the upload's folder)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        shutil.rmtree(self.folder, ignore_errors=True)


class _Form:
    """Callbacks of the streaming multipart parser: fields in memory (small), the file to an UploadWriter."""

    def __init__(self, uploads: UploadStore, file_field: str) -> None:
        self.uploads, self.file_field = uploads, file_field
        self.fields: dict[str, list[str]] = {}
        self.upload: Upload | None = None
        self.writer: UploadWriter | None = None
        self._headers: dict[bytes, bytes] = {}
        self._header_field = b""
        self._header_value = b""
        self._name = ""
        self._value = bytearray()
        self._count = 0

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._add("_header_field", d[s:e]),
            "on_header_value": lambda d, s, e: self._add("_header_value", d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _add(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)

    def _part_begin(self) -> None:
        self._headers, self._name, self._value = {}, "", bytearray()
        self._count += 1
        if self._count > MAX_FIELDS:
            raise InvalidRequest(f"the form has more than {MAX_FIELDS} parts")

    def _header_end(self) -> None:
        self._headers[self._header_field.strip().lower()] = self._header_value.strip()
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", errors="replace")
        filename = params.get(b"filename")
        if self._name == self.file_field and filename is not None:
            if self.writer is not None or self.upload is not None:
                raise InvalidRequest(f"the form has more than one {self.file_field!r} file; send one per request")
            self.writer = self.uploads.new_writer(form_filename(filename))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.writer is not None:
            self.writer.write(data[start:end])
            return
        self._value += data[start:end]
        if len(self._value) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        if self.writer is not None:
            self.upload, self.writer = self.writer.finish(), None
        elif self._name:
            self.fields.setdefault(self._name, []).append(self._value.decode("utf-8", errors="replace"))


async def receive_multipart(
    content_type: str | None, body: AsyncIterator[bytes], uploads: UploadStore, *, file_field: str = "file"
) -> tuple[dict[str, list[str]], Upload]:
    """Stream a multipart/form-data body: its small fields, and its one file stored as an Upload."""
    kind, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidRequest(
            f"send the file as multipart/form-data with a {file_field!r} field, not {content_type or 'no content type'}"
        )
    form = _Form(uploads, file_field)
    try:
        parser = MultipartParser(boundary, form.callbacks())  # type: ignore[arg-type]
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
        if parser.state != MultipartState.END:  # the body stopped before its closing boundary: cut off
            raise InvalidRequest(
                "the multipart body ended before its closing boundary: the upload was cut off; send it again"
            )
    except BaseException as exc:
        if form.upload is not None:  # the file arrived whole, but the rest of the body is refused: nothing stays
            uploads.discard(form.upload)
        if isinstance(exc, (FileTooLarge, InvalidRequest)) or not isinstance(exc, Exception):
            raise
        if isinstance(exc, OSError) and exc.errno is not None:  # the controller's disk, not the client's body
            raise OutputWriteFailed(
                f"the server could not store the upload ({exc.strerror or exc}): free space in its state folder "
                "or fix its permissions, then send the file again", reason=exc.strerror or type(exc).__name__,
            ) from exc  # fmt: skip
        raise InvalidRequest(f"the multipart body is broken or incomplete ({exc})") from exc
    finally:
        if form.writer is not None:  # stopped mid-file (limit, broken body, client gone): nothing stays
            form.writer.abort()
    if form.upload is None:
        raise InvalidRequest(f"the form has no file field {file_field!r}")
    return form.fields, form.upload
