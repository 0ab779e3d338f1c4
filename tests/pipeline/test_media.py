"""pipeline/media.py: every container decodes, every bad input gets its own error code."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from helpers import DATA
from scribefleet.errors import FileTooLarge, InputNotFound, MediaEmpty, MediaUnreadable, ScribefleetError
from scribefleet.pipeline import media
from pipeline.conftest import CONTAINERS

EN01_S = 3.438  # en01.wav: 55015 samples at 16 kHz


def test_extensions_cover_the_required_containers() -> None:
    required = ".wav .mp3 .m4a .flac .ogg .opus .mp4 .mkv .webm .mov .aac .avi .m4v .wma .mpga .oga".split()
    assert set(required) <= media.MEDIA_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in media.MEDIA_EXTENSIONS)


def test_wav_decodes_to_float32_mono_16k() -> None:
    audio = media.decode_audio(DATA / "en01.wav", max_file_mb=10)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.shape[0] == 55015  # already 16 kHz mono: no resampling drift at all
    assert 0.3 < float(np.abs(audio).max()) <= 1.0


@pytest.mark.parametrize("ext", sorted(CONTAINERS))
def test_every_container_decodes_to_about_the_right_duration(containers: dict[str, Path], ext: str) -> None:
    audio = media.decode_audio(containers[ext], max_file_mb=10)
    duration_s = audio.shape[0] / media.SAMPLE_RATE
    # encoders add priming/padding (aac ~0.1 s); more than that means lost or invented audio
    assert EN01_S - 0.05 <= duration_s <= EN01_S + 0.15, duration_s
    assert audio.dtype == np.float32 and float(np.abs(audio).max()) > 0.3


@pytest.mark.parametrize("ext", ["ogg", "mkv", "opus", "mp3"])
def test_samples_are_faster_whispers_own(containers: dict[str, Path], ext: str) -> None:
    """The model hears what the library's decode_audio would give it, to the bit (stereo 44.1 kHz, 22.05 kHz and
    48 kHz sources resampled alike), and the 16-bit checkpoint holds exactly those samples."""
    from faster_whisper import decode_audio as library_decode

    ours = media.decode_audio(containers[ext], max_file_mb=10)
    assert np.array_equal(ours, library_decode(str(containers[ext])))
    pcm = media.decode_pcm16(containers[ext], max_file_mb=10)
    assert pcm.dtype == np.int16 and np.array_equal(media.pcm16_to_float(pcm), ours)
    # what a job holds: the 16-bit samples, read slice by slice as those same floats
    held = media.Samples(pcm)
    assert held.shape == ours.shape and held.size == len(held) == ours.size and held.ndim == 1
    assert held.pcm is pcm and held.dtype == np.float32
    for lo, hi in [(0, 512), (16000, 48000), (ours.size - 100, ours.size + 100), (5, 5)]:
        part = held[lo:hi]
        assert part.dtype == np.float32 and np.array_equal(part, ours[lo:hi])
    assert held[16000] == ours[16000] and np.array_equal(np.asarray(held), ours)
    assert np.array_equal(np.ascontiguousarray(held, dtype=np.float64), ours.astype(np.float64))


def test_probe_reports_streams_and_duration(containers: dict[str, Path], video_only_mp4: Path) -> None:
    info = media.probe(containers["mp4"])
    assert info.has_audio and info.has_video and "mp4" in info.format_name
    assert abs(info.duration_s - EN01_S) < 0.3
    flac = media.probe(containers["flac"])
    assert flac.has_audio and not flac.has_video and flac.format_name == "flac"
    silent = media.probe(video_only_mp4)
    assert silent.has_video and not silent.has_audio
    with pytest.raises(MediaUnreadable):
        media.probe(DATA / "texts.json")
    with pytest.raises(InputNotFound):
        media.probe(DATA / "missing.wav")


def test_looks_like_media_probes_unknown_extensions(tmp_path: Path, containers: dict[str, Path]) -> None:
    disguised = tmp_path / "recording.dat"
    disguised.write_bytes(containers["ogg"].read_bytes())
    notes = tmp_path / "notes.txt"
    notes.write_text("minutes of the meeting\n")
    assert media.looks_like_media(DATA / "en01.wav")
    assert media.looks_like_media(disguised)  # found by its container, not its name
    assert not media.looks_like_media(notes)
    assert not media.looks_like_media(DATA / "make_fixtures.sh")
    assert not media.looks_like_media(tmp_path)  # a folder
    assert not media.looks_like_media(tmp_path / "gone.bin")


def test_content_hash_is_sha256_of_the_bytes(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # spans several read chunks
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert media.content_hash(path) == hashlib.sha256(data).hexdigest()
    copy = tmp_path / "same content, other name.bin"
    copy.write_bytes(data)
    assert media.content_hash(copy) == media.content_hash(path)


@pytest.fixture
def bad_inputs(tmp_path: Path, containers: dict[str, Path], video_only_mp4: Path) -> dict[str, Path]:
    files = {
        "empty": tmp_path / "empty.wav",
        "text": tmp_path / "not audio.mp3",
        "header": tmp_path / "header only.mp3",
        "random": tmp_path / "noise.wav",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("This is a text file, not an mp3.\n" * 20)
    files["header"].write_bytes(containers["mp3"].read_bytes()[:100])
    files["random"].write_bytes(np.random.default_rng(7).integers(0, 256, 64 * 1024, dtype=np.uint8).tobytes())
    files["garbage"] = tmp_path / "garbage.flac"  # FFmpeg "opens" it as flac, going by the extension
    files["garbage"].write_bytes(bytes(range(256)) * 400)
    files["no samples"] = tmp_path / "header only.wav"
    with wave.open(str(files["no samples"]), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
    files["video"] = video_only_mp4
    files["missing"] = tmp_path / "never recorded.wav"
    return files


@pytest.mark.parametrize(
    ("case", "error", "code"),
    [
        ("empty", MediaEmpty, "MEDIA_EMPTY"),
        ("text", MediaUnreadable, "MEDIA_UNREADABLE"),
        ("header", MediaUnreadable, "MEDIA_UNREADABLE"),
        ("random", MediaUnreadable, "MEDIA_UNREADABLE"),
        ("garbage", MediaUnreadable, "MEDIA_UNREADABLE"),
        ("no samples", MediaEmpty, "MEDIA_EMPTY"),
        ("video", MediaEmpty, "MEDIA_EMPTY"),
        ("missing", InputNotFound, "INPUT_NOT_FOUND"),
    ],
)
def test_bad_input_gets_its_code(bad_inputs: dict[str, Path], case: str, error: type, code: str) -> None:
    with pytest.raises(ScribefleetError) as info:
        media.decode_audio(bad_inputs[case], max_file_mb=10)
    assert type(info.value) is error and info.value.code == code
    assert bad_inputs[case].name in info.value.message
    assert " - " in info.value.message  # every message goes on to say what to do


def test_unreadable_carries_avs_message(bad_inputs: dict[str, Path]) -> None:
    with pytest.raises(MediaUnreadable) as info:
        media.decode_audio(bad_inputs["random"], max_file_mb=10)
    assert "Invalid data" in info.value.details["av_error"]
    assert info.value.__cause__ is not None  # the av error is kept as the cause


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("text", "it is text"),
        ("random", "its content matches no audio or video format"),
        ("header", "it starts like an MP3 file, but its header is damaged or cut off"),
        ("garbage", "FFmpeg took it for flac"),
        ("pdf", "it is a PDF document"),
        ("html", "it is an HTML page"),
        ("cut wav", "it starts like a WAV file, but its header is damaged or cut off"),
    ],
)
def test_unreadable_says_what_the_file_looks_like_not_ffmpegs_errno(
    bad_inputs: dict[str, Path], tmp_path: Path, case: str, said: str
) -> None:
    """The message was PyAV's '[Errno 1094995529] Invalid data found when processing input: '/the/path''."""
    more = {"pdf": b"%PDF-1.4\n" + bytes(range(256)) * 8, "html": b"<!DOCTYPE html><html><body>Not found</body></html>\n",
            "cut wav": (DATA / "en01.wav").read_bytes()[:30]}  # fmt: skip
    if case in more:
        bad_inputs[case] = tmp_path / f"{case}.wav"
        bad_inputs[case].write_bytes(more[case])
    with pytest.raises(MediaUnreadable) as info:
        media.decode_audio(bad_inputs[case], max_file_mb=10)
    message = info.value.message
    assert message.startswith(f"{bad_inputs[case].name} is not audio or video scribefleet can decode: ")
    assert said in message and "ffmpeg -i" in message, message
    assert "Errno" not in message and "Invalid data" not in message and str(tmp_path) not in message, message
    assert info.value.details["av_error"] and info.value.details["looks_like"] in message


