"""Where work is created: from inputs and options to a batch and its transcribe tasks in a store.

Every transcribe task, however it comes in (`scribefleet transcribe`, `submit`,
a plan, an upload to the controller's API), is made by `add_transcribe_task`
from the same pieces: the input's content hash and its header's audio length
(both cached by path, size and mtime; the length lets the dispatcher spread a
long file instead of grouping it before any slot has decoded it), a work folder keyed by that hash and the options' result key (so the
same content with the same options is transcribed once, under any name), and
the runtime spec a slot's handler reads (`transcribe_spec`).

A URL's content is known only after its download, so its task gets a work
folder keyed by the URL (`url-<hash of the URL>-<options key>`) where the
fetch stage leaves the download; the pipeline then continues in the
content-keyed folder beside it (pipeline/job.py), the one a local file with
the same bytes gets. How a URL is downloaded (`FetchOptions`) and where the
outputs are published (`PublishOptions`) travel in the spec as `job_extra`
makes them; neither changes the work folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, NamedTuple

from scribefleet.config import Settings
from scribefleet.fsio import atomic_write_json, make_dir, read_json
from scribefleet.jobs.inputs import InputFile, check_inputs
from scribefleet.options import Device, FetchOptions, PublishOptions, TranscribeOptions, is_http_url
from scribefleet.pipeline.models import ResolvedModel, resolve_model
from scribefleet.store.models import Task, TaskKind
from scribefleet.store.store import Store, new_id


def _hash_cache_path(state_dir: Path) -> Path:
    return state_dir / "content-hashes.json"


class InputFacts(NamedTuple):
    """What making a task needs to know of a local input: its content hash and its header's audio length."""

    digest: str
    audio_s: float | None  # None: the header does not say (the decode stage measures it anyway)


def inspect_inputs(files: list[InputFile], state_dir: Path) -> dict[Path, InputFacts]:
    """The sha256 and audio length (from the header: `pipeline.media.audio_seconds`) of every readable input,
    reusing earlier results for unchanged files."""
    from scribefleet.pipeline.media import audio_seconds, content_hash  # PyAV and numpy: only when hashing

    cache: dict[str, list] = read_json(_hash_cache_path(state_dir)) or {}
    todo: list[Path] = []
    facts: dict[Path, InputFacts] = {}
    changed = False
    for f in files:
        if f.url or f.missing or not f.path.is_file():
            continue
        st = f.path.stat()
        hit = cache.get(str(f.path))
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            if len(hit) < 4:  # written before lengths were recorded: its length is read now
                hit = cache[str(f.path)] = [*hit[:3], audio_seconds(f.path)]
                changed = True
            facts[f.path] = InputFacts(hit[2], hit[3])
        else:
            todo.append(f.path)

    def one(path: Path) -> tuple[Path, InputFacts | None]:
        try:
            return path, InputFacts(content_hash(path), audio_seconds(path))
        except OSError:
            return path, None  # unreadable: the job itself reports why

    with ThreadPoolExecutor(max_workers=2) as pool:  # hashlib releases the GIL
        for path, got in pool.map(one, todo):
            if got:
                st = path.stat()
                facts[path] = got
                cache[str(path)] = [st.st_size, st.st_mtime_ns, got.digest, got.audio_s]
    if todo or changed:
        atomic_write_json(_hash_cache_path(state_dir), cache)
    return facts


def work_dir_for(state_dir: Path, path: Path | str, digest: str | None, result_key: str) -> Path:
    """The checkpoint folder of one transcription: keyed by content hash (path if unreadable, URL for a URL) +
    options key."""
    if isinstance(path, str) and is_http_url(path):
        ident = "url-" + hashlib.sha256(path.encode()).hexdigest()[:15]
    else:
        ident = digest[:20] if digest else "path-" + hashlib.sha256(str(path).encode()).hexdigest()[:15]
    return state_dir / "work" / f"{ident}-{result_key}"


