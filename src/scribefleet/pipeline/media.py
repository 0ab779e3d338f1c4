"""Media input: recognise, probe, hash and decode audio/video files with PyAV.

This is where foreign media enters scribefleet, so every PyAV (FFmpeg) error
is translated here into one of the input errors of `scribefleet.errors`:

    missing path                         -> InputNotFound    INPUT_NOT_FOUND
    bigger than max_file_mb              -> FileTooLarge     FILE_TOO_LARGE
    cannot be opened or parsed           -> MediaUnreadable  MEDIA_UNREADABLE
    0 bytes, no audio stream, no samples -> MediaEmpty       MEDIA_EMPTY

A MEDIA_UNREADABLE message says what the file looks like instead (`pipeline.sniff`:
"it is a PDF document", "it starts like a WAV file, but its header is damaged"; or
the container FFmpeg took it for), and what to do; FFmpeg's own words ("[Errno
1094995529] Invalid data found when processing input") are kept in its details
(`av_error`), not in the message a person reads.

Of several audio streams (a film's dubs and commentary, a recording's tracks)
the one a player or `ffmpeg -i` takes is decoded (`main_audio_stream`): the
one marked default, then the one with most channels, then the first; a
commentary or description track only when there is nothing else.

Channels are mixed to mono by FFmpeg's rules (a 5.1 film: the centre counts
most), except channels that have no places (a field recorder's multitrack WAV,
one microphone each): each of those counts the same (`_channel_mean`).

Decoding yields mono 16 kHz samples: 16-bit (`decode_pcm16`, the audio
checkpoint's format, half the memory of a two-hour recording in floats) or
float32 (`decode_audio`, what Whisper models take: those samples / 32768,
exactly what faster-whisper's own decode_audio gives). A file whose body is
cut off after some decodable audio keeps what decoded (as ffmpeg does) and
logs a warning (and adds it to the caller's `warnings` list, for the job's
result), so a truncated recording still gets a transcript of what is there and
says that it is not the whole file; also when FFmpeg saw no damage but the audio
ends before the length the file's header states (a WAV or MP3 cut after its
header decodes without an error: `pipeline/declared.py`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scribefleet.errors import FileTooLarge, InputNotFound, MediaEmpty, MediaUnreadable

if TYPE_CHECKING:  # PyAV and numpy load where media is opened: the CLI walks folders without them
    import av
    import numpy as np

log = logging.getLogger("scribefleet.media")

SAMPLE_RATE = 16000

MEDIA_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".wav", ".mp3", ".m4a", ".flac", ".ogg", ".opus", ".mp4", ".mkv", ".webm",
        ".mov", ".aac", ".avi", ".m4v", ".wma", ".mpga", ".oga", ".mpeg", ".mpg",
        ".aiff", ".aif", ".amr", ".3gp", ".ts", ".mts", ".wmv", ".flv", ".caf", ".ac3",
    }
)  # fmt: skip

_HASH_CHUNK_BYTES = 1 << 20
_MIB = 1024 * 1024


@dataclass
class MediaInfo:
    """What a container holds, as far as transcription cares."""

    duration_s: float
    has_audio: bool
    has_video: bool
    format_name: str


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputNotFound(f"{path} does not exist - check the path (and quoting of spaces)", path=str(path))
    if not path.is_file():
        raise MediaUnreadable(f"{path} is not a regular file - pass a media file", path=str(path))


def _open(path: Path) -> av.container.InputContainer:
    """av.open with its errors translated; the caller closes the container."""
    import av

    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        from scribefleet.pipeline.sniff import looks_like

        seems = looks_like(path)
        raise MediaUnreadable(
            f"{path.name} is not audio or video scribefleet can decode: {seems} - check that the file plays, "
            "or convert it with ffmpeg (ffmpeg -i IN OUT.wav)",
            path=str(path),
            looks_like=seems,
            av_error=str(exc),
        ) from exc


def _container_duration_s(container: av.container.InputContainer) -> float:
    import av

    if container.duration is not None:
        return max(0.0, container.duration / av.time_base)
    best = 0.0
    for stream in container.streams:
        if stream.duration is not None and stream.time_base is not None:
            best = max(best, float(stream.duration * stream.time_base))
    return best


def probe(path: Path | str) -> MediaInfo:
    """Open the container (headers only) and say what it holds."""
    path = Path(path)
    _check_exists(path)
    container = _open(path)
    try:
        return MediaInfo(
            duration_s=_container_duration_s(container),
            has_audio=bool(container.streams.audio),
            has_video=bool(container.streams.video),
            format_name=container.format.name,
        )
    finally:
        container.close()


def audio_seconds(path: Path | str) -> float | None:
    """The length a file's header gives, without decoding anything; None when it cannot tell. Never raises.

    For planning only (dispatch/groups.py keeps long files out of groups): the decode stage measures the
    real length. A plain PCM WAV is read by the `wave` module (tens of microseconds, where opening it
    with PyAV takes milliseconds) when its header's length fits the file; anything else by `probe`, which
    measures a WAV whose header was never finished (0 frames: a recorder that crashed) or says 4 GiB
    (a streamed one) as FFmpeg decodes it, to its end.
    """
    path = Path(path)
    with contextlib.suppress(wave.Error, EOFError, OSError, ValueError):
        with wave.open(str(path)) as w:
            frames, rate = w.getnframes(), w.getframerate()
            if rate > 0 and 0 < frames * w.getnchannels() * w.getsampwidth() <= path.stat().st_size:
                return frames / rate
    try:
        info = probe(path)
    except (InputNotFound, MediaUnreadable):
        return None
    return info.duration_s if info.has_audio and info.duration_s > 0 else None


def looks_like_media(path: Path | str) -> bool:
    """True for a known media extension, or a file PyAV finds an audio stream in. Never raises."""
    path = Path(path)
    try:
        if not path.is_file():
            return False
        if path.suffix.lower() in MEDIA_EXTENSIONS:
            return True
        import av

        with av.open(str(path), mode="r") as container:
            return bool(container.streams.audio)
    except Exception:  # noqa: BLE001 - a yes/no question about arbitrary files: any failure means "no"
        return False


def content_hash(path: Path | str) -> str:
    """sha256 hex of the file's bytes, read in chunks so large videos stay out of memory."""
    path = Path(path)
    _check_exists(path)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _check_size(path: Path, max_file_mb: int) -> None:
    size_bytes = path.stat().st_size
    if size_bytes == 0:
        raise MediaEmpty(f"{path.name} is an empty file (0 bytes) - nothing to transcribe", path=str(path))
    size_mb = size_bytes / _MIB
    if size_mb > max_file_mb:
        raise FileTooLarge(
            f"{path.name} is {size_mb:.1f} MB, over the {max_file_mb} MB limit - "
            "raise SCRIBEFLEET_MAX_FILE_MB or split the file",
            path=str(path),
            size_mb=round(size_mb, 1),
            limit_mb=max_file_mb,
        )


