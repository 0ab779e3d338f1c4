"""What a loaded plan is: a flat, validated task graph, and its text rendering.

`Plan.tasks` holds the graph *after* `foreach` expansion and `${...}`
substitution, in dependency order (every task comes after the tasks it needs,
otherwise in file order). It is pure data: the store turns each PlanTask into a
task row (key = PlanTask.id) and the dispatcher runs them.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from scribefleet.plans.specs import Kind

Resources = Literal["gpu", "cpu", "any"]
_ID_WIDTH_MAX = 40


class PlanTask(BaseModel):
    """One runnable task of an expanded plan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: unique in the plan; `<declared id>:<item key>` for a foreach expansion
    id: str
    kind: Kind
    #: ids of the tasks that must complete first (expanded ids)
    needs: list[str] = Field(default_factory=list)
    #: None = the configured default for this kind
    timeout_s: float | None = Field(default=None, gt=0)
    #: extra attempts after the first failure; None = the configured default (Settings.max_attempts)
    retries: int | None = Field(default=None, ge=0)
    resources: Resources = "any"
    #: kind-specific fields, validated (see plans.specs); paths are absolute
    spec: dict[str, Any] = Field(default_factory=dict)
    #: the id the task was declared under (equals `id` unless it came from a foreach)
    group: str
    #: the foreach item it was made for (None unless it came from a foreach)
    item: str | None = None
    #: line of the task's declaration in the plan file
    line: int = Field(default=0, ge=0)

    def max_attempts(self, default: int) -> int:
        """Attempts allowed in all: 1 + retries, or `default` when the plan did not say."""
        return default if self.retries is None else self.retries + 1


class Plan(BaseModel):
    """A plan file, validated and expanded into a flat task graph."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str | None = None
    #: the plan file (absolute)
    source: Path
    #: the folder relative paths and foreach globs are read from (the plan file's folder)
    base_dir: Path
    #: final variable values (declared, then --var overrides)
    vars: dict[str, str] = Field(default_factory=dict)
    tasks: list[PlanTask]

    def task(self, task_id: str) -> PlanTask:
        """The task with this (expanded) id; KeyError if there is none."""
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)

    def group(self, declared_id: str) -> list[PlanTask]:
        """Every task a declaration expanded into (one, unless it has a foreach)."""
        return [t for t in self.tasks if t.group == declared_id]

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (for --json output, the API and the store)."""
        return self.model_dump(mode="json")

    def graph_lines(self) -> list[str]:
        """The expanded graph as text, one task per line and its needs below it."""
        kinds = Counter(t.kind for t in self.tasks)
        per_kind = ", ".join(f"{kind} {count}" for kind, count in kinds.items())
        count = len(self.tasks)
        lines = [f"plan '{self.name}' ({self.source}): {count} task{'s' if count != 1 else ''} ({per_kind})"]
        if self.vars:
            lines.append("vars: " + ", ".join(f"{k}={v}" for k, v in self.vars.items()))
        sizes = Counter(t.group for t in self.tasks)
        by_id = {t.id: t for t in self.tasks}
        width = min(max((len(t.id) for t in self.tasks), default=0), _ID_WIDTH_MAX)
        for task in self.tasks:
            limits = [task.resources]
            if task.timeout_s is not None:
                limits.append(f"timeout {task.timeout_s:g}s")
            if task.retries is not None:
                limits.append(f"retries {task.retries}")
            lines.append(f"{task.id:<{width}}  {task.kind:<10}  [{', '.join(limits)}]  {self._summary(task)}")
            if task.needs:
                lines.append(f"{'':<{width}}    needs {_needs_text(task.needs, by_id, sizes)}")
        return lines

    def render(self) -> str:
        """graph_lines() as one text, for `scribefleet plan check`."""
        return "\n".join(self.graph_lines())

    def _summary(self, task: PlanTask) -> str:
        """A short human line of what the task does."""
        spec = task.spec
        if task.kind == "transcribe":
            formats = ",".join(spec.get("options", {}).get("formats", [])) or "default formats"
            return f"{self._rel(spec['input'])} -> {self._rel(spec['out'])}/ ({formats})"
        if task.kind == "llm":
            return f"{self._rel(spec['input'])} -> {self._rel(spec['output'])}"
        if task.kind == "aggregate":
            source = ", ".join(self._rel(p) for p in spec["inputs"]) if spec.get("inputs") else "outputs of needs"
            return f"{source} -> {self._rel(spec['output'])} ({spec['format']})"
        command = " ; ".join(line.strip() for line in spec["run"].strip().splitlines() if line.strip())
        return "$ " + (command if len(command) <= 70 else command[:67] + "...")

    def _rel(self, path: str) -> str:
        """A spec path shown relative to the plan's folder when it lies inside it; a URL as it is."""
        if "://" in path:  # relpath would fold its '//' into one: 'http:/host/a.wav'
            return path
        rel = os.path.relpath(path, self.base_dir)
        return path if rel.startswith("..") else rel


def _needs_text(needs: list[str], by_id: dict[str, PlanTask], sizes: Counter[str]) -> str:
    """Needs, with a whole foreach group shown as `group:* (n)`."""
    tasks = [by_id[n] for n in needs]
    counts = Counter(t.group for t in tasks if t.item is not None)
    whole = {g: f"{g}:* ({n})" for g, n in counts.items() if n == sizes[g] > 1}
    shown = dict.fromkeys(whole.get(t.group, t.id) if t.item is not None else t.id for t in tasks)
    return ", ".join(shown)
