"""Non-speech test audio made with numpy (fixed seeds): silence, noise and music-like tones.

Whisper is known to write text on such audio ("Thank you.", "Thanks for
watching!", a line repeated until the window ends); the guards in
pipeline/guards.py must keep every one of these at zero words.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from scribefleet.pipeline.media import SAMPLE_RATE

SECONDS = 30.0


def _seconds(duration_s: float) -> np.ndarray:
    return np.arange(int(duration_s * SAMPLE_RATE)) / SAMPLE_RATE


def _scale(audio: np.ndarray, rms: float) -> np.ndarray:
    return (audio * (rms / max(float(np.sqrt(np.mean(audio**2))), 1e-12))).astype(np.float32)


def silence(duration_s: float = SECONDS) -> np.ndarray:
    return np.zeros(int(duration_s * SAMPLE_RATE), dtype=np.float32)


def white_noise(duration_s: float = SECONDS, rms: float = 0.05, seed: int = 1) -> np.ndarray:
    return _scale(np.random.default_rng(seed).standard_normal(int(duration_s * SAMPLE_RATE)), rms)


def pink_noise(duration_s: float = SECONDS, rms: float = 0.05, seed: int = 2) -> np.ndarray:
    """1/f noise: white noise shaped in the frequency domain."""
    n = int(duration_s * SAMPLE_RATE)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0
    return _scale(np.fft.irfft(spectrum, n), rms)


def _tone(freq_hz: float, t: np.ndarray) -> np.ndarray:
    """A note with a few harmonics, like a plucked or bowed instrument rather than a pure sine."""
    return sum(np.sin(2 * np.pi * freq_hz * k * t) / k for k in (1, 2, 3))


def _envelope(n: int, attack_s: float = 0.02, release_s: float = 0.1) -> np.ndarray:
    env = np.ones(n)
    a, r = int(attack_s * SAMPLE_RATE), int(release_s * SAMPLE_RATE)
    env[:a] = np.linspace(0, 1, a)
    env[n - r :] = np.linspace(1, 0, r)
    return env


def chords(duration_s: float = SECONDS, rms: float = 0.1) -> np.ndarray:
    """A I-V-vi-IV progression in C, two seconds a chord."""
    progression = [(261.63, 329.63, 392.0), (196.0, 246.94, 293.66), (220.0, 261.63, 329.63), (174.61, 220.0, 261.63)]
    t = _seconds(2.0)
    bars = [sum(_tone(f, t) for f in chord) * _envelope(t.size) for chord in progression]
    audio = np.concatenate(bars * int(np.ceil(duration_s / (2.0 * len(bars)))))
    return _scale(audio[: int(duration_s * SAMPLE_RATE)], rms)


def melody(duration_s: float = SECONDS, rms: float = 0.1, seed: int = 3) -> np.ndarray:
    """Sine tones of a C major scale, a quarter second to a second each, in a seeded random order."""
    rng = np.random.default_rng(seed)
    scale = 261.63 * 2 ** (np.array([0, 2, 4, 5, 7, 9, 11, 12]) / 12)
    notes: list[np.ndarray] = []
    total = 0
    while total < duration_s * SAMPLE_RATE:
        t = _seconds(float(rng.choice([0.25, 0.5, 0.5, 1.0])))
        notes.append(np.sin(2 * np.pi * float(rng.choice(scale)) * t) * _envelope(t.size))
        total += t.size
    return _scale(np.concatenate(notes)[: int(duration_s * SAMPLE_RATE)], rms)


#: name -> 30 s of audio without a word in it
FIXTURES = {
    "silence": silence,
    "hiss": lambda: white_noise(rms=0.003),  # a quiet room: tiny.en wrote " ." lines on it without VAD
    "white_noise": white_noise,
    "pink_noise": pink_noise,
    "chords": chords,
    "melody": melody,
}


def write_wav(path: Path, audio: np.ndarray) -> Path:
    """16 kHz mono 16-bit wav of float audio in [-1, 1]."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
    return path