def decode_audio(path: Path | str, *, max_file_mb: int) -> np.ndarray:
    """Decode the main audio stream to float32 mono 16 kHz samples in [-1, 1)."""
    return pcm16_to_float(decode_pcm16(path, max_file_mb=max_file_mb))


def pcm16_to_float(samples: np.ndarray) -> np.ndarray:
    """16-bit samples -> float32 in [-1, 1) (one new array, no temporary)."""
    import numpy as np

    audio = samples.astype(np.float32)
    audio *= 1.0 / PCM16_SCALE  # a power of two: exactly a division
    return audio


#: full scale of a 16-bit sample (FFmpeg's and faster-whisper's)
PCM16_SCALE = 32768.0


class Samples:
    """A recording's 16 kHz mono samples held as 16-bit integers, read as float32: what a job keeps of its audio
    from decoding to the end of transcription and diarization.

    A two-hour recording is 230 MB as 16-bit samples and 460 MB as floats. Every
    reader of a job's audio takes slices of it (a window, a speech clip, a VAD
    block, a voice's stretch), so each slice is converted when it is taken:
    `samples[a:b]` is exactly `pcm16_to_float(pcm[a:b])`, the floats the whole
    recording would have held. `shape`, `size`, `ndim`, `len()` are the
    recording's; `np.asarray(samples)` converts it all, for a reader that needs
    the whole (pyannote's pipeline).
    """

    ndim = 1

    def __init__(self, pcm: np.ndarray) -> None:
        assert pcm.ndim == 1, "mono samples"
        self.pcm = pcm

    @property
    def shape(self) -> tuple[int]:
        return (self.pcm.shape[0],)

    @property
    def size(self) -> int:
        return int(self.pcm.shape[0])

    @property
    def dtype(self) -> Any:
        import numpy as np

        return np.dtype(np.float32)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: Any) -> Any:
        import numpy as np

        part = self.pcm[key]
        return pcm16_to_float(part) if isinstance(part, np.ndarray) else np.float32(part / PCM16_SCALE)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        audio = pcm16_to_float(self.pcm)
        return audio if dtype is None else audio.astype(dtype, copy=False)


