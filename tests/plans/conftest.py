"""Plan-test fixtures: write a plan file into a temp folder, a folder of media files, expect PlanInvalid."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from scribefleet.errors import PlanInvalid
from scribefleet.plans import load_plan

MEDIA_FILES = ("intro.wav", "talk.mp3", "q-and-a.flac")


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """write(text, name='plan.yaml') -> path of the dedented text, saved in tmp_path."""

    def write(text: str, name: str = "plan.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def media(tmp_path: Path) -> Path:
    """tmp_path/media holding three (empty) media files and a notes.txt."""
    folder = tmp_path / "media"
    folder.mkdir()
    for name in (*MEDIA_FILES, "notes.txt"):
        (folder / name).write_bytes(b"")
    return folder


@pytest.fixture
def invalid() -> Callable[..., PlanInvalid]:
    """invalid(path, **load_plan kwargs) -> the PlanInvalid that loading it raises."""

    def invalid(path: Path, **kwargs: object) -> PlanInvalid:
        with pytest.raises(PlanInvalid) as info:
            load_plan(path, **kwargs)  # type: ignore[arg-type]
        return info.value

    return invalid


@pytest.fixture
def problem_at() -> Callable[[PlanInvalid, int], dict[str, object]]:
    """problem_at(err, line) -> the one problem of `err` reported on `line`."""

    def problem_at(err: PlanInvalid, line: int) -> dict[str, object]:
        found = [p for p in err.details["problems"] if p["line"] == line]
        assert len(found) == 1, (line, err.details["problems"])
        return found[0]

    return problem_at
