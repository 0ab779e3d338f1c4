"""Elapsed time and ETA of a running file and of a batch: audio seconds done over the rate so far.

One computation for everyone who shows progress: the job view (jobs/views.py,
so `status`, GET /api/jobs, the SSE streams and the UI) and the terminal
progress of `transcribe` / `plan run` (cli/progress.py).

A file's audio fraction done is 0 before its transcribe stage (fetch, decode,
vad), the transcribe stage's progress while it runs (a slot reports the end of
the last decoded segment over the audio's length: it moves once per decoded
batch of clips), and 1 after it. Its rate is audio seconds done over the
seconds elapsed since the file started (decode, VAD and the model load count,
so the first ETA errs long), and its ETA is the audio left over that rate.
A task of another kind (shell, llm) has only its own progress as the fraction.

An ETA is an extrapolation, so none is told (None, shown "?") until there is
something to extrapolate from (`has_evidence`): at least `MIN_EVIDENCE_AUDIO_S`
of audio transcribed, one Whisper input's worth, or a finished file (in a
batch's sum); where the audio's length is unknown (other kinds, files counted
instead of seconds), `MIN_EVIDENCE_FRACTION` of the work. Before that the
fraction done is a first segment's end while the first batch of clips still
decodes, and a rate from it is noise (an 11-minute file once showed "transcribe
0%, ETA 1h55m" ten seconds in). This is the one rule: the terminal, the
progress log lines, `status`, the API's `etaS` (and its streams) and the UI all
take their ETA from here.

A batch adds it up: its audio is every live file's audio (its header's length
from when its task was made, then its decoded one; a file of unknown length
counts as the mean of those known; with none known, every file counts the same), its rate the audio done over the seconds since its first file
started, and its ETA the audio left over that rate. Failed, canceled and
skipped files are out of the sums.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: stages of a transcribe task before any audio is transcribed, and those after it that end quickly
BEFORE_AUDIO = frozenset({None, "fetch", "decode", "vad", "queued_remote"})
AFTER_AUDIO = frozenset({"render", "publish"})

#: the least audio transcribed that an ETA is extrapolated from: one Whisper input (30 s of speech)
MIN_EVIDENCE_AUDIO_S = 30.0
#: the least part of the work done that an ETA is extrapolated from where the audio's length is unknown
MIN_EVIDENCE_FRACTION = 0.05


def audio_fraction(kind: str, stage: str | None, stage_progress: float, *, complete: bool = False) -> float | None:
    """How much of a task's audio is done (0..1); None where no ETA can be told (diarization, after the audio)."""
    if complete:
        return 1.0
    if kind != "transcribe":
        return min(1.0, max(0.0, stage_progress))
    if stage in BEFORE_AUDIO:
        return 0.0
    if stage == "transcribe":
        return min(1.0, max(0.0, stage_progress))
    return 1.0 if stage in AFTER_AUDIO else None


def has_evidence(fraction: float, audio_s: float | None = None, *, files_done: int = 0) -> bool:
    """Whether `fraction` of the work (of `audio_s` seconds, where known) is enough to tell an ETA from."""
    if files_done > 0 or fraction >= 1.0:
        return True
    if audio_s and audio_s > 0:
        return fraction * audio_s >= MIN_EVIDENCE_AUDIO_S
    return fraction >= MIN_EVIDENCE_FRACTION


def eta_s(elapsed_s: float, fraction: float | None, audio_s: float | None = None, *, files_done: int = 0) -> float | None:
    """Seconds left: the audio left over the rate so far (audio done / elapsed); None without evidence yet.

    `files_done`: files of a batch already finished (evidence of the rate whatever the audio done).
    """
    if fraction is None or fraction <= 0.0 or elapsed_s <= 0.0:
        return None
    if fraction >= 1.0:
        return 0.0
    if not has_evidence(fraction, audio_s, files_done=files_done):
        return None
    total = audio_s if audio_s and audio_s > 0 else 1.0  # without the length, a fraction of one
    done = fraction * total
    return (total - done) / (done / elapsed_s)


@dataclass(frozen=True)
class FileProgress:
    """What the batch sum needs of one file."""

    status: str  # queued, running, complete, failed, canceled, skipped (a remote job's queued_remote: queued)
    fraction: float | None  # audio_fraction(); None: unknown, counted as not done
    audio_s: float | None  # its audio's length, once known


@dataclass(frozen=True)
class BatchTimes:
    """A batch's audio, the part of it done, and its ETA (seconds; None until there is evidence: `has_evidence`)."""

    files: int
    files_done: int
    audio_s: float | None
    audio_done_s: float | None
    elapsed_s: float | None
    eta_s: float | None

    def as_api_json(self) -> dict[str, object]:
        return {
            "files": self.files, "filesDone": self.files_done, "audioS": _round(self.audio_s),
            "audioDoneS": _round(self.audio_done_s), "elapsedS": whole(self.elapsed_s), "etaS": whole(self.eta_s),
        }  # fmt: skip


_GONE = frozenset({"failed", "canceled", "skipped"})


def batch_progress(files: Iterable[FileProgress], elapsed_s: float | None) -> BatchTimes:
    """The batch sum of its files (see the module docstring)."""
    live = [f for f in files if f.status not in _GONE]
    known = [f.audio_s for f in live if f.audio_s]
    by_time = bool(known)
    mean = sum(known) / len(known) if known else 1.0
    total = done = 0.0
    for f in live:
        length = (f.audio_s or mean) if by_time else 1.0
        fraction = 1.0 if f.status == "complete" else (f.fraction or 0.0)
        total += length
        done += length * fraction
    files_done = sum(f.status == "complete" for f in live)
    eta = None
    if elapsed_s is not None and live:
        eta = 0.0 if done >= total else eta_s(elapsed_s, done / total, total if by_time else None, files_done=files_done)
    return BatchTimes(
        files=len(live), files_done=files_done,
        audio_s=total if by_time else None, audio_done_s=done if by_time else None, elapsed_s=elapsed_s, eta_s=eta,
    )  # fmt: skip


def whole(seconds: float | None) -> int | None:
    """Seconds to the whole second (what is shown, and what a stream compares to send a change)."""
    return None if seconds is None else int(round(seconds))


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def clock(seconds: float | None) -> str:
    """1h02m, 3m05s, 42s; "?" for unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
