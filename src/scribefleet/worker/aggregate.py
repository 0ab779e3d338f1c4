"""The `aggregate` task kind: the outputs of several tasks combined into one file.

A plan's aggregate task names an `output` (txt, md or json) and either lists
its `inputs` or takes the outputs of the tasks it needs. `scribefleet plan run`
turns either into `items` before the task is stored, one per source:

    {"name": "fox.wav", "input": "/media/fox.wav",
     "files": {"json": "/out/fox.json", "txt": "/out/fox.txt"}}

For each item the text comes from the best file it has: a whisper JSON
transcript (text, language, duration), else a .txt, else any other text file
(subtitles and TSV lose their timings). Who spoke is kept: from a diarized
transcript the text is one line per turn, `[SPEAKER_00] ...` (consecutive
segments of one speaker joined), as the txt output writes it; a VTT voice tag
`<v Name>` becomes `[Name] ` and a TSV's speaker column the same prefix; the
item's `speakers` lists the labels in order of appearance. An item none of whose files exists
fails the task with INPUT_NOT_FOUND, naming the files: the task that should
have written them did not. The output is written atomically:

    txt   one section per item, headed by its name
    md    `# title`, then `## name` and the text of each item
    json  {"title", "items": [{"name", "input", "text", "language",
           "duration_s", "speakers", "outputs"}], "text": all texts, blank-line separated}
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from scribefleet.errors import InputNotFound, UsageError

if TYPE_CHECKING:
    from scribefleet.worker.context import TaskContext

#: which file of an item is read first: a whisper transcript, then plain text, then the rest
PREFERENCE = ("json", "txt", "md", "srt", "vtt", "tsv")
_CUE_TIMING = re.compile(r"^\s*(\d+:)?\d+:\d+[.,]\d+\s*-->")
#: a line's speaker label as the outputs write it (`[SPEAKER_00] text`), and a VTT voice tag
_LABEL = re.compile(r"^\[([^\]\n]{1,100})\] ", re.MULTILINE)
_VOICE = re.compile(r"^<v(?:\.[^ >]*)? ([^>]{1,100})>")


class AggregateItem(BaseModel):
    """One source of an aggregate: a name, the media it came from, and its files by format."""

    model_config = ConfigDict(extra="forbid")

    name: str
    input: str | None = None
    files: dict[str, str] = Field(min_length=1)


class AggregateJob(BaseModel):
    """The runtime spec of an aggregate task."""

    model_config = ConfigDict(extra="forbid")

    output: str = Field(min_length=1)
    format: Literal["txt", "md", "json"]
    title: str | None = None
    #: plain files to combine, when `items` is not given (each is its own item)
    inputs: list[str] | None = None
    items: list[AggregateItem] | None = None

    @model_validator(mode="after")
    def _items_from_inputs(self) -> AggregateJob:
        if self.items is None:
            if not self.inputs:
                raise ValueError("an aggregate task needs 'items' or 'inputs'")
            self.items = [item_for_file(p) for p in self.inputs]
        return self


def item_for_file(path: str) -> AggregateItem:
    """An item made of one file, named after it."""
    fmt = Path(path).suffix.lstrip(".").lower() or "txt"
    return AggregateItem(name=Path(path).name, files={fmt: path})


def _whisper_json(path: Path) -> dict[str, Any] | None:
    """The transcript in a whisper JSON file, or None when the file is some other JSON."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(doc, dict) and isinstance(doc.get("text"), str) and isinstance(doc.get("segments"), list):
        return doc
    return None


def turns_text(lines: list[tuple[str | None, str]]) -> str:
    """(speaker, text) lines as one line per turn, `[speaker] text`; without speakers, the texts joined by spaces."""
    if not any(speaker for speaker, _ in lines):
        return " ".join(text for _, text in lines if text)
    turns: list[list[Any]] = []
    for speaker, text in lines:
        if not text:
            continue
        if turns and turns[-1][0] == speaker:
            turns[-1][1].append(text)
        else:
            turns.append([speaker, [text]])
    return "\n".join((f"[{speaker}] " if speaker else "") + " ".join(texts) for speaker, texts in turns)


def speakers_in(text: str) -> list[str]:
    """The `[speaker]` labels that open the lines of `text`, in order of appearance."""
    return list(dict.fromkeys(m.group(1) for m in _LABEL.finditer(text)))


def _plain_text(path: Path, fmt: str) -> str:
    """A text file's words: subtitle numbers, timings and headers dropped, TSV reduced to its text (and speaker)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if fmt == "tsv":
        lines = text.splitlines()
        header = lines[0].split("\t") if lines else []
        at = header.index("text") if "text" in header else -1
        who = header.index("speaker") if "speaker" in header else None
        rows = [line.split("\t") for line in lines[1:]]
        return turns_text([
            (row[who].strip() or None if who is not None and len(row) > who else None, row[at].strip())
            for row in rows if len(row) > max(at, 0)
        ])  # fmt: skip
    if fmt in ("srt", "vtt"):
        return turns_text(_cue_lines(text))
    return text.strip()


def _cue_lines(text: str) -> list[tuple[str | None, str]]:
    """(speaker, text) of each text line of an SRT or VTT file. The label opens a cue's first line only, so the
    cue's other lines (a cue of two lines) keep its speaker: read alone, each was a turn of nobody."""
    lines: list[tuple[str | None, str]] = []
    speaker: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or _CUE_TIMING.match(raw):
            speaker = None  # a new cue begins
            continue
        if line.isdigit() or line == "WEBVTT":
            continue
        line = _VOICE.sub(r"[\1] ", line).replace("</v>", "")
        if m := _LABEL.match(line):
            speaker, line = m.group(1), line[m.end():].strip()
        lines.append((speaker, line))
    return lines


def read_item(item: AggregateItem) -> dict[str, Any]:
    """{"name", "input", "text", "language", "duration_s", "outputs", "source", "speakers"} of one item."""
    present = {fmt: Path(p) for fmt, p in item.files.items() if Path(p).is_file()}
    if not present:
        listed = ", ".join(item.files.values())
        raise InputNotFound(
            f"aggregate input {item.name!r} is missing: none of {listed} exists; "
            "run the task that writes it again (its outputs may have been deleted)",
            item=item.name, files=list(item.files.values()),
        )  # fmt: skip
    row: dict[str, Any] = {
        "name": item.name, "input": item.input, "text": "", "language": None, "duration_s": None,
        "outputs": {fmt: str(p) for fmt, p in present.items()},
    }  # fmt: skip
    order = [f for f in PREFERENCE if f in present] + [f for f in present if f not in PREFERENCE]
    for fmt in order:
        if fmt == "json":
            doc = _whisper_json(present[fmt])
            if doc is None:
                continue  # some other JSON: text only when nothing else is there
            duration = doc.get("duration")
            segments = [seg for seg in doc["segments"] if isinstance(seg, dict)]
            if any(seg.get("speaker") for seg in segments):  # diarized: who spoke, turn by turn
                text = turns_text([(seg.get("speaker"), str(seg.get("text") or "").strip()) for seg in segments])
            else:
                text = doc["text"].strip()
            row.update(text=text, language=doc.get("language"), source=str(present[fmt]),
                       duration_s=float(duration) if isinstance(duration, (int, float)) else None)  # fmt: skip
            return {**row, "speakers": speakers_in(text)}
        row.update(text=_plain_text(present[fmt], fmt), source=str(present[fmt]))
        return {**row, "speakers": speakers_in(row["text"])}
    row.update(text=_plain_text(present["json"], "json"), source=str(present["json"]))
    return {**row, "speakers": []}


def render_txt(title: str | None, rows: list[dict[str, Any]]) -> str:
    parts = [f"{title}\n{'=' * len(title)}\n"] if title else []
    for row in rows:
        parts.append(f"== {row['name']} ==\n\n{row['text']}\n")
    return "\n".join(parts)


def render_md(title: str | None, rows: list[dict[str, Any]]) -> str:
    parts = [f"# {title}\n"] if title else []
    for row in rows:
        parts.append(f"## {row['name']}\n\n{row['text']}\n")
    return "\n".join(parts)


def render_json(title: str | None, rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("name", "input", "text", "language", "duration_s", "speakers", "outputs")
    items = [{k: row[k] for k in keys} for row in rows]
    return {"title": title, "items": items, "text": "\n\n".join(row["text"] for row in rows if row["text"])}


def run_aggregate(spec: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Handler of the `aggregate` kind: read every item, write `output` atomically."""
    from scribefleet.fsio import atomic_write_text

    try:
        job = AggregateJob.model_validate(spec)
    except ValidationError as exc:
        raise UsageError(f"invalid aggregate task: {exc.errors()[0].get('msg')}", task_id=ctx.task_id) from exc
    items = job.items or []
    rows = []
    for n, item in enumerate(items):
        ctx.progress("aggregate", n / max(1, len(items)), None)
        rows.append(read_item(item))
    output = Path(job.output)
    if job.format == "json":
        atomic_write_text(output, json.dumps(render_json(job.title, rows), indent=2, ensure_ascii=False) + "\n")
    else:
        render = render_md if job.format == "md" else render_txt
        atomic_write_text(output, render(job.title, rows))
    ctx.progress("aggregate", 1.0, None)
    return {
        "outputs": {job.format: str(output)},
        "items": len(rows),
        "sources": [row["source"] for row in rows],
    }