def job_extra(fetch: FetchOptions | None = None, publish: PublishOptions | None = None,
              url_allowlist: list[str] | None = None) -> dict[str, Any]:
    """Spec fields of how a URL is fetched and where outputs are published (absent when default)."""
    extra: dict[str, Any] = {}
    if fetch is not None and fetch != FetchOptions():
        extra["fetch"] = fetch.model_dump(mode="json", exclude_defaults=True)
    if publish is not None:
        extra["publish"] = publish.model_dump(mode="json", exclude_defaults=True)
    if url_allowlist is not None:
        extra["url_allowlist"] = list(url_allowlist)
    return extra


def transcribe_spec(source: Path | str, display: str, work_dir: Path, outputs: dict[str, Path],
                    options: TranscribeOptions, resolved: ResolvedModel, settings: Settings) -> dict[str, Any]:
    """The runtime spec of a `transcribe` task: what a slot's handler reads. `source`: a path or a media URL."""
    is_url = isinstance(source, str) and is_http_url(source)
    return {
        ("url" if is_url else "input_path"): str(source),
        "display": display,
        "work_dir": str(work_dir),
        "outputs": {k: str(v) for k, v in outputs.items()},
        "options": options.model_dump(mode="json"),
        "max_file_mb": settings.max_file_mb,
        "window_s": settings.window_s,
        "model_path": str(resolved.path),
        "model_id": resolved.model_id,
    }


def add_transcribe_task(store: Store, batch_id: str, key: str, *, input_path: Path | str, display: str,
                        digest: str | None, outputs: dict[str, Path], options: TranscribeOptions,
                        resolved: ResolvedModel, settings: Settings, extra: dict[str, Any] | None = None,
                        remote: bool = False,
                        audio_s: float | None | Literal["unread"] = "unread") -> tuple[str, dict[str, Any]]:
    """Add (or find) one transcribe task of a batch; returns (task id, its spec). `input_path`: a path or URL.

    `audio_s`: the input's length from its header as `inspect_inputs` read it (None: the header does not
    say); "unread" (a caller that did not inspect the input): read here for a local file. The store keeps it
    until a slot measures the decoded length (dispatch/groups.py plans with it).

    `remote`: it runs on a remote worker (spec "remote": true, dispatch/placement.py); its own
    limit is the engine's (REMOTE_WORKER_TIMEOUT_SECONDS for the wait, again for the run), so
    the dispatcher's is only a backstop above both.
    """
    work = work_dir_for(store.state_dir, input_path, digest, options.result_key(resolved.model_id))
    spec = {**transcribe_spec(input_path, display, work, outputs, options, resolved, settings), **(extra or {})}
    resources = "gpu" if options.device is Device.CUDA else "any"
    # the diarize stage has its own limit (DIARIZATION_FAILED past it): the task's limit leaves room for it
    timeout_s = settings.transcribe_timeout_s + (settings.diarize_timeout_s if options.diarize else 0.0)
    if remote:
        spec["remote"], resources = True, "any"
        timeout_s = 2 * settings.remote_worker_timeout_s + 300
    task_id = store.add_task(
        batch_id, key, TaskKind.TRANSCRIBE.value, spec, max_attempts=settings.max_attempts,
        timeout_s=timeout_s, resources=resources, content_key=work.name,
    )  # fmt: skip
    if audio_s == "unread":
        from scribefleet.pipeline.media import audio_seconds  # PyAV: only for a local file

        audio_s = audio_seconds(spec["input_path"]) if "input_path" in spec else None
    store.note_audio_s(task_id, audio_s)
    return task_id, spec


def _batch_key(files: list[InputFile], options: TranscribeOptions, model_id: str) -> str:
    blob = json.dumps(
        {"inputs": sorted(f.source for f in files), "options": options.model_dump(mode="json"), "model": model_id},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def create_batch(store: Store, files: list[InputFile], options: TranscribeOptions, resolved: ResolvedModel,
                 settings: Settings, out: Path, *, force: bool = False, stages: tuple[str, ...] = (),
                 extra: dict[str, Any] | None = None) -> str:
    """Record the batch of a `transcribe` run and one task per input; bring an existing batch up to date.

    The caller holds the dispatcher lock. Of a batch seen before: tasks whose input
    changed get the new spec; failed, canceled and skipped tasks, and finished ones
    whose outputs were deleted, are queued again (their checkpoints make that cheap).
    `force` throws every checkpoint away and queues every task. `stages` runs those
    stages (and what depends on them) of every task again, finished ones included,
    from the other stages' checkpoints (seed 004's `--stages`).
    """
    facts = inspect_inputs(files, store.state_dir)
    batch_id = store.ensure_batch(
        _batch_key(files, options, resolved.model_id), "transcribe",
        {"inputs": [f.source for f in files], "options": options.model_dump(mode="json")}, str(out),
    )
    before = {t.key: t for t in store.tasks(batch_id=batch_id)} if stages else {}
    for f in files:
        rerun = _rerun_of(before.get(f.source), stages) if stages else None
        known = facts.get(f.path)
        task_id, spec = add_transcribe_task(
            store, batch_id, f.source, input_path=f.url or f.path, display=str(f.rel),
            digest=known.digest if known else None, outputs=f.outputs(options.formats), options=options,
            resolved=resolved, settings=settings, extra={**(extra or {}), **(rerun or {})},
            audio_s=known.audio_s if known else None,
        )  # fmt: skip
        if store.revise_task(task_id, spec, content_key=Path(spec["work_dir"]).name) and known:
            store.note_audio_s(task_id, known.audio_s)  # the input changed: the length it had is forgotten
    if force:
        for t in store.tasks(batch_id=batch_id):
            shutil.rmtree(t.spec["work_dir"], ignore_errors=True)
        store.reset_tasks(batch_id)
        return batch_id
    again = [
        t.id for t in store.tasks(batch_id=batch_id)
        if t.is_terminal and (stages or not t.is_complete or not all(Path(p).is_file() for p in t.spec["outputs"].values()))
    ]
    if again:
        store.reset_tasks(batch_id, again)
    return batch_id


def _rerun_of(task: Task | None, stages: tuple[str, ...]) -> dict[str, Any]:
    """The spec fields asking a task to run `stages` again: a new request, or the same one when an
    unfinished earlier request for the same stages is still on the task (so it resumes)."""
    if task is not None and not task.is_complete and tuple(task.spec.get("rerun_stages") or ()) == stages:
        return {"rerun_stages": list(stages), "rerun_id": task.spec.get("rerun_id") or new_id()}
    return {"rerun_stages": list(stages), "rerun_id": new_id()}


def check_enrollment(options: TranscribeOptions) -> None:
    """The `speaker_names` folder checked before anything runs (INVALID_OPTIONS naming a clip that is not audio or
    is silent): found only at `diarize`, it would fail every job of the batch after its transcription."""
    if options.speaker_names is not None:
        from scribefleet.pipeline.speakers import enrollment_voices  # numpy and PyAV: only when there are clips

        enrollment_voices(Path(options.speaker_names))


def submit_file(file: Path | str, out: Path, options: TranscribeOptions, settings: Settings, *,
                fetch: FetchOptions | None = None, publish: PublishOptions | None = None) -> list[Task]:
    """One file or URL as a new batch of the store of `out` (the work of `scribefleet submit`): one task, or one
    per entry of a playlist URL.

    It takes no lock: a new batch with new tasks is only added (as anyone may),
    never changed, so a dispatcher running there meanwhile is not disturbed.
    """
    out = out.resolve()
    files = check_inputs([str(file)], out_dir=out, single_file=True, fetch=fetch)
    resolved = resolve_model(options.model, settings)
    check_enrollment(options)
    state_dir = out / ".scribefleet"
    make_dir(state_dir)
    facts = inspect_inputs(files, state_dir)
    extra = job_extra(fetch, publish)
    tasks = []
    with Store.open(state_dir) as store:
        batch_id = store.ensure_batch(f"submit-{new_id()}", "submit",
                                      {"inputs": [str(file)], "options": options.model_dump(mode="json")}, str(out))
        for f in files:
            known = facts.get(f.path)
            task_id, _ = add_transcribe_task(store, batch_id, f.source, input_path=f.url or f.path,
                                             display=str(f.rel), digest=known.digest if known else None,
                                             outputs=f.outputs(options.formats), options=options, resolved=resolved,
                                             settings=settings, extra=extra,
                                             audio_s=known.audio_s if known else None)  # fmt: skip
            task = store.task(task_id)
            assert task is not None
            tasks.append(task)
    return tasks
