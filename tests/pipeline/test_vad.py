"""pipeline/vad.py: Silero VAD finds the sentences of long_pauses.wav and nothing in silence; in pieces on several
threads it gives the same ranges on any thread count, and the library's (bit for bit on a recording of one piece)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faster_whisper.vad
import numpy as np
import pytest
from faster_whisper.vad import SileroVADModel, VadOptions, get_speech_timestamps, get_vad_model

from helpers import DATA
from scribefleet.pipeline.media import SAMPLE_RATE, Samples, decode_audio, decode_pcm16
from scribefleet.pipeline.vad import (
    CLIP_MAX_S,
    FRAME_SAMPLES,
    PIECE_S,
    WARMUP_S,
    Padded,
    PiecewiseSilero,
    _timestamps_with,
    model_input,
    piece_bounds,
    speech_ranges,
    vad_threads,
)

#: long_pauses.wav: en01, 3 s, en02, 6 s, en03, 3 s, en04 (seconds where each sentence's audio starts)
SENTENCE_STARTS_S = (0.0, 6.44, 16.69, 24.22)


@pytest.fixture(scope="module")
def long_pauses() -> np.ndarray:
    return decode_audio(DATA / "long_pauses.wav", max_file_mb=10)


def test_sequential_ranges_are_the_four_sentences(long_pauses: np.ndarray) -> None:
    ranges = speech_ranges(long_pauses, batched=False)
    assert len(ranges) == 4
    for (start, end), sentence_start in zip(ranges, SENTENCE_STARTS_S):
        assert abs(start - sentence_start) < 0.6 and end - start > 2.0
    # the long silence between en02 and en03 is not speech
    assert not any(start < 13.0 < end for start, end in ranges)


def test_batched_ranges_are_short_ordered_and_inside_the_audio(long_pauses: np.ndarray) -> None:
    ranges = speech_ranges(long_pauses, batched=True)
    duration_s = long_pauses.shape[0] / SAMPLE_RATE
    assert len(ranges) >= 4
    assert all(0 <= s < e <= duration_s + 0.001 and e - s <= CLIP_MAX_S + 1 for s, e in ranges)
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))
    speech_s = sum(e - s for s, e in ranges)
    assert 10 < speech_s < 22  # ~15 s of speech in 29 s of audio


class _Unconvertible(Samples):
    """A job's samples that fail if anything reads them whole instead of a slice at a time."""

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        raise AssertionError("the whole recording was converted to floats")


def test_a_jobs_16_bit_samples_give_the_same_ranges_read_a_block_at_a_time() -> None:
    pcm = decode_pcm16(DATA / "long_pauses.wav", max_file_mb=10)
    floats = np.asarray(Samples(pcm))
    for batched in (True, False):
        assert speech_ranges(_Unconvertible(pcm), batched=batched, threads=2) == speech_ranges(floats, batched=batched)


def test_silence_and_nothing_have_no_speech() -> None:
    assert speech_ranges(np.zeros(10 * SAMPLE_RATE, dtype=np.float32), batched=True) == []
    assert speech_ranges(np.zeros(10 * SAMPLE_RATE, dtype=np.float32), batched=False) == []
    assert speech_ranges(np.zeros(0, dtype=np.float32), batched=False) == []


# -- several cores, one answer ---------------------------------------------------------------------------------------


def _recording(sonnet: np.ndarray, minutes: float) -> np.ndarray:
    """The real sonnet read over and over with 1.5 s pauses, about `minutes` long (as bench/bench_spread.py has it)."""
    gap = np.zeros(int(1.5 * SAMPLE_RATE), dtype=np.float32)
    repeats = max(1, round(minutes * 60 * SAMPLE_RATE / (sonnet.shape[0] + gap.shape[0])))
    return np.concatenate([sonnet, gap] * repeats)


def _padded(audio: np.ndarray) -> np.ndarray:
    """`audio` padded as get_speech_timestamps pads it before asking the model."""
    return np.pad(audio, (0, FRAME_SAMPLES - audio.shape[0] % FRAME_SAMPLES))


def _in_seconds(stamps: list[dict[str, int]]) -> list[tuple[float, float]]:
    return [(round(s["start"] / SAMPLE_RATE, 3), round(s["end"] / SAMPLE_RATE, 3)) for s in stamps]


def _options(batched: bool) -> VadOptions:
    return VadOptions(max_speech_duration_s=CLIP_MAX_S, min_silence_duration_ms=160) if batched else VadOptions()


