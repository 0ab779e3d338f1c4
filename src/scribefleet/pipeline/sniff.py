"""What a file that FFmpeg could not read looks like, from its first bytes: words for a person, not errno text.

`looks_like(path)` says what a MEDIA_UNREADABLE file appears to be: the start
of a media container whose header is damaged or cut off (`a WAV file`), a
kind of file that is not media at all (`a PDF document`, `an HTML page`,
`text`), or nothing known. FFmpeg's own answer ("[Errno 1094995529] Invalid
data found when processing input") says none of that; it stays in the error's
details for whoever debugs.
"""

from __future__ import annotations

from pathlib import Path

_HEAD_BYTES = 4096

#: (offset, magic bytes, what it is, whether it is an audio/video container)
_MAGIC: tuple[tuple[int, bytes, str, bool], ...] = (
    (8, b"WAVE", "a WAV file", True),
    (0, b"ID3", "an MP3 file", True),
    (0, b"fLaC", "a FLAC file", True),
    (0, b"OggS", "an Ogg file", True),
    (4, b"ftyp", "an MP4/M4A file", True),
    (0, b"\x1a\x45\xdf\xa3", "a Matroska/WebM file", True),
    (0, b"FORM", "an AIFF file", True),
    (0, b"#!AMR", "an AMR file", True),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "a WMA/WMV file", True),
    (0, b"FLV", "an FLV file", True),
    (0, b"caff", "a CAF file", True),
    (0, b"%PDF", "a PDF document", False),
    (0, b"PK\x03\x04", "a ZIP archive (or an Office document)", False),
    (0, b"\x89PNG", "a PNG image", False),
    (0, b"\xff\xd8\xff", "a JPEG image", False),
    (0, b"GIF8", "a GIF image", False),
    (0, b"\x1f\x8b", "gzip-compressed data", False),
    (0, b"7z\xbc\xaf", "a 7-Zip archive", False),
    (0, b"Rar!", "a RAR archive", False),
    (0, b"\x7fELF", "a program (ELF executable)", False),
    (0, b"SQLite format 3", "an SQLite database", False),
)


def looks_like(path: Path) -> str:
    """What `path` seems to be, as the end of a sentence ('it starts like a WAV file, but ...'). Never raises."""
    try:
        with path.open("rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError as exc:
        return f"it could not be read ({exc.strerror or exc})"
    for offset, magic, what, is_media in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            if is_media:
                return f"it starts like {what}, but its header is damaged or cut off"
            return f"it is {what}"
    text = _text_kind(head)
    if text:
        return f"it is {text}"
    return "its content matches no audio or video format"


def _text_kind(head: bytes) -> str | None:
    """'an HTML page', 'JSON', 'text' for a head of printable UTF-8 text; None for binary data."""
    if not head or b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not merely a character cut at the end of the head
            return None
        text = head[: exc.start].decode("utf-8")
    if sum(not (ch.isprintable() or ch.isspace()) for ch in text) > len(text) // 100:
        return None
    start = text.lstrip().lower()
    if start.startswith(("<!doctype html", "<html")):
        return "an HTML page (a download that got an error page?)"
    if start.startswith(("{", "[")):
        return "JSON"
    if start.startswith("<?xml"):
        return "XML"
    return "text"
