"""The aggregate kind: transcripts and text files combined into txt, md and json, atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scribefleet.config import Settings
from scribefleet.errors import InputNotFound, UsageError
from scribefleet.worker.aggregate import run_aggregate
from scribefleet.worker.kinds import KINDS, TaskContext


def _ctx(tmp_path: Path, settings: Settings, seen: list[tuple[str, float]]) -> TaskContext:
    return TaskContext(
        task_id="t1", slot_name="cpu0", device="cpu", cpu_threads=1, log_path=tmp_path / "t1.log",
        settings=settings, progress=lambda stage, fraction, extra=None: seen.append((stage, fraction)),
    )  # fmt: skip


def _whisper(path: Path, text: str, language: str = "en", duration: float = 2.5) -> str:
    doc = {"text": text, "language": language, "duration": duration,
           "segments": [{"id": 0, "start": 0.0, "end": duration, "text": text}]}  # fmt: skip
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Any]:
    """Two transcribed items (json + txt + srt) and one item with only subtitles."""
    d = tmp_path / "t"
    d.mkdir()
    items = []
    for stem, text in (("fox", " The quick brown fox."), ("café", " Bonjour tout le monde.")):
        files = {"json": _whisper(d / f"{stem}.json", text, "fr" if stem == "café" else "en"),
                 "txt": str(d / f"{stem}.txt")}  # fmt: skip
        (d / f"{stem}.txt").write_text("txt is not read when the json is there\n")
        items.append({"name": f"{stem}.wav", "input": f"/media/{stem}.wav", "files": files})
    (d / "subs.srt").write_text("1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n00:00:01,500 --> 00:00:03,000\nGeneral Kenobi.\n")
    items.append({"name": "subs.wav", "input": None, "files": {"srt": str(d / "subs.srt"), "json": str(d / "gone.json")}})
    return {"items": items, "dir": d}


def test_aggregate_is_a_registered_kind() -> None:
    assert KINDS["aggregate"] is run_aggregate


def test_json_index_has_one_entry_per_item_and_all_text(tmp_path: Path, settings: Settings, sources: dict[str, Any]) -> None:
    seen: list[tuple[str, float]] = []
    out = tmp_path / "deep" / "index.json"
    result = run_aggregate({"output": str(out), "format": "json", "items": sources["items"]}, _ctx(tmp_path, settings, seen))
    doc = json.loads(out.read_text())
    assert [i["name"] for i in doc["items"]] == ["fox.wav", "café.wav", "subs.wav"]
    fox, cafe, subs = doc["items"]
    assert (fox["text"], fox["language"], fox["duration_s"]) == ("The quick brown fox.", "en", 2.5)
    assert fox["input"] == "/media/fox.wav" and set(fox["outputs"]) == {"json", "txt"}
    assert cafe["language"] == "fr"
    assert subs["text"] == "Hello there. General Kenobi." and subs["language"] is None
    assert set(subs["outputs"]) == {"srt"}, "a file that does not exist is not listed as an output"
    assert doc["text"] == "The quick brown fox.\n\nBonjour tout le monde.\n\nHello there. General Kenobi."
    assert result["outputs"] == {"json": str(out)} and result["items"] == 3
    assert seen[-1] == ("aggregate", 1.0)
    assert [p.name for p in out.parent.iterdir()] == ["index.json"], "no temporary file is left behind"


def test_txt_and_md_have_a_section_per_item(tmp_path: Path, settings: Settings, sources: dict[str, Any]) -> None:
    txt, md = tmp_path / "all.txt", tmp_path / "all.md"
    ctx = _ctx(tmp_path, settings, [])
    run_aggregate({"output": str(txt), "format": "txt", "items": sources["items"]}, ctx)
    run_aggregate({"output": str(md), "format": "md", "title": "Digest", "items": sources["items"]}, ctx)
    assert txt.read_text() == (
        "== fox.wav ==\n\nThe quick brown fox.\n\n== café.wav ==\n\nBonjour tout le monde.\n\n"
        "== subs.wav ==\n\nHello there. General Kenobi.\n"
    )
    assert md.read_text().startswith("# Digest\n\n## fox.wav\n\nThe quick brown fox.\n\n## café.wav\n")


def test_plain_inputs_are_read_as_text_and_other_json_as_its_text(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "a.md").write_text("- point one\n- point two\n")
    (tmp_path / "b.tsv").write_text("start\tend\ttext\n0\t1000\tFirst words.\n1000\t2000\tSecond words.\n")
    (tmp_path / "c.json").write_text('{"not": "a transcript"}')
    out = tmp_path / "x.json"
    spec = {"output": str(out), "format": "json", "inputs": [str(tmp_path / n) for n in ("a.md", "b.tsv", "c.json")]}
    run_aggregate(spec, _ctx(tmp_path, settings, []))
    texts = [i["text"] for i in json.loads(out.read_text())["items"]]
    assert texts == ["- point one\n- point two", "First words. Second words.", '{"not": "a transcript"}']


def test_a_missing_input_fails_with_input_not_found_naming_it(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "here.txt").write_text("here")
    out = tmp_path / "out.txt"
    spec = {"output": str(out), "format": "txt", "inputs": [str(tmp_path / "here.txt"), str(tmp_path / "gone.txt")]}
    with pytest.raises(InputNotFound) as info:
        run_aggregate(spec, _ctx(tmp_path, settings, []))
    assert info.value.code == "INPUT_NOT_FOUND" and "gone.txt" in info.value.message
    assert not out.exists(), "nothing is written when an input is missing"


def test_a_spec_with_nothing_to_combine_is_refused(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(UsageError):
        run_aggregate({"output": str(tmp_path / "o.txt"), "format": "txt"}, _ctx(tmp_path, settings, []))
    with pytest.raises(UsageError):
        run_aggregate({"output": str(tmp_path / "o.doc"), "format": "doc", "inputs": ["x"]}, _ctx(tmp_path, settings, []))


def test_who_spoke_is_kept_from_every_format(tmp_path: Path, settings: Settings) -> None:
    """A diarized transcript in each format gives the same turns: `[speaker] text`, one line per turn."""
    d = tmp_path / "d"
    d.mkdir()
    cues = [(0.0, 1.0, "Hello there.", "Ada"), (1.0, 2.0, "How are you?", "Ada"), (2.0, 3.5, "Fine, thanks.", "SPEAKER_01")]
    segments = [{"id": i, "start": s, "end": e, "text": f" {t}", "speaker": who} for i, (s, e, t, who) in enumerate(cues)]
    (d / "a.json").write_text(json.dumps({"text": " ".join(c[2] for c in cues), "language": "en", "duration": 3.5,
                                          "segments": segments, "speakers": ["Ada", "SPEAKER_01"]}))
    (d / "b.vtt").write_text("WEBVTT\n\n" + "".join(
        f"00:00:0{int(s)}.000 --> 00:00:0{int(e)}.000\n<v {who}>{t}\n\n" for s, e, t, who in cues))
    (d / "c.srt").write_text("".join(
        f"{i + 1}\n00:00:0{int(s)},000 --> 00:00:0{int(e)},000\n[{who}] {t}\n\n" for i, (s, e, t, who) in enumerate(cues)))
    (d / "d.tsv").write_text("start\tend\ttext\tspeaker\n" + "".join(
        f"{int(s * 1000)}\t{int(e * 1000)}\t{t}\t{who}\n" for s, e, t, who in cues))
    (d / "e.txt").write_text("".join(f"[{who}] {t}\n" for _, _, t, who in cues))
    out = tmp_path / "all.json"
    inputs = [str(d / n) for n in ("a.json", "b.vtt", "c.srt", "d.tsv")]
    run_aggregate({"output": str(out), "format": "json", "inputs": inputs}, _ctx(tmp_path, settings, []))
    turns = "[Ada] Hello there. How are you?\n[SPEAKER_01] Fine, thanks."
    items = json.loads(out.read_text())["items"]
    assert [i["text"] for i in items] == [turns] * 4
    assert all(i["speakers"] == ["Ada", "SPEAKER_01"] for i in items)
    txt = tmp_path / "all.txt"
    run_aggregate({"output": str(txt), "format": "txt", "inputs": [str(d / "e.txt")]}, _ctx(tmp_path, settings, []))
    assert "[Ada] Hello there.\n[Ada] How are you?\n[SPEAKER_01] Fine, thanks." in txt.read_text()
    # undiarized transcripts read as before, with no speakers
    plain = tmp_path / "plain.json"
    _whisper(d / "p.json", " Just me.")
    run_aggregate({"output": str(plain), "format": "json", "inputs": [str(d / "p.json")]}, _ctx(tmp_path, settings, []))
    (item,) = json.loads(plain.read_text())["items"]
    assert item["text"] == "Just me." and item["speakers"] == []


def test_a_cue_of_two_lines_is_one_speaker_s_words(tmp_path: Path, settings: Settings) -> None:
    """Subtitles of over 42 characters are two lines, the label on the first only: the second line was read as
    a turn of nobody, which split every long cue of an SRT or VTT aggregate (tests/cli/test_plan.py)."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:03.000\n<v SPEAKER_00>Did you get a chance to look\n"
                             "at the budget for next year?\n\n00:00:03.000 --> 00:00:04.000\n<v SPEAKER_01>I did.\n")
    (d / "b.srt").write_text("1\n00:00:00,000 --> 00:00:03,000\n[SPEAKER_00] Did you get a chance to look\n"
                             "at the budget for next year?\n\n2\n00:00:03,000 --> 00:00:04,000\n[SPEAKER_01] I did.\n")
    out = tmp_path / "all.json"
    run_aggregate({"output": str(out), "format": "json", "inputs": [str(d / "a.vtt"), str(d / "b.srt")]},
                  _ctx(tmp_path, settings, []))  # fmt: skip
    turns = "[SPEAKER_00] Did you get a chance to look at the budget for next year?\n[SPEAKER_01] I did."
    assert [i["text"] for i in json.loads(out.read_text())["items"]] == [turns, turns]
