"""jobs/inputs.py: inputs are checked before anything is recorded or started."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scribefleet.errors import InputNotFound
from scribefleet.jobs.inputs import check_inputs


def test_every_missing_input_is_named_up_front(tmp_path: Path, speech: dict[str, Path]) -> None:
    good = tmp_path / "good.wav"
    shutil.copy(speech["en01.wav"], good)
    with pytest.raises(InputNotFound) as info:
        check_inputs([str(good), str(tmp_path / "nope.wav"), str(tmp_path / "*.mp4"), "True"], out_dir=tmp_path / "out")
    err = info.value
    assert err.code == "INPUT_NOT_FOUND" and "nothing was started" in err.message and "--allow-missing" in err.message
    assert sorted(Path(p).name for p in err.details["missing"]) == ["*.mp4", "True", "nope.wav"]


def test_allow_missing_keeps_them_as_missing_inputs(tmp_path: Path, speech: dict[str, Path]) -> None:
    good = tmp_path / "good.wav"
    shutil.copy(speech["en01.wav"], good)
    files = check_inputs([str(good), str(tmp_path / "nope.wav")], out_dir=tmp_path / "out", allow_missing=True)
    assert [(f.path.name, f.missing) for f in files] == [("good.wav", False), ("nope.wav", True)]


def test_a_folder_without_media_and_a_non_file_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not media")
    with pytest.raises(InputNotFound, match="no media found"):
        check_inputs([str(empty)], out_dir=tmp_path / "out")
    with pytest.raises(InputNotFound, match="is not a file"):
        check_inputs([str(empty)], out_dir=tmp_path / "out", single_file=True)


def test_links_in_a_folder_to_elsewhere_keep_their_names_and_a_loop_is_walked_once(
    tmp_path: Path, speech: dict[str, Path]
) -> None:
    """A folder of links (to recordings kept elsewhere, to a folder elsewhere, back up the tree) is walked as
    the user sees it: each file once, its outputs named by the link."""
    elsewhere = tmp_path / "archive"
    (elsewhere / "day1").mkdir(parents=True)
    shutil.copy(speech["en01.wav"], elsewhere / "talk.wav")
    shutil.copy(speech["en01.wav"], elsewhere / "day1" / "call.wav")
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    shutil.copy(speech["en01.wav"], inbox / "own.wav")
    (inbox / "linked talk.wav").symlink_to(elsewhere / "talk.wav")
    (inbox / "days").symlink_to(elsewhere / "day1", target_is_directory=True)
    (inbox / "sub" / "up").symlink_to(inbox, target_is_directory=True)  # a loop

    files = check_inputs([str(inbox)], out_dir=tmp_path / "out")
    assert sorted(str(f.rel) for f in files) == ["days/call.wav", "linked talk.wav", "own.wav"]
    assert {f.path for f in files} == {inbox / "own.wav", elsewhere / "talk.wav", elsewhere / "day1" / "call.wav"}
    assert {f.out_stem for f in files} == {tmp_path / "out" / "days" / "call", tmp_path / "out" / "linked talk",
                                           tmp_path / "out" / "own"}  # fmt: skip


def test_a_glob_from_home_mirrors_its_folders(tmp_path: Path, speech: dict[str, Path], monkeypatch) -> None:
    """'~/media/**/*.wav' (quoted, so the shell left the ~ alone): outputs keep the folders under ~/media."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "media" / "sub").mkdir(parents=True)
    shutil.copy(speech["en01.wav"], tmp_path / "media" / "a.wav")
    shutil.copy(speech["en02.wav"], tmp_path / "media" / "sub" / "b.wav")
    files = check_inputs(["~/media/**/*.wav"], out_dir=tmp_path / "out")
    assert sorted(str(f.rel) for f in files) == ["a.wav", "sub/b.wav"]


def test_names_at_the_file_systems_limit_get_outputs_that_fit(tmp_path: Path, speech: dict[str, Path]) -> None:
    """A file named at the 255-byte limit gave `x.json` (256 bytes) and two stems at the limit differing only in
    their extension were cut to one name: each input keeps outputs of its own, every name at most 255 bytes."""
    from scribefleet.jobs.inputs import InputFile, assign_outputs

    root = tmp_path / "in"
    root.mkdir()
    names = ["x" * 251 + ".m4a", "y" * 251 + ".wav", "y" * 251 + ".mp3"]
    for name in names:
        shutil.copy(speech["en01.wav"], root / name)
    files = check_inputs([str(root)], out_dir=tmp_path / "out")
    outputs = [p for f in files for p in f.outputs(("srt", "json")).values()]
    assert len(set(outputs)) == 6 and all(len(p.name.encode()) <= 255 for p in outputs)
    assert (tmp_path / "out" / ("x" * 250 + ".json")) in outputs
    # a title of 120 Chinese characters (360 bytes), twice from two URLs
    urls = [InputFile(path=Path(), rel=Path("会" * 120), url=f"https://example.com/{i}") for i in (1, 2)]
    assign_outputs(urls, tmp_path / "out")
    stems = [f.out_stem.name for f in urls]
    assert len(set(stems)) == 2 and all(len(f"{s}.json".encode()) <= 255 and s.startswith("会" * 70) for s in stems)


def test_two_folders_holding_the_same_relative_name_get_outputs_of_their_own(tmp_path: Path, speech: dict[str, Path]) -> None:
    # 'transcribe x y' with x/a.wav and y/a.wav gave both OUT/a.wav.srt: one transcript silently overwrote the other
    for folder, fixture in (("x", "en01.wav"), ("y", "en02.wav")):
        (tmp_path / folder).mkdir()
        shutil.copy(speech[fixture], tmp_path / folder / "a.wav")
    shutil.copy(speech["en03.wav"], tmp_path / "y" / "a.flac")
    out = tmp_path / "out"
    files = check_inputs([str(tmp_path / "x"), str(tmp_path / "y")], out_dir=out)
    stems = {f.path.relative_to(tmp_path).as_posix(): f.out_stem for f in files}
    assert len(set(stems.values())) == 3, stems
    assert stems["y/a.flac"] == out / "a.flac"
    assert {s.name[:len("a.wav [")] for s in (stems["x/a.wav"], stems["y/a.wav"])} == {"a.wav ["}
    again = check_inputs([str(tmp_path / "x"), str(tmp_path / "y")], out_dir=out)
    assert {f.path.relative_to(tmp_path).as_posix(): f.out_stem for f in again} == stems, "names must be stable"