def decode_pcm16(path: Path | str, *, max_file_mb: int, warnings: list[str] | None = None) -> np.ndarray:
    """Decode the main audio stream (`main_audio_stream`) to 16-bit mono 16 kHz samples; what a person should
    know of the result (a damaged or cut-off file decoded in part) is logged and appended to `warnings`."""
    import numpy as np

    path = Path(path)
    _check_exists(path)
    _check_size(path, max_file_mb)
    container = _open(path)
    try:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            raise MediaEmpty(
                f"{path.name} has no audio stream (it holds {', '.join(kinds)}) - pass a file with sound",
                path=str(path),
            )
        stream = main_audio_stream(container)
        if stream is None:
            raise MediaUnreadable(
                f"{path.name} holds audio in a codec this FFmpeg has no decoder for - convert it to WAV or FLAC "
                "with a full ffmpeg (ffmpeg -i IN OUT.flac)",
                path=str(path),
            )
        others, index = len(container.streams.audio) - 1, stream.index  # the stream is gone once closed
        if others:
            log.info("%s: %d audio streams; transcribing stream #%d (%s)", path.name, others + 1, stream.index,
                     _describe(stream))  # fmt: skip
        # FFmpeg falls back to guessing the format from the extension; a guess that found
        # no sample rate means the stream was never really parsed
        parsed = stream.codec_context.sample_rate > 0
        taken_for = _taken_for(container, stream)
        declared = _declared_s(path, container, stream)
        chunks, error, first_s = _decode_stream(container, stream)
        lead_s = _audio_lead_s(container, first_s) if chunks else 0.0
    finally:
        container.close()
    if lead_s:
        log.info("%s: its audio starts %.2f s into the media; the transcript keeps in step with the media (silence "
                 "before)", path.name, lead_s)  # fmt: skip
        chunks.insert(0, np.zeros(round(lead_s * SAMPLE_RATE), dtype=np.int16))
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    del chunks
    give_back_freed_memory()
    if samples.size == 0 and (error is not None or not parsed):
        reason = str(error) if error is not None else "no audio parameters could be read"
        raise MediaUnreadable(
            f"{path.name} is not audio or video scribefleet can decode: FFmpeg took it for {taken_for}, but none of "
            "its audio could be decoded - the file is damaged, truncated or not what its extension says; "
            "re-export or re-download it, or convert it with ffmpeg (ffmpeg -i IN OUT.wav)",
            path=str(path),
            looks_like=taken_for,
            av_error=reason,
        ) from error
    if samples.size == 0:
        raise MediaEmpty(f"{path.name} contains no audio samples - nothing to transcribe", path=str(path))
    if error is not None:
        # what ffmpeg does with a cut-off file: keep the audio before the damage
        _warn(path, warnings, f"part of the audio could not be decoded ({error}); the transcript covers the "
                              f"{samples.size / SAMPLE_RATE:.1f} s that did - the file is damaged or cut off")  # fmt: skip
    elif declared is not None and (ends_s := samples.size / SAMPLE_RATE - lead_s) < declared - _cut_tolerance_s(declared):
        # FFmpeg decodes a WAV or MP3 cut after its header to where the bytes end, without a word
        _warn(path, warnings, f"its audio ends after {ends_s:.1f} s of the {declared:.1f} s its header states; the "
                              f"transcript covers the {ends_s:.1f} s there are - the file is cut off (an interrupted "
                              "copy or download): copy it again")  # fmt: skip
    if others and not samples.any():  # an empty transcript with no word of why: say which track was heard
        _warn(path, warnings, f"audio stream #{index}, the one a player plays, is silent from start to end; "
                              f"the file has {others} other audio stream(s) - to transcribe one, extract it first "
                              "(ffmpeg -i IN -map 0:a:1 -c copy OUT.mka)")  # fmt: skip
    return samples


