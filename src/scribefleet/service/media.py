"""The media a job was made from, played by the web UI's job page: the job's own upload, never another path.

`GET /api/jobs/{id}/media` (service/api.py) answers the uploaded file with
HTTP Range support (Starlette's FileResponse: `206 Partial Content`,
`Accept-Ranges: bytes`), under the same credentials as every `/api` route
(service/auth.py checks them before any route runs).

Which file: the one of the job's `upload_id`, looked up in the controller's
upload folder by `UploadStore.get` (which takes only the server's own random
ids), and its real path (symlinks resolved) must still lie inside that
folder. A path in the job's spec, a renamed or linked file cannot make the
route serve anything else.

What is not kept is not played: a URL job's download is deleted once it is
transcribed, and so is the decoded audio (pipeline/job.py), so its media
answers `404 NOT_FOUND` saying so (the page shows the message and a link to
the URL itself). An upload deleted from the folder answers the same way.

A `Range` header that is not a byte range this server can read (another
unit, `bytes=abc`, `bytes=5-2`) is ignored and the whole file answered with
200, as RFC 9110 (14.2) allows, instead of Starlette's plain-text 400 that no
client of this API could parse (`RangeFileResponse`, also for outputs); a
range past the end is `416` with `Content-Range: bytes */SIZE`.

The answer is typed audio/* or video/* by the file's extension, else
`application/octet-stream`, with `X-Content-Type-Options: nosniff` and a
sandboxing Content-Security-Policy, so an uploaded HTML or SVG file is never
run as a page of the controller's origin.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi.responses import FileResponse
from starlette.responses import MalformedRangeHeader

from scribefleet.errors import NotFound
from scribefleet.service.uploads import UploadStore
from scribefleet.store.models import Task

#: types mimetypes does not know (or knows differently) on every system
_MEDIA_TYPES = {
    ".flac": "audio/flac", ".m4a": "audio/mp4", ".mka": "audio/x-matroska", ".mkv": "video/x-matroska",
    ".oga": "audio/ogg", ".ogg": "audio/ogg", ".opus": "audio/ogg", ".wav": "audio/wav", ".weba": "audio/webm",
    ".webm": "video/webm", ".mp3": "audio/mpeg", ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime",
}  # fmt: skip
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "private, max-age=3600",
}


class RangeFileResponse(FileResponse):
    """A FileResponse that ignores a malformed Range header (the whole file, 200) instead of a plain-text 400."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []  # Starlette answers no ranges with the whole file


def media_type(name: str) -> str:
    """The type the media is served as: audio/* or video/*, else a download that nothing runs."""
    ext = Path(name).suffix.lower()
    guessed = _MEDIA_TYPES.get(ext) or mimetypes.guess_type(name)[0] or ""
    return guessed if guessed.startswith(("audio/", "video/")) else "application/octet-stream"


def media_file(task: Task, uploads: UploadStore) -> Path:
    """The job's uploaded input, inside the upload folder; NotFound when it is not kept (URL jobs) or gone."""
    if task.spec.get("url"):
        raise NotFound(
            f"job {task.id} was made from a URL, whose download is deleted once it is transcribed: "
            "play the media at its URL",
            jobId=task.id, reason="url_job",
        )  # fmt: skip
    upload_id = task.spec.get("upload_id")
    if not isinstance(upload_id, str):
        raise NotFound(f"job {task.id} was not made from an upload, so the controller keeps no media of it",
                       jobId=task.id, reason="no_upload")
    try:
        path = uploads.get(upload_id).path
    except NotFound:
        if not task.is_terminal:
            raise
        raise NotFound(
            f"the uploaded media of job {task.id} has been deleted: the controller keeps an upload for "
            "SCRIBEFLEET_UPLOAD_RETENTION_HOURS after its jobs end (one sent to the OpenAI routes not at all); "
            "the transcript and outputs stay",
            jobId=task.id, reason="deleted",
        ) from None
    root = uploads.root.resolve()
    real = path.resolve()
    if not real.is_relative_to(root) or not real.is_file():
        raise NotFound(f"the media of job {task.id} is not in the upload folder", jobId=task.id, reason="outside")
    return real


def media_response(task: Task, uploads: UploadStore) -> FileResponse:
    """The job's media, Range requests answered with 206."""
    path = media_file(task, uploads)
    return RangeFileResponse(path, media_type=media_type(task.spec.get("display") or path.name), headers=HEADERS)
