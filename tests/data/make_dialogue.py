"""Makes the two-voice recordings of the diarization tests and bench with espeak-ng (and their truth).

    python3 tests/data/make_dialogue.py      # needs espeak-ng; writes into tests/data/

* dialogue.flac: two clearly different espeak voices (a male `en+m3` and a
  female `en+f4`) taking turns, with pauses of 0.6-1.2 s between turns and
  one speaker change without a pause.
* dialogue.json: the truth, {"turns": [[start_s, end_s, voice], ...]}, the
  span of each utterance where the waveform is above the noise floor.
* enroll/<name>.flac: one clip per voice with other sentences, named as the
  enrollment folder of `speaker_names` wants it (file stem = the name).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RATE = 16000
VOICES = {"en+m3": "Marcus", "en+f4": "Fiona"}
TURNS = [
    ("en+m3", "Good morning. Did you get a chance to look at the budget for next year?", 0.8),
    ("en+f4", "I did. The travel costs are much higher than last year, and nobody told me why.", 1.0),
    ("en+m3", "We opened two new offices, so people fly more often now.", 0.6),
    ("en+f4", "That makes sense. Can we move some meetings to video calls instead?", 1.2),
    ("en+m3", "Yes, I will ask the team leads to try that for a month.", 0.7),
    ("en+f4", "Great. Please send me the numbers when you have them.", 0.0),  # no pause: a direct change
    ("en+m3", "I will. Let us talk again on Thursday afternoon.", 0.9),
    ("en+f4", "Thursday works for me. Have a good day.", 0.8),
]
ENROLL = {
    "en+m3": "My name is Marcus and I work in the planning department on the second floor.",
    "en+f4": "Hello, this is Fiona speaking. I look after the accounts of our European customers.",
}


def speak(voice: str, text: str) -> np.ndarray:
    """espeak-ng's rendering of `text` as 16 kHz float32 samples."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
        subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out)], check=True)
        with wave.open(str(out)) as wav:
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    return samples.astype(np.float32) / 32767.0


def trim(audio: np.ndarray) -> np.ndarray:
    """The utterance without espeak's leading and trailing silence."""
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    return audio[loud[0] : loud[-1] + 1]


def write_flac(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "x.wav"
        with wave.open(str(wav_path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(RATE)
            wav.writeframes(np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
        subprocess.run(["sox", str(wav_path), str(path)], check=True)


def main() -> None:
    parts = [np.zeros(int(0.5 * RATE), dtype=np.float32)]
    at = parts[0].size
    turns = []
    for voice, text, pause_s in TURNS:
        speech = trim(speak(voice, text))
        turns.append([round(at / RATE, 3), round((at + speech.size) / RATE, 3), VOICES[voice]])
        silence = np.zeros(int(pause_s * RATE), dtype=np.float32)
        parts += [speech, silence]
        at += speech.size + silence.size
    parts.append(np.zeros(int(0.5 * RATE), dtype=np.float32))
    write_flac(HERE / "dialogue.flac", np.concatenate(parts))
    rows = ",\n".join(f"  {json.dumps(turn)}" for turn in turns)
    (HERE / "dialogue.json").write_text(f'{{"turns": [\n{rows}\n]}}\n')
    for voice, text in ENROLL.items():
        write_flac(HERE / "enroll" / f"{VOICES[voice]}.flac", trim(speak(voice, text)))


if __name__ == "__main__":
    main()