def _declared_s(path: Path, container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    """The length the file's header states (pipeline/declared.py); None where it states none or cannot be read."""
    from scribefleet.pipeline.declared import declared_s

    try:
        return declared_s(path, container.format.name, stream)
    except (OSError, ValueError, OverflowError):
        return None


def _cut_tolerance_s(declared_s: float) -> float:
    """How much shorter than its header a file's audio may end without being called cut off: codecs' priming
    and padding, rounding of frame counts (a fraction of a second), whatever the length."""
    return max(1.0, 0.002 * declared_s)


def give_back_freed_memory() -> None:
    """Return the free pages of the C heap to the system (glibc's `malloc_trim`; nothing where there is none).

    glibc keeps freed blocks below its mmap threshold for reuse, and that threshold
    grows to 32 MB as large blocks come and go: the decoded chunks (1 MB each),
    freed once joined, stayed with the process through the whole job. A two-hour
    recording's transcription held 1.31 GB resident; 1.12 GB with a trim after
    decoding. A slot trims again after each task (what the task freed)."""
    if (trim := _malloc_trim()) is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # the C library this process runs on
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None


def _warn(path: Path, warnings: list[str] | None, warning: str) -> None:
    log.warning("%s: %s", path.name, warning)
    if warnings is not None:
        warnings.append(warning)


def main_audio_stream(container: av.container.InputContainer) -> av.AudioStream | None:
    """The audio stream a player plays and `ffmpeg -i` takes (its rule: the default-flagged stream, then most
    channels, then the first), passing over commentary and audio-description tracks while there is another;
    None when no audio stream has a decoder (a codec tag FFmpeg does not know)."""
    import av

    aside = av.stream.Disposition.comment | av.stream.Disposition.visual_impaired | av.stream.Disposition.descriptions

    def rank(stream: av.AudioStream) -> tuple[bool, bool, int, int]:
        disposition = int(stream.disposition)
        default = bool(disposition & int(av.stream.Disposition.default))
        return not disposition & int(aside), default, stream.codec_context.channels, -stream.index

    decodable = [stream for stream in container.streams.audio if stream.codec_context is not None]
    return max(decodable, key=rank) if decodable else None


def _taken_for(container: av.container.InputContainer, stream: av.AudioStream) -> str:
    """`a FLAC file (raw FLAC, audio flac)`: the container and codec FFmpeg took a file for (perhaps guessing
    from its extension)."""
    long_name = container.format.long_name or container.format.name
    codec = stream.codec_context.name if stream.codec_context is not None else "unknown"
    return f"{container.format.name} ({long_name}; audio codec {codec})"


def _describe(stream: av.AudioStream) -> str:
    """`eng, "Main", 2 channels, default`: what a player's track menu says of a stream."""
    language, title = stream.metadata.get("language"), stream.metadata.get("title")
    channels = stream.codec_context.channels
    parts = [language or "", f'"{title}"' if title else "", f"{channels} channel{'' if channels == 1 else 's'}"]
    parts += [flag.name or "" for flag in stream.disposition]  # default, comment, ...
    return ", ".join(part for part in parts if part)


def _audio_lead_s(container: av.container.InputContainer, first_s: float | None) -> float:
    """How long after the media's start (what a player shows as 0:00, and subtitles count from) its audio starts:
    a video whose sound begins later (a recording cut without re-encoding, a broadcast capture) would otherwise
    get subtitles that many seconds early. 0 when the timestamps say nothing sensible (missing, or beyond the
    media's length), and under `_LEAD_MIN_S`."""
    if first_s is None or container.start_time is None or not container.duration:
        return 0.0
    lead_s = first_s - container.start_time / 1_000_000  # the container's times are in microseconds
    return lead_s if _LEAD_MIN_S <= lead_s < container.duration / 1_000_000 else 0.0


#: a smaller lead is left alone: codecs' own start-up delays show as first frames up to about 0.13 s late (AAC at
#: 8 kHz; Vorbis and MP3 a few tens of ms), and a cue that much early is not seen as out of step
_LEAD_MIN_S = 0.25


def _decode_stream(
    container: av.container.InputContainer, stream: av.AudioStream
) -> tuple[list[np.ndarray], Exception | None, float | None]:
    """Decode and resample one audio stream: (chunks, error, the first decoded frame's time in s).

    Damaged packets are skipped (as ffmpeg does) and a demuxing error ends the
    stream; the last error seen is returned with the samples decoded so far. A
    stream whose sample rate or layout changes midway (MP3 files joined end to
    end, broadcast recordings) is resampled part by part, as ffmpeg does.
    """
    import av

    chunks: list[np.ndarray] = []
    error: Exception | None = None
    part: _Part | None = None
    first_s: float | None = None
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except (av.FFmpegError, ValueError) as exc:
                error = exc
                continue
            for frame in frames:
                if part is None and frame.pts is not None and frame.time_base is not None:
                    first_s = float(frame.pts * frame.time_base)
                frame.pts = None  # damaged timestamps must not make the resampler drop or pad audio
                if _unplaced(frame):
                    frame = _channel_mean(frame)
                if part is None or not part.takes(frame):
                    if part is not None:
                        part.finish(chunks)
                    part = _Part(frame)
                part.add(frame, chunks)
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        error = exc
    try:
        if part is not None:
            part.finish(chunks)
    except (av.FFmpegError, ValueError) as exc:
        error = error or exc
    return chunks, error, first_s


def _unplaced(frame: av.AudioFrame) -> bool:
    """Whether the frame's channels have no places (a multitrack WAV without a channel mask: a field
    recorder's 8 microphones, ambisonics): FFmpeg's downmix either guesses a surround layout for them (and
    drops the channel it takes for LFE, a microphone, from the mix) or, past 8 channels, refuses."""
    channels = frame.layout.channels
    return len(channels) > 1 and any(channel.name == "NONE" for channel in channels)


def _channel_mean(frame: av.AudioFrame) -> av.AudioFrame:
    """The frame as one float channel, the mean of all of its channels (each track counts the same)."""
    import av
    import numpy as np

    data = frame.to_ndarray()
    count = len(frame.layout.channels)
    if not frame.format.is_planar:
        data = data.reshape(-1, count).T
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        half = (int(info.max) - int(info.min) + 1) / 2  # u8's silence is 128; s16's full scale 32768
        mono = (data.mean(axis=0, dtype=np.float64) - (int(info.min) + half)) / half
    else:
        mono = data.mean(axis=0, dtype=np.float64)
    out = av.AudioFrame.from_ndarray(mono.astype(np.float32)[None, :], format="flt", layout="mono")
    out.sample_rate = frame.sample_rate
    return out


class _Part:
    """A run of frames of one format, resampled to 16 kHz mono 16-bit in groups (one resampler call per frame
    costs twice the decoding)."""

    def __init__(self, frame: av.AudioFrame) -> None:
        import av

        self.kind = _frame_kind(frame)
        self.fifo = av.AudioFifo()
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)

    def takes(self, frame: av.AudioFrame) -> bool:
        return _frame_kind(frame) == self.kind

    def add(self, frame: av.AudioFrame, chunks: list[np.ndarray]) -> None:
        self.fifo.write(frame)
        if self.fifo.samples >= _RESAMPLE_GROUP:
            self._resample(self.fifo.read(), chunks)

    def finish(self, chunks: list[np.ndarray]) -> None:
        if self.fifo.samples:
            self._resample(self.fifo.read(), chunks)
        self._resample(None, chunks)  # what the resampler still holds

    def _resample(self, frame: av.AudioFrame | None, chunks: list[np.ndarray]) -> None:
        chunks.extend(out.to_ndarray().reshape(-1).copy() for out in self.resampler.resample(frame))


def _frame_kind(frame: av.AudioFrame) -> tuple[str, str, int]:
    return frame.format.name, frame.layout.name, frame.sample_rate


#: samples of the source resampled in one call (faster-whisper's decode_audio groups 500000 too)
_RESAMPLE_GROUP = 500_000