@pytest.fixture(scope="module")
def sonnet(real_speech: dict[str, tuple[Path, str]]) -> np.ndarray:
    return decode_audio(real_speech["sonnet001"][0], max_file_mb=10)


@pytest.fixture(scope="module")
def twenty_minutes(sonnet: np.ndarray) -> np.ndarray:
    return _recording(sonnet, 20)


@pytest.fixture(scope="module")
def twenty_minutes_probs(twenty_minutes: np.ndarray) -> dict[str, np.ndarray]:
    """Speech probabilities of the 20-minute recording: the library's one pass, and in pieces on 1 and 3 threads."""
    padded = _padded(twenty_minutes)
    return {
        "library": get_vad_model()(padded.copy()),  # it zeroes the tail of what it is given
        "1 thread": PiecewiseSilero(threads=1)(padded),
        "3 threads": PiecewiseSilero(threads=3)(padded),
    }


def test_a_recording_of_one_piece_gets_the_librarys_probabilities_bit_for_bit(sonnet: np.ndarray) -> None:
    eleven_minutes = _padded(_recording(sonnet, 11))
    assert len(piece_bounds(eleven_minutes.shape[0] // FRAME_SAMPLES, 18750, 5000)) == 1
    assert np.array_equal(PiecewiseSilero(threads=3)(eleven_minutes), get_vad_model()(eleven_minutes.copy()))


def test_ranges_are_the_librarys_on_a_short_file(long_pauses: np.ndarray) -> None:
    for batched in (True, False):
        library = _in_seconds(get_speech_timestamps(long_pauses, _options(batched), sampling_rate=SAMPLE_RATE))
        assert speech_ranges(long_pauses, batched=batched, threads=2) == library


def test_pieces_give_the_same_probabilities_on_any_thread_count(twenty_minutes_probs) -> None:
    assert np.array_equal(twenty_minutes_probs["1 thread"], twenty_minutes_probs["3 threads"])


def test_pieces_match_the_librarys_single_pass_closely(twenty_minutes: np.ndarray, twenty_minutes_probs) -> None:
    frames = _padded(twenty_minutes).shape[0] // FRAME_SAMPLES
    assert len(piece_bounds(frames, PiecewiseSilero().piece_frames, PiecewiseSilero().warmup_frames)) == 2
    library, pieces = twenty_minutes_probs["library"], twenty_minutes_probs["1 thread"]
    assert not np.array_equal(pieces, library)  # the second piece did not carry the first one's state...
    assert np.abs(pieces - library).max() < 0.01  # ...but forgot where it started (measured: 0.0015)
    for batched in (True, False):
        ours = _timestamps_with(lambda _: pieces)(twenty_minutes, _options(batched))
        theirs = _timestamps_with(lambda _: library)(twenty_minutes, _options(batched))
        assert len(ours) == len(theirs) > 20  # measured: the same ranges, to the sample
        for a, b in zip(ours, theirs):
            assert abs(a["start"] - b["start"]) <= 0.1 * SAMPLE_RATE and abs(a["end"] - b["end"]) <= 0.1 * SAMPLE_RATE


def test_speech_ranges_on_several_threads_are_those_of_one(twenty_minutes: np.ndarray, twenty_minutes_probs) -> None:
    one_thread = _timestamps_with(lambda _: twenty_minutes_probs["1 thread"])(twenty_minutes, _options(True))
    assert speech_ranges(twenty_minutes, batched=True, threads=2) == _in_seconds(one_thread)


def test_the_model_input_is_the_librarys_whatever_the_cut(long_pauses: np.ndarray) -> None:
    """Pieces build each frame's context from the frame before it, as SileroVADModel does over the whole audio."""

    class RecordingSession:  # stands in for onnxruntime's session: keeps what the library feeds it
        def __init__(self) -> None:
            self.fed: list[np.ndarray] = []

        def run(self, _names: None, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
            self.fed.append(feeds["input"].copy())
            return np.zeros(feeds["input"].shape[0], dtype=np.float32), feeds["h"], feeds["c"]

    audio = long_pauses[: 40 * FRAME_SAMPLES + 100]
    library = SileroVADModel.__new__(SileroVADModel)  # its own __call__, without loading onnxruntime's session
    library.session = session = RecordingSession()
    library(_padded(audio))
    cuts = [0, 1, 17, 30, 41]
    for padded in (Padded(audio, 41 * FRAME_SAMPLES), Padded(_padded(audio), 41 * FRAME_SAMPLES)):
        ours = np.concatenate([model_input(padded, lo, hi) for lo, hi in zip(cuts, cuts[1:])])
        assert ours.shape == (41, 576) and np.array_equal(ours, np.concatenate(session.fed))


def test_the_model_is_given_the_recording_itself_not_a_padded_copy(long_pauses: np.ndarray) -> None:
    """get_speech_timestamps pads the recording for its model: ours notes the padding instead of copying it (a
    two-hour recording's copy is 460 MB), and gets the library's probabilities and ranges from it."""
    given: list[object] = []

    def model(audio: Padded) -> np.ndarray:
        given.append(audio)
        return PiecewiseSilero()(audio)

    ours = _timestamps_with(model)(long_pauses, _options(True))
    assert len(given) == 1 and isinstance(given[0], Padded)
    assert given[0].audio is long_pauses and given[0].length == _padded(long_pauses).shape[0]
    assert ours == get_speech_timestamps(long_pauses, _options(True), sampling_rate=SAMPLE_RATE)
    assert np.array_equal(PiecewiseSilero()(given[0]), get_vad_model()(_padded(long_pauses)))


def test_the_layout_depends_on_the_length_only_and_every_piece_is_the_same_work() -> None:
    piece, warmup = 18750, 5000
    assert piece_bounds(1, piece, warmup) == [(0, 1)]
    longest_single = int(1.5 * piece) + warmup - 1  # under 1.5 pieces and a warm-up: one piece
    assert piece_bounds(longest_single, piece, warmup) == [(0, longest_single)]
    for frames in (longest_single + 1, 37653, 225001, 10**6 + 7):
        pieces = piece_bounds(frames, piece, warmup)
        assert pieces[0][0] == 0 and pieces[-1][1] == frames and all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
        work = [hi - max(0, lo - warmup) for lo, hi in pieces]
        assert max(work) - min(work) <= 1 and all(0.66 * piece < hi - lo < 1.5 * piece for lo, hi in pieces[1:])


def test_silence_over_several_pieces_has_no_speech() -> None:
    silence = _padded(np.zeros(70 * SAMPLE_RATE, dtype=np.float32))
    model = PiecewiseSilero(threads=3, piece_s=20.0, warmup_s=5.0)
    assert len(piece_bounds(silence.shape[0] // FRAME_SAMPLES, model.piece_frames, model.warmup_frames)) == 3
    assert _timestamps_with(model)(silence, _options(True)) == []


def test_progress_moves_block_by_block_and_leaves_the_end_to_the_stage() -> None:
    seventy_s = np.zeros(70 * SAMPLE_RATE, dtype=np.float32)  # 2188 frames: 3 runs of at most 1000
    for threads, piece_s, warmup_s in ((1, PIECE_S, WARMUP_S), (3, 20.0, 5.0)):
        fractions: list[float] = []
        model = PiecewiseSilero(threads=threads, piece_s=piece_s, warmup_s=warmup_s, on_progress=fractions.append)
        assert _timestamps_with(model)(seventy_s, _options(True)) == []
        assert len(fractions) == 3 and fractions == sorted(fractions) and fractions[0] > 0
        assert fractions[-1] == pytest.approx(0.99)
    fractions = []
    speech_ranges(seventy_s, batched=True, on_progress=fractions.append)
    assert len(fractions) == 3 and fractions[-1] == pytest.approx(0.99)


def test_calls_on_other_threads_and_the_library_itself_keep_their_own_model(long_pauses: np.ndarray) -> None:
    """Each call's model is its own (a copy of the library's function), so concurrent users are not mixed up."""
    silence = np.zeros(20 * SAMPLE_RATE, dtype=np.float32)
    expected = speech_ranges(long_pauses, batched=True)
    library = get_speech_timestamps(long_pauses, _options(True), sampling_rate=SAMPLE_RATE)
    with ThreadPoolExecutor(3) as pool:
        ours = [pool.submit(speech_ranges, audio, batched=True, threads=2) for audio in [long_pauses, silence] * 4]
        theirs = [pool.submit(get_speech_timestamps, long_pauses, _options(True), sampling_rate=SAMPLE_RATE)
                  for _ in range(4)]  # fmt: skip
        assert [f.result() for f in ours] == [expected, []] * 4
        assert all(f.result() == library for f in theirs)
    assert faster_whisper.vad.get_vad_model is get_vad_model


def test_a_job_uses_its_slots_threads_and_its_lent_slots_on_the_cores_there_are() -> None:
    cores = vad_threads(0)
    assert cores >= 1
    assert vad_threads(1) == 1
    assert vad_threads(1, slots=2) == min(2, cores)
    assert vad_threads(0, slots=4) == cores
    assert vad_threads(cores + 5) == cores
