"""Pipeline fixtures: one warm model for the session, en01 in every container, a long synthetic recording."""

from __future__ import annotations

import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from scribefleet.options import FORMATS, TranscribeOptions
from scribefleet.pipeline.job import TranscriptionJob
from scribefleet.pipeline.media import decode_audio
from scribefleet.pipeline.models import ModelCache
from helpers import DATA, TEXTS

#: ext -> (muxer, audio codec, channel layout, sample rate, video codec or None)
CONTAINERS: dict[str, tuple[str, str, str, int, str | None]] = {
    "mp3": ("mp3", "libmp3lame", "mono", 16000, None),
    "m4a": ("ipod", "aac", "mono", 16000, None),
    "flac": ("flac", "flac", "mono", 16000, None),
    "ogg": ("ogg", "vorbis", "stereo", 44100, None),  # FFmpeg's own vorbis encoder is stereo-only
    "opus": ("opus", "libopus", "mono", 48000, None),
    "mp4": ("mp4", "aac", "mono", 16000, "libx264"),
    "mkv": ("matroska", "aac", "stereo", 22050, None),
    "webm": ("webm", "libopus", "mono", 48000, None),
}


def _add_video(container: av.container.OutputContainer, codec: str) -> av.VideoStream:
    stream = container.add_stream(codec, rate=5)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    return stream


def _write_video(container: av.container.OutputContainer, stream: av.VideoStream, seconds: float) -> None:
    for i in range(max(1, int(seconds * 5))):
        image = np.full((48, 64, 3), (i * 17) % 255, dtype=np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def _write_audio(container: av.container.OutputContainer, stream: av.AudioStream, audio: np.ndarray) -> None:
    resampler = av.AudioResampler(format=stream.format.name, layout=stream.layout.name, rate=stream.rate)
    pcm = np.round(audio * 32767).astype(np.int16).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    frame.sample_rate = 16000
    for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
        for packet in stream.encode(chunk):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def encode(audio: np.ndarray | None, path: Path, ext: str, video_s: float = 0.0) -> Path:
    """Write 16 kHz float `audio` (and/or a small video stream) into the container named by `ext`."""
    muxer, codec, layout, rate, video_codec = CONTAINERS[ext]
    with av.open(str(path), "w", format=muxer) as container:
        # every stream must exist before the first packet is muxed (the header is written then)
        audio_stream = video_stream = None
        if audio is not None:
            audio_stream = container.add_stream(codec, rate=rate)
            audio_stream.layout = layout
            if codec == "vorbis":
                audio_stream.codec_context.options = {"strict": "-2"}  # the native encoder is "experimental"
        if video_codec or video_s:
            video_stream = _add_video(container, video_codec or "libx264")
        if audio_stream is not None:
            _write_audio(container, audio_stream, audio)
        if video_stream is not None:
            _write_video(container, video_stream, video_s or audio.shape[0] / 16000)
    return path


@pytest.fixture(scope="session")
def en01_audio() -> np.ndarray:
    return decode_audio(DATA / "en01.wav", max_file_mb=10)


@pytest.fixture(scope="session")
def containers(tmp_path_factory: pytest.TempPathFactory, en01_audio: np.ndarray) -> dict[str, Path]:
    """ext -> en01.wav re-encoded into that container with PyAV."""
    folder = tmp_path_factory.mktemp("containers")
    return {ext: encode(en01_audio, folder / f"en01.{ext}", ext) for ext in CONTAINERS}


@pytest.fixture(scope="session")
def video_only_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An mp4 with a video stream and no audio stream."""
    return encode(None, tmp_path_factory.mktemp("video") / "silent film.mp4", "mp4", video_s=2.0)


@pytest.fixture(scope="session")
def long_recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """~75 s wav: en01..en12 with 2.5 s silences between them, and what is said in it."""
    names = [f"en{i:02d}.wav" for i in range(1, 13)]
    silence = np.zeros(int(2.5 * 16000), dtype=np.int16)
    parts: list[np.ndarray] = []
    for name in names:
        with wave.open(str(DATA / name)) as wav:
            parts += [np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16), silence]
    path = tmp_path_factory.mktemp("long") / "long recording.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(np.concatenate(parts[:-1]).tobytes())
    return path, " ".join(TEXTS[n] for n in names)


@pytest.fixture(scope="session")
def models() -> ModelCache:
    """One cache for the session: tiny.en is loaded once and stays warm, as in a slot."""
    return ModelCache(max_models=2)


@pytest.fixture
def make_job(tmp_path: Path, model_path: Path) -> Callable[..., TranscriptionJob]:
    """Build a job for `input_path` with outputs in tmp_path/out and checkpoints in tmp_path/work."""

    def make(input_path: Path, *, name: str = "job", formats: tuple[str, ...] = FORMATS, **fields: Any) -> TranscriptionJob:
        options = fields.pop("options", TranscribeOptions())
        return TranscriptionJob(
            input_path=input_path,
            work_dir=fields.pop("work_dir", tmp_path / "work" / name),
            outputs=fields.pop("outputs", {f: tmp_path / "out" / f"{name}.{f}" for f in formats}),
            options=options,
            model_path=model_path,
            model_id="tiny.en",
            cpu_threads=2,
            **fields,
        )

    return make


class ProgressLog:
    """A progress callback that records every call, for asserting which stages and windows ran."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, dict[str, Any]]] = []

    def __call__(self, stage: str, fraction: float, extra: dict[str, Any]) -> None:
        self.calls.append((stage, fraction, dict(extra)))

    @property
    def started_stages(self) -> list[str]:
        return [stage for stage, fraction, _ in self.calls if fraction == 0.0]

    @property
    def windows(self) -> set[int]:
        return {extra["window"] for stage, _, extra in self.calls if stage == "transcribe" and "window" in extra}


@pytest.fixture
def progress() -> ProgressLog:
    return ProgressLog()
