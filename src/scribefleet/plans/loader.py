"""load_plan: a plan file in, a validated, expanded Plan out (or one PlanInvalid listing every problem).

Steps: parse (source.py) -> variables (variables.py) -> each declared task's
common fields and foreach items -> graph checks on declared ids (unknown needs,
duplicates, cycles) -> per item: substitute, validate the kind's fields
(specs.py), resolve needs (expand.py) -> dependency order.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scribefleet.plans.expand import (
    Groups, dependency_order, expanded_id, find_cycles, foreach_items, item_keys, resolve_need,
)
from scribefleet.plans.model import Plan, PlanTask, Resources
from scribefleet.plans.source import Problems, RawPlan, RawTask, fail, parse_source
from scribefleet.plans.specs import KINDS, Kind, build_spec, explain
from scribefleet.plans.variables import Undefined, resolve_vars, scalar_text, substitute_tree

COMMON_FIELDS = ("id", "kind", "needs", "foreach", "allow_empty", "timeout_s", "retries", "resources")
TOP_FIELDS = ("name", "description", "vars", "tasks")
_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_KINDS_TEXT = "transcribe, shell, aggregate or llm"


class TaskHeader(BaseModel):
    """The fields every task has, whatever its kind."""

    model_config = ConfigDict(extra="forbid")

    needs: list[str] = Field(default_factory=list)
    foreach: str | list[str] | None = None
    allow_empty: bool = False
    timeout_s: float | None = Field(default=None, gt=0)
    retries: int | None = Field(default=None, ge=0)
    resources: Resources = "any"

    @field_validator("needs", mode="before")
    @classmethod
    def _one_need(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("foreach", mode="before")
    @classmethod
    def _list_items(cls, value: object) -> object:
        if isinstance(value, list):
            texts = [scalar_text(v) for v in value]
            if any(t is None for t in texts):
                raise ValueError("foreach items must be strings or numbers")
            return texts
        return value


@dataclass
class Declared:
    """A task as declared, its common fields checked and its foreach items listed."""

    id: str
    kind: Kind
    header: TaskHeader
    raw: RawTask
    items: list[str] | None  # None: no foreach
    keys: list[str] | None


def load_plan(path: Path, *, overrides: Mapping[str, str] | None = None) -> Plan:
    """Read, validate and expand the plan file at `path` (YAML, or Markdown with a ```yaml block)."""
    path = Path(path).expanduser().absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise fail(path, "plan file not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(path, f"cannot read the plan file: {exc}") from exc
    return parse_plan(text, path, overrides=overrides)


def parse_plan(text: str, source: Path, *, overrides: Mapping[str, str] | None = None) -> Plan:
    """Like load_plan, for plan text already read; `source` names the file (its suffix and folder matter)."""
    source = Path(source).expanduser().absolute()
    raw = parse_source(text, source)
    problems = Problems(source)
    base_dir = source.parent
    _check_top(raw, problems)
    declared_vars = raw.data.get("vars") or {}
    if not isinstance(declared_vars, dict):
        problems.add("'vars:' must be a mapping of name: value", line=raw.key_lines.get("vars"))
        declared_vars = {}
    variables = resolve_vars(
        declared_vars,
        dict(overrides or {}),
        lambda name, msg: problems.add(msg, line=raw.var_lines.get(name, raw.key_lines.get("vars"))),
    )
    declared = _declare_all(raw, variables, base_dir, problems)
    _check_graph(declared, {t.data.get("id") for t in raw.tasks}, problems)
    groups = Groups({d.id: d.keys for d in declared.values()})
    tasks = [task for decl in declared.values() for task in _expand(decl, groups, variables, base_dir, problems)]
    problems.raise_if_any()  # before ordering, which needs a graph without cycles
    name = raw.data.get("name") if isinstance(raw.data.get("name"), str) else source.stem
    description = raw.data.get("description") if isinstance(raw.data.get("description"), str) else None
    return Plan(
        name=name, description=description, source=source, base_dir=base_dir, vars=variables,
        tasks=dependency_order(tasks),
    )


def _check_top(raw: RawPlan, problems: Problems) -> None:
    for key in raw.data:
        if key not in TOP_FIELDS:
            close = difflib.get_close_matches(str(key), TOP_FIELDS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "a plan has " + ", ".join(TOP_FIELDS)
            problems.add(f"unknown top-level field '{key}' ({hint})", line=raw.key_lines.get(str(key)))
    for key in ("name", "description"):
        if key in raw.data and not isinstance(raw.data[key], str):
            problems.add(f"'{key}:' must be a string", line=raw.key_lines.get(key))


def _declare_all(raw: RawPlan, variables: dict[str, str], base_dir: Path, problems: Problems) -> dict[str, Declared]:
    declared: dict[str, Declared] = {}
    first_lines: dict[object, int] = {}
    for raw_task in raw.tasks:
        task_id = raw_task.data.get("id")
        if isinstance(task_id, str) and task_id in first_lines:
            first = first_lines[task_id]
            message = f"duplicate task id '{task_id}' (first declared on line {first})"
            problems.add(message, line=raw_task.line_of("id"), task=task_id)
            continue
        first_lines.setdefault(task_id, raw_task.line)
        decl = _declare(raw_task, variables, base_dir, problems)
        if decl is not None:
            declared[decl.id] = decl
    return declared


def _declare(raw: RawTask, variables: dict[str, str], base_dir: Path, problems: Problems) -> Declared | None:
    """Check a task's id, kind and common fields, and list its foreach items."""
    task_id, kind = raw.data.get("id"), raw.data.get("kind")
    if not isinstance(task_id, str) or not _ID.match(task_id):
        shown = "a task has no 'id'" if task_id is None else f"id {task_id!r} is not valid"
        problems.add(f"{shown} (ids use letters, digits, _ . -)", line=raw.line_of("id"))
        return None
    if kind not in KINDS:
        shown = "missing 'kind'" if kind is None else f"unknown kind {kind!r}"
        problems.add(f"{shown} (choose {_KINDS_TEXT})", line=raw.line_of("kind"), task=task_id)
        return None
    fields = {k: v for k, v in raw.data.items() if k in COMMON_FIELDS and k not in ("id", "kind")}
    # needs are ids, never substituted; the rest may use variables (not ${item})
    fields = {k: v if k == "needs" else _substitute(raw, k, v, variables, problems, task_id) for k, v in fields.items()}
    try:
        header = TaskHeader.model_validate(fields)
    except ValidationError as exc:
        for field, message in explain(exc, kind, list(COMMON_FIELDS)):
            problems.add(message, line=raw.line_of(field or "id"), task=task_id)
        return None
    items = keys = None
    if header.foreach is not None:
        items = foreach_items(header.foreach, base_dir)
        keys = item_keys(items)
        if not items and not header.allow_empty:
            what = "list is empty"
            if isinstance(header.foreach, str):
                what = f"glob '{header.foreach}' matched nothing in {base_dir}"
            message = f"foreach {what} (add 'allow_empty: true' if that can happen)"
            problems.add(message, line=raw.line_of("foreach"), task=task_id)
        for key, count in Counter(keys).items():
            if count == 1 and key:
                continue
            problems.add(f"foreach item {key!r} is listed twice or empty", line=raw.line_of("foreach"), task=task_id)
    return Declared(task_id, kind, header, raw, items, keys)


def _check_graph(declared: dict[str, Declared], all_ids: set[object], problems: Problems) -> None:
    """Unknown needs and cycles, at the level of declared ids.

    `all_ids` holds every id written, so a need of a task that is itself invalid
    (and reported as such) is not reported a second time as unknown.
    """
    graph: dict[str, list[str]] = {}
    for decl in declared.values():
        graph[decl.id] = []
        for need in decl.header.needs:
            base = need.partition(":")[0]
            if base not in all_ids:
                _ids, problem = resolve_need(need, None, Groups({d.id: d.keys for d in declared.values()}))
                problems.add(problem or f"unknown need '{need}'", line=decl.raw.line_of("needs"), task=decl.id)
            elif base in declared and base not in graph[decl.id]:
                graph[decl.id].append(base)
    for cycle in find_cycles(graph):
        for task_id in dict.fromkeys(cycle):
            decl = declared[task_id]
            problems.add(f"needs form a cycle: {' -> '.join(cycle)}", line=decl.raw.line_of("needs"), task=task_id)


def _expand(
    decl: Declared, groups: Groups, variables: dict[str, str], base_dir: Path, problems: Problems
) -> list[PlanTask]:
    """The runnable tasks of one declaration: one, or one per foreach item."""
    kind_fields = {k: v for k, v in decl.raw.data.items() if k not in COMMON_FIELDS}
    pairs: list[tuple[str | None, str | None]] = [(None, None)]
    if decl.items is not None and decl.keys is not None:
        pairs = list(zip(decl.items, decl.keys))
    tasks: list[PlanTask] = []
    for item, key in pairs:
        scope = variables if item is None else {**variables, "item": item}
        fields = {
            k: _substitute(decl.raw, k, v, scope, problems, decl.id, kind=decl.kind) for k, v in kind_fields.items()
        }
        needs: dict[str, None] = {}  # ordered set
        for need in decl.header.needs:
            if need.partition(":")[0] not in groups:
                continue  # reported by _check_graph
            ids, problem = resolve_need(need, key, groups)
            if problem:
                problems.add(problem, line=decl.raw.line_of("needs"), task=expanded_id(decl.id, key))
            needs.update(dict.fromkeys(ids))
        try:
            spec = build_spec(decl.kind, fields, base_dir)
        except ValidationError as exc:
            for field, message in explain(exc, decl.kind, list(COMMON_FIELDS)):
                problems.add(message, line=decl.raw.line_of(field or "id"), task=decl.id)
            continue
        header = decl.header
        tasks.append(
            PlanTask(
                id=expanded_id(decl.id, key), kind=decl.kind, needs=list(needs), timeout_s=header.timeout_s,
                retries=header.retries, resources=header.resources, spec=spec,
                group=decl.id, item=item, line=decl.raw.line,
            )
        )
    return tasks


def _substitute(
    raw: RawTask, key: str, value: Any, scope: Mapping[str, str], problems: Problems, task_id: str, kind: str = ""
) -> Any:
    """One field's value with ${...} replaced; undefined names become problems at their line."""

    def report(undefined: Undefined) -> None:
        line = raw.line_of(key)
        if key in raw.block_lines and isinstance(value, str):
            line = raw.block_lines[key] + value[: undefined.offset].count("\n")
        hint = ""
        if kind == "llm" and undefined.name in ("text", "input"):
            hint = " (the prompt's placeholder for the input's text is {{text}})"
        problems.add(f"${{{undefined.name}}} in '{key}' {undefined.reason}{hint}", line=line, task=task_id)

    quoted = ("item",) if kind == "shell" and key == "run" else ()  # file names are data, never bash code
    return substitute_tree(value, scope, report, bash_names=(kind == "shell"), shell_quoted=quoted)
