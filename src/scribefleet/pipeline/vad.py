"""Voice activity detection: where in the audio someone speaks (Silero VAD, bundled with faster-whisper).

The speech ranges serve two purposes: long files are cut into windows at
silences between them (so no word is split across windows), and in batched
mode they are the clips Whisper decodes. The VAD settings follow the decoding
mode faster-whisper itself would use, so scribefleet's batched/sequential
transcripts match what BatchedInferencePipeline / WhisperModel give:

* batched: short ranges (<= 30 s, split at silences of 160 ms), one per clip;
* sequential: faster-whisper's default VadOptions (ranges merge across pauses
  shorter than 2 s).
"""

from __future__ import annotations

import numpy as np

from scribefleet.pipeline.media import SAMPLE_RATE

#: whisper decodes 30 s at a time; batched clips never exceed it
CLIP_MAX_S = 30.0
_BATCHED_MIN_SILENCE_MS = 160


def speech_ranges(audio: np.ndarray, *, batched: bool) -> list[tuple[float, float]]:
    """(start_s, end_s) of each stretch of speech in 16 kHz mono `audio`, in order."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    if audio.size == 0:
        return []
    if batched:
        options = VadOptions(max_speech_duration_s=CLIP_MAX_S, min_silence_duration_ms=_BATCHED_MIN_SILENCE_MS)
    else:
        options = VadOptions()
    stamps = get_speech_timestamps(audio, options, sampling_rate=SAMPLE_RATE)
    return [(round(s["start"] / SAMPLE_RATE, 3), round(s["end"] / SAMPLE_RATE, 3)) for s in stamps]
