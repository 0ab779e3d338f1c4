"""How long a media file says it is, from a header that states it: to tell a cut-off file from a short one.

FFmpeg decodes an MP3 or a WAV that was cut off after its header (an
interrupted copy or download) to where the bytes end, with no error: a
two-hour recording cut at 40 minutes gave a transcript of 40 minutes and no
word of the rest. Their headers say how long they are, so the decoder can
compare (`pipeline/media.py` warns when the audio ends well before):

- WAV: the `data` chunk's size over the `fmt ` chunk's byte rate, read here
  (FFmpeg shortens its own duration to what the file holds);
- MP3 with a Xing, Info or VBRI frame (what LAME and FFmpeg write): FFmpeg's
  duration of the stream, which comes from that frame's frame count. Without
  one FFmpeg estimates the duration from the bitrate and the file's size,
  which a cut shortens too (and a variable bitrate makes wrong): not believed;
- FLAC (STREAMINFO's sample count, exact): FFmpeg's duration of the stream
  (a FLAC cut mid-frame also fails to decode; one cut at a frame's end does not).

Other containers say nothing here (None): a cut MP4/M4A fails to decode
("partial file") and is called cut off for that, and an MP4's track duration
can exceed what plays by its edit list (a clip cut without re-encoding); Ogg's
and Matroska's lengths come from their last pages and blocks, which a cut
removes too.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

_STREAM_HEADERS = ("flac",)
_MP3_TAGS = (b"Xing", b"Info", b"VBRI")
_RIFF_SCAN_BYTES = 1 << 20  # chunks before `data` (LIST, bext, iXML...) are small; stop looking after 1 MiB


def declared_s(path: Path, format_name: str, stream: Any) -> float | None:
    """The duration in seconds the file's header states for `stream` (an open PyAV audio stream), or None."""
    if format_name == "wav":
        return _wav_declared_s(path)
    if format_name == "mp3" and not _has_mp3_length_frame(path):
        return None
    if format_name == "mp3" or format_name in _STREAM_HEADERS:
        if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
            return float(stream.duration * stream.time_base)
    return None


def _wav_declared_s(path: Path) -> float | None:
    """The `data` chunk's length in seconds by the RIFF header; None for RF64, streamed WAVs (size 0 or
    0xFFFFFFFF: written before the length was known) or a header that cannot be read."""
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        byte_rate = 0
        while fh.tell() < _RIFF_SCAN_BYTES:
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"fmt ":
                fmt = fh.read(size + (size & 1))
                if len(fmt) < 12:
                    return None
                byte_rate = struct.unpack("<I", fmt[8:12])[0]
            elif chunk_id == b"data":
                if not byte_rate or size in (0, 0xFFFFFFFF):
                    return None
                return size / byte_rate
            else:
                fh.seek(size + (size & 1), 1)
    return None


def _has_mp3_length_frame(path: Path) -> bool:
    """Whether the first MP3 frame (after an ID3v2 tag) is a Xing, Info or VBRI frame, which counts the frames."""
    with path.open("rb") as fh:
        head = fh.read(10)
        offset = 0
        if len(head) == 10 and head[:3] == b"ID3":
            size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
            offset = 10 + size + (10 if head[5] & 0x10 else 0)  # the footer flag
        fh.seek(offset)
        frame = fh.read(4096)
    sync = next((i for i in range(len(frame) - 1) if frame[i] == 0xFF and frame[i + 1] & 0xE0 == 0xE0), None)
    if sync is None:
        return False
    first = frame[sync : sync + 200]  # the tag sits after the side information (at most 36 bytes in)
    return any(tag in first for tag in _MP3_TAGS)