def test_size_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    big = tmp_path / "big.wav"
    big.write_bytes(os.urandom(3 * 1024 * 1024))  # garbage: decoding it would say MEDIA_UNREADABLE
    with pytest.raises(FileTooLarge) as info:
        media.decode_audio(big, max_file_mb=2)
    assert info.value.code == "FILE_TOO_LARGE"
    assert info.value.details == {"path": str(big), "size_mb": 3.0, "limit_mb": 2}
    assert "SCRIBEFLEET_MAX_FILE_MB" in info.value.message


def test_truncated_body_keeps_the_decoded_part_and_warns(
    tmp_path: Path, containers: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    whole = containers["flac"].read_bytes()
    cut = tmp_path / "cut off.flac"
    cut.write_bytes(whole[: len(whole) // 2])
    logger = logging.getLogger("scribefleet.media")
    logger.addHandler(caplog.handler)  # scribefleet's logger may not propagate once logging is set up
    try:
        with caplog.at_level(logging.WARNING, logger="scribefleet.media"):
            audio = media.decode_audio(cut, max_file_mb=10)
    finally:
        logger.removeHandler(caplog.handler)
    duration_s = audio.shape[0] / media.SAMPLE_RATE
    assert 0.5 < duration_s < EN01_S - 0.5
    assert any("cut off.flac" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("ext", ["mp3", "wav"])
def test_a_file_cut_after_its_header_is_decoded_in_part_and_says_so(
    tmp_path: Path, containers: dict[str, Path], ext: str
) -> None:
    """FFmpeg decodes a WAV or an MP3 (with its Xing frame) cut off after the header to where the bytes end,
    without an error: a recording cut at a third was transcribed as if it were whole, with no warning."""
    whole = (DATA / "en01.wav" if ext == "wav" else containers["mp3"]).read_bytes()
    cut = tmp_path / f"cut off.{ext}"
    cut.write_bytes(whole[: len(whole) // 2])
    warnings: list[str] = []
    pcm = media.decode_pcm16(cut, max_file_mb=10, warnings=warnings)
    assert 1.0 < pcm.size / media.SAMPLE_RATE < EN01_S - 1.0
    (warning,) = warnings
    assert f"of the {EN01_S:.1f} s its header states" in warning and "the file is cut off" in warning, warning


@pytest.mark.parametrize("ext", sorted(CONTAINERS))
def test_a_whole_file_is_never_called_cut_off(containers: dict[str, Path], ext: str) -> None:
    warnings: list[str] = []
    media.decode_pcm16(containers[ext], max_file_mb=10, warnings=warnings)
    media.decode_pcm16(DATA / "en01.wav", max_file_mb=10, warnings=warnings)
    assert warnings == []


def test_joined_mp3s_of_other_rates_decode_whole(tmp_path: Path, containers: dict[str, Path], en01_audio: np.ndarray) -> None:
    """MP3 files joined end to end (as recordings in parts are) change rate and layout midway: every part is
    resampled, none dropped."""
    import av

    from pipeline.conftest import _write_audio

    second = tmp_path / "part2.mp3"
    with av.open(str(second), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=44100)
        stream.layout = "stereo"
        _write_audio(container, stream, en01_audio)
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(containers["mp3"].read_bytes() + second.read_bytes())
    audio = media.decode_audio(joined, max_file_mb=10)
    duration_s = audio.shape[0] / media.SAMPLE_RATE
    assert 2 * EN01_S - 0.1 <= duration_s <= 2 * EN01_S + 0.3, duration_s
    half = audio.shape[0] // 2
    assert float(np.abs(audio[:half]).max()) > 0.3 and float(np.abs(audio[half:]).max()) > 0.3  # both parts heard


def test_audio_that_starts_late_in_a_video_keeps_in_step_with_it(tmp_path: Path, en01_audio: np.ndarray) -> None:
    """A video whose sound begins 3 s in (a recording cut without re-encoding): the samples start with those 3 s
    of silence, so every cue lands where the words are heard, not 3 s early."""
    from fractions import Fraction

    import av

    path = tmp_path / "late sound.mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        audio.layout = "mono"
        for i in range(25 * 7):
            image = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i % 255, dtype=np.uint8), format="rgb24")
            image.pts, image.time_base = i, Fraction(1, 25)
            for packet in video.encode(image):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        pcm = np.round(en01_audio * 32767).astype(np.int16)
        for i in range(0, pcm.shape[0], 1024):
            sound = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[None, i : i + 1024]), format="s16", layout="mono")
            sound.sample_rate, sound.pts, sound.time_base = 16000, 3 * 16000 + i, Fraction(1, 16000)
            for packet in audio.encode(sound):
                container.mux(packet)
        for packet in audio.encode(None):
            container.mux(packet)

    samples = media.decode_audio(path, max_file_mb=10)
    loud = np.flatnonzero(np.abs(samples) > 0.05)
    assert 2.9 <= loud[0] / media.SAMPLE_RATE <= 3.3, loud[0] / media.SAMPLE_RATE  # en01's first word, 3 s in
    assert 3 + EN01_S - 0.1 <= samples.shape[0] / media.SAMPLE_RATE <= 3 + EN01_S + 0.2


def test_unicode_and_spaces_in_names(tmp_path: Path) -> None:
    odd = tmp_path / "réunion d'équipe 会议 #1 (final).wav"
    odd.write_bytes((DATA / "en01.wav").read_bytes())
    assert media.decode_audio(odd, max_file_mb=10).shape[0] == 55015
    assert media.looks_like_media(odd)


def _tracks(path: Path, tracks: list[tuple[np.ndarray, int, int]]) -> Path:
    """An mkv holding one lossless (FLAC) audio stream per (samples, channels, disposition flags)."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as container:
        streams = []
        for _, channels, flags in tracks:
            stream = container.add_stream("flac", rate=16000)
            stream.layout = "mono" if channels == 1 else "stereo"
            stream.disposition = av.stream.Disposition(flags)
            streams.append(stream)
        for stream, (samples, channels, _) in zip(streams, tracks):
            pcm = np.repeat(np.round(samples * 32767).astype(np.int16)[None, :], channels, axis=0)
            for i in range(0, pcm.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, i : i + 1024].T.reshape(1, -1)),
                                                   format="s16", layout=stream.layout.name)  # fmt: skip
                frame.sample_rate, frame.pts, frame.time_base = 16000, i, Fraction(1, 16000)
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    return path


def test_of_several_audio_streams_the_one_a_player_plays_is_transcribed(
    tmp_path: Path, en01_audio: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    """A film with a commentary track first and its main track flagged default, and a recording whose first
    track is a mono mic and second the stereo mix: `ffmpeg -i` and players take the default, then the most
    channels. Decoding the first stream transcribed the commentary (or the wrong mic) without a word said."""
    import av

    other = media.decode_audio(DATA / "en02.wav", max_file_mb=10)
    default, comment = int(av.stream.Disposition.default), int(av.stream.Disposition.comment)
    film = _tracks(tmp_path / "film.mkv", [(other, 2, comment), (other, 2, 0), (en01_audio, 1, default)])
    mix = _tracks(tmp_path / "tracks.mkv", [(other, 1, 0), (en01_audio, 2, 0)])
    for path in (film, mix):
        with caplog.at_level(logging.INFO, logger="scribefleet.media"):
            samples = media.decode_audio(path, max_file_mb=10)
        assert samples.shape == en01_audio.shape, path.name
        assert np.abs(samples - en01_audio).max() < 2e-3, path.name
    assert "3 audio streams; transcribing stream #2 (1 channel, default)" in caplog.text


@pytest.mark.parametrize(("channels", "speaking"), [(7, 3), (9, 4), (24, 12)])
def test_a_multitrack_wav_without_channel_places_mixes_every_track(
    tmp_path: Path, en01_audio: np.ndarray, channels: int, speaking: int
) -> None:
    """A field recorder's polyphonic WAV (one microphone per channel, no channel mask): FFmpeg guessed a
    surround layout for 7 channels and left the one it took for LFE, the microphone that spoke, out of the mix
    (silence), and refused 9 channels or more (MEDIA_UNREADABLE). Every track now counts the same."""
    pcm = np.round(en01_audio * 32768).astype(np.int16)
    tracks = np.zeros((pcm.shape[0], channels), dtype=np.int16)
    tracks[:, speaking] = pcm
    path = tmp_path / f"{channels} mics.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(tracks.tobytes())
    samples = media.decode_audio(path, max_file_mb=10)
    assert samples.shape == en01_audio.shape
    assert np.abs(samples - en01_audio / channels).max() < 2 / 32768  # the mean of the tracks, to a sample's step


@pytest.mark.parametrize("data_size", [0, 0xFFFFFFFF])
def test_a_wav_header_that_does_not_tell_the_length_is_measured(tmp_path: Path, data_size: int) -> None:
    """A recorder that crashed leaves 0 in its WAV header's data size, a streamed one 4 GiB: both decode whole,
    and the length planning reads (long files are spread, not grouped; ETAs) was 0 s or 37 hours."""
    import struct

    with wave.open(str(DATA / "en01.wav")) as w:
        pcm = w.readframes(w.getnframes())
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, 16000, 32000, 2, 16)
    header = b"RIFF" + struct.pack("<I", min(0xFFFFFFFF, 36 + data_size)) + b"WAVE" + fmt
    path = tmp_path / "unfinished.wav"
    path.write_bytes(header + b"data" + struct.pack("<I", data_size) + pcm)
    assert media.decode_audio(path, max_file_mb=10).shape[0] == 55015
    assert media.audio_seconds(path) == pytest.approx(EN01_S, abs=0.01)
    assert media.audio_seconds(DATA / "en01.wav") == 55015 / 16000  # a sound header is read as it is


def test_audio_in_a_codec_without_a_decoder_is_unreadable_not_an_internal_error(tmp_path: Path) -> None:
    """A WAV whose format tag FFmpeg does not know (a proprietary ADPCM, a damaged header) has an audio stream
    with no decoder: decoding it raised AttributeError, and the job failed with INTERNAL_ERROR ('a bug')."""
    import struct

    with wave.open(str(DATA / "en01.wav")) as w:
        pcm = w.readframes(w.getnframes())
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 0x1234, 1, 16000, 32000, 2, 16)  # format tag 0x1234: no codec
    path = tmp_path / "odd codec.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE" + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm)
    with pytest.raises(MediaUnreadable, match="no decoder") as info:
        media.decode_audio(path, max_file_mb=10)
    assert info.value.code == "MEDIA_UNREADABLE" and "odd codec.wav" in info.value.message


def test_a_silent_main_track_beside_other_tracks_says_so(tmp_path: Path, en01_audio: np.ndarray) -> None:
    """Two mono tracks, no flags, the first empty (a recorder's unused input): the first is the one ffmpeg and
    players take, so it is decoded, but the empty transcript came with no word of the other track."""
    path = _tracks(tmp_path / "two mics.mkv", [(np.zeros_like(en01_audio), 1, 0), (en01_audio, 1, 0)])
    warnings: list[str] = []
    samples = media.decode_pcm16(path, max_file_mb=10, warnings=warnings)
    assert not samples.any()
    (warning,) = warnings
    assert "audio stream #0" in warning and "silent" in warning and "1 other audio stream" in warning
    assert "-map 0:a:1" in warning
    alone: list[str] = []
    media.decode_pcm16(_tracks(tmp_path / "one.mkv", [(np.zeros_like(en01_audio), 1, 0)]), max_file_mb=10,
                       warnings=alone)  # fmt: skip
    assert alone == []  # a silent file with nothing else in it is just silent


_FRAGMENTED_HEAP = """
import numpy as np
from pathlib import Path
from scribefleet.pipeline import media
def rss_mb():
    return int(next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS")).split()[1]) >> 10
big = np.ones(16 << 20, dtype=np.uint8); del big  # glibc's mmap threshold rises to 16 MB: 1 MB blocks go on the heap
blocks = [np.ones(1 << 20, dtype=np.uint8) for _ in range(400)]
pins = blocks[1::2]  # every other block stays: the freed ones lie between live ones, never the heap's free top
del blocks
before = rss_mb(); media.give_back_freed_memory(); print(before, rss_mb())
"""


@pytest.mark.skipif(media._malloc_trim() is None, reason="glibc only: other C libraries have no malloc_trim")
def test_freed_heap_blocks_go_back_to_the_system() -> None:
    """glibc keeps freed blocks under its mmap threshold (decoded chunks, once joined) for reuse: 200 MB of them
    between live blocks stay resident until they are given back (a process of its own: a heap of known shape)."""
    run = subprocess.run([sys.executable, "-c", _FRAGMENTED_HEAP], capture_output=True, text=True, check=True)
    before, after = map(int, run.stdout.split())
    assert before - after > 150, run.stdout
