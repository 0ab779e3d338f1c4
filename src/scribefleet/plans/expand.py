"""foreach expansion and the edges of the task graph.

A task with `foreach:` becomes one task per item, with id `<id>:<key>`. The key
is the item's stem (`media/talk.mp4` -> `talk`), or the whole item where two
items share a stem. Ids derived from names, not positions, stay the same when
files are added to a folder, so a resumed plan finds its finished tasks.

`needs:` entries, and what they mean:

    needs: [b]        b plain: the one task b
                      b foreach, this task plain: every b:* (fan-in)
                      b foreach, this task foreach: item by item, a:k needs b:k
    needs: [b:*]      every task of b, whatever this task is
    needs: [b:talk]   the one task b:talk
"""

from __future__ import annotations

import difflib
import glob
import heapq
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from scribefleet.plans.model import PlanTask


def foreach_items(foreach: str | list[str], base_dir: Path) -> list[str]:
    """The items of a foreach: a list as given, or the sorted matches of a glob.

    A relative glob is read from `base_dir` and yields paths relative to it
    (posix style); an absolute one (or ~) yields absolute paths. `**` recurses.
    """
    if isinstance(foreach, list):
        return list(foreach)
    pattern = str(Path(foreach).expanduser()) if foreach.startswith("~") else foreach
    if Path(pattern).is_absolute():
        return sorted(glob.glob(pattern, recursive=True))
    matches = glob.glob(pattern, root_dir=base_dir, recursive=True)
    return sorted(Path(m).as_posix() for m in matches)


def item_keys(items: Sequence[str]) -> list[str]:
    """The id suffix of each item: its stem, or the whole item where stems collide."""
    stems = [PurePosixPath(item).stem or item for item in items]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    return [stem if counts[stem] == 1 else item for stem, item in zip(stems, items)]


def expanded_id(declared_id: str, key: str | None) -> str:
    return declared_id if key is None else f"{declared_id}:{key}"


class Groups:
    """Each declared id with its item keys (None for a plain task) and the ids it expanded into."""

    def __init__(self, keys: Mapping[str, list[str] | None]) -> None:
        self.keys = dict(keys)
        self.ids = {g: [g] if k is None else [expanded_id(g, x) for x in k] for g, k in self.keys.items()}
        self._key_sets = {g: set(k) for g, k in self.keys.items() if k is not None}

    def __contains__(self, declared_id: object) -> bool:
        return declared_id in self.keys

    def has_item(self, declared_id: str, key: str) -> bool:
        return key in self._key_sets.get(declared_id, ())


def resolve_need(need: str, key: str | None, groups: Groups) -> tuple[list[str], str | None]:
    """The ids one `needs:` entry stands for, seen from the task with item key `key`.

    Returns (ids, None), or ([], the problem) when the entry names nothing.
    """
    base, colon, which = need.partition(":")
    if base not in groups:
        close = difflib.get_close_matches(base, list(groups.keys), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return [], f"needs '{need}', which is no task of this plan{hint}"
    keys = groups.keys[base]
    if keys is None:
        if colon and which != "*":
            return [], f"needs '{need}', but '{base}' has no foreach; write '{base}'"
        return groups.ids[base], None
    if which == "*" or (not colon and key is None):
        return groups.ids[base], None
    wanted = which if colon else key
    if wanted is not None and groups.has_item(base, wanted):
        return [expanded_id(base, wanted)], None
    if colon:
        shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
        return [], f"needs '{need}', but '{base}' has no item '{which}' (its items: {shown or 'none'})"
    return [], (
        f"needs '{base}' item by item, but '{base}' has no item '{wanted}'; "
        f"write '{base}:*' to need all of its tasks"
    )


def find_cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Cycles of a graph (node -> nodes it needs), each as [a, b, ..., a]; one per tangle."""
    grey, black = 1, 2
    state: dict[str, int] = {}
    cycles: list[list[str]] = []
    reported: set[str] = set()
    for start in graph:
        if start in state:
            continue
        state[start] = grey
        path, stack = [start], [iter(graph[start])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = black
                stack.pop()
            elif nxt not in state:
                state[nxt] = grey
                path.append(nxt)
                stack.append(iter(graph.get(nxt, [])))
            elif state[nxt] == grey:
                cycle = [*path[path.index(nxt) :], nxt]
                if not reported.intersection(cycle):
                    cycles.append(cycle)
                    reported.update(cycle)
    return cycles


def dependency_order(tasks: list[PlanTask]) -> list[PlanTask]:
    """Tasks ordered so each comes after its needs; otherwise in the given order. Needs no cycle."""
    index = {task.id: i for i, task in enumerate(tasks)}
    waiting = [len(task.needs) for task in tasks]  # needs hold no duplicates
    dependents: list[list[int]] = [[] for _ in tasks]
    for i, task in enumerate(tasks):
        for need in task.needs:
            dependents[index[need]].append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    ordered: list[PlanTask] = []
    while ready:
        i = heapq.heappop(ready)
        ordered.append(tasks[i])
        for dependent in dependents[i]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, dependent)
    if len(ordered) != len(tasks):
        raise ValueError("the task graph has a cycle")  # callers check cycles first
    return ordered
