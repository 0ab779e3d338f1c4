"""Reading a plan file: YAML, or the fenced yaml block of a Markdown file, with line numbers.

Everything downstream reports problems by line of the *original* file, so this
module keeps, for every task, the line where it starts and the line of each of
its keys. Problems are collected in a `Problems` list and raised together as
one PlanInvalid, so a plan with three mistakes is fixed in one round.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scribefleet.errors import PlanInvalid

MARKDOWN_SUFFIXES = (".md", ".markdown")
_OPEN_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_MAX_LISTED = 20


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a plan, located by line and task id where known."""

    message: str
    line: int | None = None
    task: str | None = None

    def render(self, file_name: str) -> str:
        where = f"{file_name}:{self.line}" if self.line else file_name
        who = f" task '{self.task}':" if self.task else ""
        return f"{where}:{who} {self.message}"


class Problems:
    """Collects the problems of one plan and raises them as one PlanInvalid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[Problem] = []

    def add(self, message: str, *, line: int | None = None, task: str | None = None) -> None:
        problem = Problem(message, line, task)
        if problem not in self.items:  # one mistake repeated by every foreach item is one problem
            self.items.append(problem)

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise self.to_error()

    def to_error(self) -> PlanInvalid:
        """One PlanInvalid listing every problem, compiler style (`plan.md:12: task 'x': ...`)."""
        ordered = sorted(self.items, key=lambda p: p.line or 0)
        listed = [p.render(self.path.name) for p in ordered[:_MAX_LISTED]]
        if len(self.items) > _MAX_LISTED:
            listed.append(f"... and {len(self.items) - _MAX_LISTED} more")
        count = len(self.items)
        head = (
            f"Plan {self.path} is invalid ({count} problem{'s' if count > 1 else ''}); "
            "fix it and run 'scribefleet plan check' again:"
        )
        return PlanInvalid(
            "\n  ".join([head, *listed]),
            path=str(self.path),
            problems=[{"line": p.line, "task": p.task, "message": p.message} for p in ordered],
            tasks=sorted({p.task for p in self.items if p.task}),
            lines=sorted({p.line for p in self.items if p.line}),
        )


def fail(path: Path, message: str, *, line: int | None = None, task: str | None = None) -> PlanInvalid:
    """A PlanInvalid holding a single problem, for mistakes that stop parsing at once."""
    problems = Problems(path)
    problems.add(message, line=line, task=task)
    return problems.to_error()


@dataclass
class RawTask:
    """One task mapping as written, with where its keys are in the file."""

    data: dict[str, Any]
    line: int
    key_lines: dict[str, int] = field(default_factory=dict)
    #: key -> first line of its value's text, for literal (`|`) block scalars only
    block_lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


@dataclass
class RawPlan:
    """The parsed plan document before any validation."""

    path: Path
    data: dict[str, Any]
    key_lines: dict[str, int]
    var_lines: dict[str, int]
    tasks: list[RawTask]


def extract_yaml_block(text: str, path: Path) -> tuple[str, int]:
    """The plan's fenced yaml block of a Markdown text, and how many lines precede it.

    One ```yaml (or ```yml) block is the plan. Where a document holds several, the
    plan's is the one whose info string also says `plan` (```yaml plan).
    """
    lines = text.splitlines()
    blocks: list[tuple[int, list[str], str]] = []  # (first content line index, lines, info)
    i = 0
    while i < len(lines):
        match = _OPEN_FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, indent, info = match["fence"], len(match["indent"]), match["info"].strip().lower()
        close = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = next((j for j in range(i + 1, len(lines)) if close.match(lines[j])), None)
        is_yaml = info.split()[:1] in (["yaml"], ["yml"])
        if end is None:
            if is_yaml:
                raise fail(path, "the ```yaml block opened here is never closed", line=i + 1)
            break
        if is_yaml:
            body = [ln[min(indent, len(ln) - len(ln.lstrip(" "))):] for ln in lines[i + 1 : end]]
            blocks.append((i + 1, body, info))
        i = end + 1
    if len(blocks) > 1:
        blocks = [b for b in blocks if "plan" in b[2].split()[1:]] or blocks
    if not blocks:
        raise fail(path, "no ```yaml block found; put the plan in a fenced ```yaml block")
    if len(blocks) > 1:
        where = ", ".join(str(b[0]) for b in blocks)
        raise fail(path, f"{len(blocks)} ```yaml blocks (lines {where}); mark the plan's as ```yaml plan")
    first, body, _info = blocks[0]
    return "\n".join(body) + "\n", first


def parse_source(text: str, path: Path) -> RawPlan:
    """Parse plan text (YAML, or Markdown when `path` ends in .md) into a RawPlan."""
    offset = 0
    if path.suffix.lower() in MARKDOWN_SUFFIXES:
        text, offset = extract_yaml_block(text, path)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 + offset if mark else None
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise fail(path, f"not valid YAML: {problem} (quote values that hold ${{...}} inside [ ])", line=line) from exc
    except yaml.YAMLError as exc:
        raise fail(path, f"not valid YAML: {exc}") from exc
    finally:
        loader.dispose()
    if not isinstance(node, yaml.MappingNode) or not isinstance(data, dict):
        raise fail(path, "a plan is a mapping with 'tasks:' (and optional 'name:', 'vars:')", line=offset + 1)
    return _locate(node, data, path, offset)


def _locate(root: yaml.MappingNode, data: dict[str, Any], path: Path, offset: int) -> RawPlan:
    """Pair the constructed data with the lines of its nodes."""
    problems = Problems(path)
    top = _key_nodes(root, offset, problems, task=None)
    var_lines: dict[str, int] = {}
    if isinstance(top.get("vars", (0, None))[1], yaml.MappingNode):
        var_lines = {k: ln for k, (ln, _v) in _key_nodes(top["vars"][1], offset, problems, None).items()}
    tasks: list[RawTask] = []
    tasks_node = top.get("tasks", (0, None))[1]
    if "tasks" not in data:
        problems.add("no 'tasks:' list", line=offset + 1)
    elif not isinstance(tasks_node, yaml.SequenceNode) or not isinstance(data["tasks"], list) or not data["tasks"]:
        problems.add("'tasks:' must be a non-empty list of task mappings", line=top["tasks"][0])
    else:
        for item_node, item in zip(tasks_node.value, data["tasks"]):
            line = item_node.start_mark.line + 1 + offset
            if not isinstance(item_node, yaml.MappingNode) or not isinstance(item, dict):
                problems.add("a task must be a mapping with 'id:' and 'kind:'", line=line)
                continue
            task_id = item.get("id") if isinstance(item.get("id"), str) else None
            keys = _key_nodes(item_node, offset, problems, task_id)
            blocks = {
                k: v.start_mark.line + 2 + offset  # the text starts on the line after the `|`
                for k, (ln, v) in keys.items()
                if isinstance(v, yaml.ScalarNode) and v.style == "|"
            }
            tasks.append(RawTask(item, line, {k: ln for k, (ln, _v) in keys.items()}, blocks))
    problems.raise_if_any()
    return RawPlan(path, data, {k: ln for k, (ln, _v) in top.items()}, var_lines, tasks)


def _key_nodes(
    node: yaml.MappingNode, offset: int, problems: Problems, task: str | None
) -> dict[str, tuple[int, yaml.Node]]:
    """key -> (line of the key, value node) of a mapping; duplicate keys are problems."""
    out: dict[str, tuple[int, yaml.Node]] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        line = key_node.start_mark.line + 1 + offset
        if key_node.value in out:
            first = out[key_node.value][0]
            problems.add(f"key '{key_node.value}' appears twice (also line {first})", line=line, task=task)
        out[key_node.value] = (line, value_node)
    return out
