"""From a loaded Plan to store tasks: runtime specs, limits, and the plan's batch.

A transcribe task of a playlist URL is first replaced by one task per entry
(`expand_playlists`). Each PlanTask becomes one store task with key = its plan id:

    transcribe  the runtime spec `scribefleet transcribe` builds (jobs/create.py):
                input_path, work_dir under the state dir keyed by content hash +
                options key, outputs `<out>/<input stem>.<format>`, the model
                resolved once per distinct model; content_key = the work dir
    shell, llm  the plan's spec as it is
    aggregate   the plan's spec plus `items`: its `inputs`, or else the known
                outputs of the tasks it needs (transcribe: every format it
                writes; llm and aggregate: their `output`; shell: nothing)

A task's timeout is its `timeout_s`, else the default of its kind in Settings
(transcribe_timeout_s, shell_timeout_s, llm_task_timeout_s,
aggregate_timeout_s); its attempts are `retries + 1`, else max_attempts.
`resources: gpu` is a preference: where no GPU slot runs (`--device cpu`, or
`auto` on a machine without a usable GPU) the task runs on the CPU, with a
warning; under `--device cuda` it is strict.

The batch is keyed by the plan file and the graph (ids, kinds, needs, limits,
resources): running the same plan again finds the same batch, while an edited
graph starts a new one (transcriptions still reuse their checkpoints).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scribefleet.config import Settings
from scribefleet.errors import ScribefleetError
from scribefleet.jobs.create import inspect_inputs, job_extra, transcribe_spec, work_dir_for
from scribefleet.jobs.inputs import InputFile, assign_outputs, is_url, url_inputs
from scribefleet.options import FetchOptions, PublishOptions, TranscribeOptions
from scribefleet.pipeline.models import ResolvedModel, resolve_model
from scribefleet.plans import Plan, PlanTask
from scribefleet.plans.source import Problems
from scribefleet.store.store import Store

log = logging.getLogger("scribefleet.cli")  # the name its lines have always shown ("[cli]"), which logs readers grep


@dataclass
class StoreTask:
    """A plan task as the store will hold it."""

    key: str
    kind: str
    spec: dict[str, Any]
    needs: list[str]
    max_attempts: int
    timeout_s: float
    resources: str
    content_key: str | None = None
    audio_s: float | None = None  # a transcribe task's input length from its header (jobs/create.py inspect_inputs)


def default_timeout_s(kind: str, settings: Settings, *, diarize: bool = False) -> float:
    """The wall-clock limit of a task of `kind` that sets no timeout_s (`diarize`: its diarization stage's limit on top)."""
    return {
        "transcribe": settings.transcribe_timeout_s + (settings.diarize_timeout_s if diarize else 0.0),
        "shell": settings.shell_timeout_s,
        "llm": settings.llm_task_timeout_s,
        "aggregate": settings.aggregate_timeout_s,
    }[kind]


def expand_playlists(plan: Plan) -> Plan:
    """The plan with each transcribe task of a playlist URL replaced by one task per entry.

    An entry's task is `<id>:<n>` (n from 1, as a foreach item names its task), named after the entry's
    title the way `transcribe URL` names it (`jobs.inputs.url_inputs`), and every task that needed the
    playlist's task needs all of them. A URL of one media (or one whose metadata cannot be read: its
    task fails with its own code) stays as it is. Nothing is downloaded.
    """
    tasks: list[PlanTask] = []
    renamed: dict[str, list[str]] = {}
    for task in plan.tasks:
        source = task.spec.get("input") if task.kind == "transcribe" else None
        entries = url_inputs([source], FetchOptions(**task.spec.get("fetch") or {})) if source and is_url(source) else []
        if len(entries) < 2 and all(e.url == source for e in entries):
            tasks.append(task)
            continue
        out = Path(task.spec["out"])
        assign_outputs(entries, out)
        renamed[task.id] = []
        for n, entry in enumerate(entries, 1):
            child = task.model_copy(update={"id": f"{task.id}:{n}", "item": entry.url,
                                            "spec": {**task.spec, "input": entry.url, "stem": entry.out_stem.name}})
            renamed[task.id].append(child.id)
            tasks.append(child)
        log.info("task %s: playlist %s has %d entries, one task each", task.id, source, len(entries))
    if not renamed:
        return plan
    for i, task in enumerate(tasks):
        if any(n in renamed for n in task.needs):
            needs = [m for n in task.needs for m in renamed.get(n, [n])]
            tasks[i] = task.model_copy(update={"needs": needs})
    return plan.model_copy(update={"tasks": tasks})


def transcribe_outputs(task: PlanTask) -> dict[str, Path]:
    """format -> path of each file a plan transcribe task writes: `<out>/<input stem>.<format>` (a playlist
    entry: its title, `stem`)."""
    options = TranscribeOptions(**task.spec.get("options", {}))
    source = task.spec["input"]
    stem = Path(source.split("?", 1)[0].rstrip("/")).stem if is_url(source) else Path(source).stem
    stem = task.spec.get("stem") or stem
    return {fmt: Path(task.spec["out"]) / f"{stem}.{fmt}" for fmt in options.formats}


def planned_outputs(task: PlanTask) -> list[Path]:
    """Every file a plan task is known to write (a shell command's are unknown)."""
    if task.kind == "transcribe":
        return list(transcribe_outputs(task).values())
    if task.kind in ("llm", "aggregate"):
        return [Path(task.spec["output"])]
    return []


def aggregate_items(task: PlanTask, by_id: dict[str, PlanTask]) -> list[dict[str, Any]]:
    """What an aggregate task combines: its `inputs`, or the known outputs of its needs, in order."""
    if task.spec.get("inputs") is not None:
        return [{"name": Path(p).name, "input": None, "files": {_fmt(p): p}} for p in task.spec["inputs"]]
    items = []
    for need in (by_id[n] for n in task.needs):
        if need.kind == "transcribe":
            files = {fmt: str(p) for fmt, p in transcribe_outputs(need).items()}
            source = need.spec["input"]
            # a URL's query is no part of its name (and a signed URL's is a secret)
            name = need.spec.get("stem") or Path(source.split("?", 1)[0] if is_url(source) else source).name
            items.append({"name": name, "input": need.spec["input"], "files": files})
        elif need.kind in ("llm", "aggregate"):
            out = need.spec["output"]
            items.append({"name": Path(out).name, "input": need.spec.get("input"), "files": {_fmt(out): out}})
    return items


def _fmt(path: str) -> str:
    return Path(path).suffix.lstrip(".").lower() or "txt"


def check_graph(plan: Plan) -> None:
    """PlanInvalid for what only the whole graph shows: two tasks writing one file, an empty aggregate; and a
    transcribe task whose input is a folder or a glob."""
    problems = Problems(plan.source)
    writers: dict[Path, PlanTask] = {}
    by_id = {t.id: t for t in plan.tasks}
    for task in plan.tasks:
        clashes: dict[str, list[Path]] = {}
        for path in planned_outputs(task):
            first = writers.setdefault(path, task)
            if first is not task:
                clashes.setdefault(first.id, []).append(path)
        for other, paths in clashes.items():
            more = f" (and {len(paths) - 1} more)" if len(paths) > 1 else ""
            problems.add(f"writes {paths[0]}{more}, which task '{other}' writes too; give them different outputs",
                         line=task.line, task=task.id)  # fmt: skip
        source = task.spec.get("input") if task.kind == "transcribe" else None
        if source and not is_url(source) and (Path(source).is_dir() or ({"*", "?"} & set(source) and not Path(source).exists())):
            # it failed at run time as MEDIA_UNREADABLE ("not a regular file") or INPUT_NOT_FOUND
            problems.add(f"'input' {source} is a {'folder' if Path(source).is_dir() else 'glob'}: a transcribe task "
                         f"takes one file; write 'foreach: {source.rstrip('/')}{'/*' if Path(source).is_dir() else ''}' "
                         "and 'input: ${item}' for a task per file", line=task.line, task=task.id)  # fmt: skip
        if task.kind == "aggregate" and not aggregate_items(task, by_id):
            problems.add(
                "has nothing to combine: it lists no 'inputs' and none of its needs is a transcribe, llm or "
                "aggregate task (a shell command's outputs are unknown); list the files in 'inputs'",
                line=task.line, task=task.id,
            )  # fmt: skip
    problems.raise_if_any()


class _Transcriptions:
    """Runtime specs of transcribe tasks: models resolved once each, inputs hashed once."""

    def __init__(self, plan: Plan, settings: Settings, state_dir: Path) -> None:
        self.settings, self.state_dir = settings, state_dir
        self._models: dict[str, ResolvedModel] = {}
        paths = dict.fromkeys(Path(t.spec["input"]) for t in plan.tasks
                              if t.kind == "transcribe" and not is_url(t.spec["input"]))
        files = [InputFile(path=p, rel=Path(p.name), missing=not p.is_file()) for p in paths]
        self.facts = inspect_inputs(files, state_dir) if files else {}

    def model(self, name: str) -> ResolvedModel:
        if name not in self._models:
            self._models[name] = resolve_model(name, self.settings)
        return self._models[name]

    def spec(self, task: PlanTask) -> tuple[dict[str, Any], str, float | None]:
        """(runtime spec, content key, audio length from the input's header) of one transcribe task."""
        options = TranscribeOptions(**task.spec.get("options", {}))
        resolved = self.model(options.model)
        source: Path | str = task.spec["input"]
        if not is_url(task.spec["input"]):
            source = Path(source)
        known = self.facts.get(source) if isinstance(source, Path) else None
        work = work_dir_for(self.state_dir, source, known.digest if known else None, options.result_key(resolved.model_id))
        spec = transcribe_spec(source, task.id, work, transcribe_outputs(task), options, resolved, self.settings)
        extra = job_extra(FetchOptions(**task.spec.get("fetch", {})),
                          PublishOptions(**task.spec["publish"]) if task.spec.get("publish") else None)
        return {**spec, **extra}, work.name, known.audio_s if known else None


def _resources(task: PlanTask, gpu_slots: bool) -> str:
    wants_gpu = task.kind == "transcribe" and task.spec.get("options", {}).get("device") == "cuda"
    resources = "gpu" if task.resources == "any" and wants_gpu else task.resources
    return "any" if resources == "gpu" and not gpu_slots else resources


def store_tasks(plan: Plan, settings: Settings, state_dir: Path, *, gpu_slots: bool) -> list[StoreTask]:
    """The store tasks of a plan, in dependency order. `gpu_slots`: whether any GPU slot will run."""
    transcriptions = _Transcriptions(plan, settings, state_dir)
    by_id = {t.id: t for t in plan.tasks}
    out: list[StoreTask] = []
    for task in plan.tasks:
        spec, content_key, audio_s = dict(task.spec), None, None
        if task.kind == "transcribe":
            try:
                spec, content_key, audio_s = transcriptions.spec(task)
            except ScribefleetError as exc:  # a model no one has: this task fails, not the whole plan
                spec["unrunnable"] = {"code": exc.code, "message": exc.message}
        elif task.kind == "aggregate":
            spec["items"] = aggregate_items(task, by_id)
        out.append(StoreTask(
            key=task.id, kind=task.kind, spec=spec, needs=list(task.needs),
            max_attempts=task.max_attempts(settings.max_attempts),
            timeout_s=task.timeout_s or default_timeout_s(
                task.kind, settings, diarize=bool((spec.get("options") or {}).get("diarize"))),
            resources=_resources(task, gpu_slots), content_key=content_key, audio_s=audio_s,
        ))  # fmt: skip
    demoted = [t.id for t in plan.tasks if t.resources == "gpu" and not gpu_slots]
    if demoted:
        log.warning(
            "%d task(s) prefer a GPU but no GPU slot runs here; they run on the CPU: %s",
            len(demoted), ", ".join(demoted[:10]) + (" ..." if len(demoted) > 10 else ""),
        )  # fmt: skip
    return out


def batch_key(plan: Plan, tasks: list[StoreTask]) -> str:
    """Same plan file and same graph -> same batch."""
    graph = [[t.key, t.kind, t.needs, t.timeout_s, t.max_attempts, t.resources] for t in tasks]
    blob = json.dumps({"plan": str(plan.source), "graph": graph}, sort_keys=True)
    return "plan-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


def task_outputs(kind: str, spec: dict[str, Any]) -> list[str]:
    """The files a stored task is known to write."""
    if kind == "transcribe":
        return list(spec.get("outputs", {}).values())
    return [spec["output"]] if kind in ("llm", "aggregate") and spec.get("output") else []


def create_plan_batch(store: Store, plan: Plan, tasks: list[StoreTask]) -> str:
    """Record the plan's batch and tasks, or bring the existing batch up to date; returns its id.

    The caller holds the dispatcher lock. Tasks whose spec changed are revised
    (queued from scratch) along with every finished task downstream of them;
    failed, canceled and skipped tasks, and finished ones whose outputs are
    gone, are queued again.
    """
    batch_id = store.ensure_batch(
        batch_key(plan, tasks), "plan", {"plan": str(plan.source), "name": plan.name, "vars": plan.vars},
        str(plan.base_dir),
    )  # fmt: skip
    if not store.tasks(batch_id=batch_id):
        _carry_over(store, plan, tasks, batch_id)
    revised: set[str] = set()
    for t in tasks:
        task_id = _add_task(store, batch_id, t)
        if store.revise_task(task_id, t.spec, content_key=t.content_key):
            revised.add(task_id)
        store.note_audio_s(task_id, t.audio_s)
    rows = store.tasks(batch_id=batch_id)
    stale = _downstream(revised, rows)
    again = [
        r.id for r in rows
        if r.is_terminal and (r.id in stale or not r.is_complete or not all(Path(p).is_file() for p in task_outputs(r.kind, r.spec)))
    ]  # fmt: skip
    if again:
        store.reset_tasks(batch_id, again)
    if revised or again:
        log.info("batch %s: %d task(s) revised, %d queued again", batch_id, len(revised), len(again))
    queued = {r.key: r for r in store.tasks(batch_id=batch_id) if r.is_queued}
    for t in tasks:
        if "unrunnable" in t.spec and t.key in queued:  # its needs are skipped when the dispatcher loads them
            problem = t.spec["unrunnable"]
            store.fail(queued[t.key].id, problem["code"], problem["message"])
            log.error("task %s failed [%s] before it started: %s", t.key, problem["code"], problem["message"])
    return batch_id


def _add_task(store: Store, batch_id: str, t: StoreTask) -> str:
    """`t` in the batch (its id; the one already there under its key, if any)."""
    return store.add_task(batch_id, t.key, t.kind, t.spec, needs=t.needs, max_attempts=t.max_attempts,
                          timeout_s=t.timeout_s, resources=t.resources, content_key=t.content_key)  # fmt: skip


def _carry_over(store: Store, plan: Plan, tasks: list[StoreTask], batch_id: str) -> None:
    """Fill a new batch of a plan with the tasks its latest earlier batch finished unchanged.

    The graph changed (a file added to a foreach folder, a limit changed), so this is a new batch; a task
    keeps its earlier result when its kind, spec, limits and needs are the same, its outputs are still there
    and everything it needs was carried over too: a new item runs, and whatever needs it (an aggregate) runs
    again, but the shell and llm tasks of the other items are not done twice.
    """
    earlier = [b for b in store.batches() if b.kind == "plan" and b.id != batch_id
               and b.spec.get("plan") == str(plan.source)]  # fmt: skip
    if not earlier:
        return
    before = {t.key: t for t in store.tasks(batch_id=earlier[-1].id)}
    key_of = {t.id: t.key for t in before.values()}
    carried: set[str] = set()
    for t in tasks:
        task_id = _add_task(store, batch_id, t)
        done = before.get(t.key)
        if (done is None or not done.is_complete or (done.kind, done.spec, done.content_key) != (t.kind, t.spec, t.content_key)
                or (done.timeout_s, done.max_attempts, done.resources) != (t.timeout_s, t.max_attempts, t.resources)
                or sorted(key_of.get(n, n) for n in done.needs) != sorted(t.needs) or not carried.issuperset(t.needs)
                or not all(Path(p).is_file() for p in task_outputs(t.kind, t.spec))):  # fmt: skip
            continue
        store.carry_over(task_id, done)
        carried.add(t.key)
    if carried:
        log.info("batch %s: %d finished task(s) carried over from batch %s", batch_id, len(carried), earlier[-1].id)


def _downstream(roots: set[str], rows: list[Any]) -> set[str]:
    """Every task that needs one of `roots`, directly or not."""
    dependents: dict[str, list[str]] = {}
    for row in rows:
        for need in row.needs:
            dependents.setdefault(need, []).append(row.id)
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        for dep in dependents.get(todo.pop(), []):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen
