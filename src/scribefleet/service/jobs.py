"""Jobs of the HTTP API: a transcribe task made from an upload or a media URL, and the JSON a client sees of it.

A URL is checked against the controller's network guard first (URL_NOT_ALLOWED
for loopback, link-local and private addresses not in SCRIBEFLEET_URL_ALLOWLIST)
and the task carries the allowlist, so its fetch stage checks again every
connection it makes (pipeline/netguard.py). A playlist is one job per entry,
all in the request's batch (read with the guard too, nothing downloaded).

A job is a `transcribe` task in the controller's store, made by
`jobs.create.add_transcribe_task` like every other one, so the same content
with the same options is transcribed once whichever way it came in. Its
outputs go to `STATE/jobs/<key>/<name>.<format>`; the task key is
`<key>/<filename>` with a fresh random key, which is how log lines name it.

A request with an `Idempotency-Key` (`idempotent`) makes its jobs under
keys derived from it, `idem-<hash>[-<entry>]/<filename>`, in its batch (or,
without a batchId, in a batch of its own keyed by it): the same request sent
again, after a lost answer or by a client killed before it recorded the job,
finds them (`find_idempotent`) and nothing new is made; two at once make one
job too, since a task's key is unique in its batch.

The job JSON is `jobs.views.TaskView.as_api_json()`: seed 001's shape in
camelCase (docs/api.md).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from scribefleet.errors import JobNotComplete, NotFound, UsageError
from scribefleet.jobs.create import add_transcribe_task, job_extra
from scribefleet.jobs.inputs import check_url_form, url_inputs
from scribefleet.jobs.seed003 import done_output, error_output, parse_request
from scribefleet.jobs.views import batch_progress, iso, task_view
from scribefleet.options import Device, FetchOptions, PublishOptions, TranscribeOptions
from scribefleet.pipeline.models import ResolvedModel, resolve_api_model
from scribefleet.service.controller import OWNS_UPLOAD, Controller
from scribefleet.service.limits import list_item
from scribefleet.jobs.redact import redact_paths
from scribefleet.store.models import Batch, Task
from scribefleet.store.store import new_id

BATCH_KIND = "api"
__all__ = ["iso", "job_json"]


def job_json(task: Task, controller: Controller, *, stages: bool = False) -> dict[str, Any]:
    """A task as the API shows a job (server paths cut from its error); `stages` adds each stage's history
    (one job's page, not lists); a remote job in flight shows the remote engine's live view of it."""
    view = task_view(task, controller.store.events(task_id=task.id) if stages else None)
    remote = controller.remote_view(task.id) if view.execution_mode == "remote" and not task.is_terminal else None
    out = view.as_api_json(slot_is_gpu=controller.slot_is_gpu(task.slot), remote=remote)
    out["lastErrorMessage"] = redact_paths(out["lastErrorMessage"], controller.settings, controller.state_dir)
    if view.status == "queued" and view.execution_mode == "local":
        out["message"] = controller.queue_reason()
    if view.execution_mode == "remote" and not task.is_terminal:
        # a job that waits on a worker that does not answer says so (REMOTE_WORKER_UNREACHABLE & co), though not failed
        waiting = (remote or {}).get("lastError") or (controller.remote_wait_error() if view.status == "queued_remote" else None)
        if waiting and not out["lastErrorCode"]:
            out["lastErrorCode"], out["lastErrorMessage"] = waiting.get("code"), waiting.get("message")
    return out


def get_task(controller: Controller, job_id: str) -> Task:
    task = controller.store.task(job_id)
    if task is None:
        raise NotFound(f"no job has the id {job_id!r}; GET /api/jobs lists them", jobId=job_id)
    return task


def get_batch(controller: Controller, batch_id: str) -> Batch:
    batch = controller.store.batch(batch_id)
    if batch is None:
        raise NotFound(f"no batch has the id {batch_id!r}; create one with POST /api/batches", batchId=batch_id)
    return batch


def create_batch(controller: Controller, name: str | None, *, single: bool = False, tag: str | None = None) -> Batch:
    """A new API batch (`single`: the batch of one job created without a batchId; `tag`: that of an
    idempotent request, the same batch for the same key)."""
    key = f"{BATCH_KIND}:{tag or new_id()}"
    batch_id = controller.store.ensure_batch(key, BATCH_KIND, {"name": name, "single": single}, None)
    return get_batch(controller, batch_id)


def idempotent(idempotency_key: str | None) -> str | None:
    """The tag of a request's Idempotency-Key (what its jobs' keys and its own batch's key start with)."""
    if not idempotency_key:
        return None
    return "idem-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]


def find_idempotent(controller: Controller, tag: str | None, batch_id: str | None) -> list[Task]:
    """The jobs an earlier request with this Idempotency-Key tag made (in `batch_id`, else in its own batch);
    [] for a key not seen (or none)."""
    if tag is None:
        return []
    batch = get_batch(controller, batch_id) if batch_id else controller.store.batch_by_key(f"{BATCH_KIND}:{tag}")
    return controller.store.tasks_with_key_prefix(batch.id, tag) if batch is not None else []


def batch_json(batch: Batch, controller: Controller, *, jobs: bool = True, list_jobs: bool = True) -> dict[str, Any]:
    """A batch as the API shows it; with `jobs`, its progress and (with `list_jobs`) every job too."""
    out: dict[str, Any] = {
        "id": batch.id,
        "name": batch.spec.get("name"),
        "createdAt": iso(batch.created_at),
        "counts": {state.value: n for state, n in controller.store.counts(batch.id).items()},
    }
    if jobs:
        tasks = controller.store.tasks(batch.id)
        out["progress"] = batch_progress_json(tasks)
        if list_jobs:
            out["jobs"] = [list_item(job_json(t, controller)) for t in tasks]
    return out


def batch_progress_json(tasks: list[Task]) -> dict[str, Any]:
    """A batch's files, audio, elapsed time and ETA (jobs/eta.py), as GET /api/batches/{id} and its stream say."""
    return batch_progress([task_view(t) for t in tasks]).as_api_json()


def _checked(controller: Controller, options: TranscribeOptions, batch_id: str | None,
             remote: bool | None) -> tuple[Batch | None, ResolvedModel, bool]:
    """The job's batch (None: make one), resolved model and whether it runs on a remote worker
    (REMOTE_WORKER_MODE decides, Controller.runs_remotely), after the checks every job passes."""
    settings = controller.settings
    if options.speaker_names is not None:  # a folder of the server: not an API client's to name
        raise UsageError("speaker_names (a folder of enrollment clips) is not offered over the API; "
                         "use diarize with speakers / min_speakers / max_speakers")
    batch = get_batch(controller, batch_id) if batch_id else None
    on_worker = controller.runs_remotely(remote)
    if on_worker:  # the worker resolves the model (the controller may not have it)
        resolved = ResolvedModel(path=Path(options.model), model_id=options.model)
    else:
        resolved = resolve_api_model(options.model, settings)  # MODEL_NOT_FOUND now, not in a slot later
    if not on_worker and options.device is Device.CUDA and not any(s.device == "cuda" for s in controller.plan()):
        raise UsageError(
            "this job asks for device cuda, but the controller has no GPU slot; "
            "use device auto or cpu, or start the controller with --device cuda",
            device="cuda",
        )
    return batch, resolved, on_worker


def check_publish(controller: Controller, publish: PublishOptions | None) -> None:
    """URL_NOT_ALLOWED for an S3 endpoint on the controller's own network (not on SCRIBEFLEET_URL_ALLOWLIST):
    a request must not make the controller send its uploads there."""
    from scribefleet.pipeline.fetch import check_url_allowed

    if publish is not None and publish.endpoint_url:
        check_url_allowed(publish.endpoint_url, controller.settings.url_allowlist)


def create_url_jobs(controller: Controller, url: str, options: TranscribeOptions, batch_id: str | None, *,
                    publish: PublishOptions | None = None, tag: str | None = None) -> list[Task]:
    """Queue a transcribe task of a media URL (fetched by the slot), one per entry of a playlist, refusing
    internal addresses (the URL's, each entry's, and every connection reading the playlist makes).
    `tag`: of the request's Idempotency-Key (`idempotent`), which names the tasks and a batch of its own."""
    from scribefleet.pipeline.fetch import check_url_allowed

    settings = controller.settings
    check_url_form(url)
    check_url_allowed(url, settings.url_allowlist)
    check_publish(controller, publish)
    batch, resolved, on_worker = _checked(controller, options, batch_id, None)
    if on_worker:
        raise UsageError("media URLs are fetched by the controller's own slots, and REMOTE_WORKER_MODE=required "
                         "sends every job to a worker: upload the file instead (POST /api/uploads)", url=url)
    entries = url_inputs([url], FetchOptions(), allowlist=settings.url_allowlist)
    for entry in entries:
        if entry.url != url:
            check_url_allowed(str(entry.url), settings.url_allowlist)
    batch = batch or create_batch(controller, None, single=True, tag=tag)
    extra = job_extra(publish=publish, url_allowlist=settings.url_allowlist)
    made = []
    for i, entry in enumerate(entries):
        assert entry.url is not None
        key = new_id() if tag is None else tag if len(entries) == 1 else f"{tag}-{i}"
        if entry.url == url:  # one media: named after the URL's path, as an upload after its file
            name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "media"
            stem = Path(name).stem or "media"
        else:  # a playlist entry: after its title
            name = stem = entry.rel.name
        task_id, _ = add_transcribe_task(
            controller.store, batch.id, f"{key}/{name}", input_path=entry.url, display=name, digest=None,
            outputs={fmt: controller.jobs_dir / key / f"{stem}.{fmt}" for fmt in options.formats}, options=options,
            resolved=resolved, settings=settings, extra=extra,
        )  # fmt: skip
        made.append(get_task(controller, task_id))
    return made


def create_seed_job(controller: Controller, payload: dict[str, Any]) -> Task:
    """Queue seed 003's job (`{"input": {...}}`, read by `jobs.seed003`): its URL fetched under the network
    guard, the SRT published as `<request_id>.srt` with the input's keys, which are sealed for the slot
    (pipeline/sealed.py) and never enter the spec, the job JSON, events or logs."""
    from scribefleet.pipeline.fetch import check_url_allowed
    from scribefleet.pipeline.sealed import seal

    settings = controller.settings
    req = parse_request(payload, settings.api_default_model)
    check_url_allowed(req.url, settings.url_allowlist)
    check_publish(controller, req.publish)
    batch, resolved, on_worker = _checked(controller, req.options, None, None)
    if on_worker:
        raise UsageError("seed 003 jobs fetch a URL on the controller's own slots, and REMOTE_WORKER_MODE=required "
                         "sends every job to a worker; run the serverless worker there instead", url=req.url)
    batch = create_batch(controller, None, single=True)
    key = new_id()
    extra = {"seed003": {"request_id": req.request_id},
             **job_extra(publish=req.publish, url_allowlist=settings.url_allowlist)}
    if req.credentials is not None:
        extra["credentials_file"] = str(seal(controller.state_dir / "sealed", req.credentials))
    task_id, _ = add_transcribe_task(
        controller.store, batch.id, f"{key}/{req.srt_name}", input_path=req.url, display=req.srt_name, digest=None,
        outputs={"srt": controller.jobs_dir / key / req.srt_name}, options=req.options, resolved=resolved,
        settings=settings, extra=extra,
    )  # fmt: skip
    return get_task(controller, task_id)


def seed_status(task: Task, controller: Controller) -> dict[str, Any]:
    """A seed 003 job as the seed's output JSON (with our job `id`): starting, running, done or error.

    A job that ended without publishing has no more use for its keys: their sealed file is deleted here.
    """
    from scribefleet.pipeline.sealed import forget

    seed = task.spec.get("seed003")
    if not isinstance(seed, dict):
        raise NotFound(f"job {task.id} was not made by /api/handler/run; GET /api/jobs/{task.id} shows it",
                       jobId=task.id)  # fmt: skip
    request_id = seed.get("request_id")
    published = (task.result or {}).get("published") or {}
    if task.is_complete and "srt" in published:
        return {"id": task.id, **done_output(request_id, published)}
    if task.is_complete:  # not expected: every seed job publishes; said rather than answered as done
        return {"id": task.id, **error_output(request_id, "PUBLISH_FAILED", "the job completed without publishing "
                                              "its SRT; submit the request again")}  # fmt: skip
    if task.is_terminal:
        forget(task.spec.get("credentials_file"))
        view = job_json(task, controller)
        code = view["lastErrorCode"] or ("USER_CANCELED" if task.state.value == "canceled" else "INTERNAL_ERROR")
        return {"id": task.id, **error_output(request_id, code, view["lastErrorMessage"] or task.state.value)}
    return {"id": task.id, "status": "running" if task.state.value == "running" else "starting",
            "request_id": request_id}  # fmt: skip


def create_job(controller: Controller, upload_id: str, options: TranscribeOptions, batch_id: str | None, *,
               publish: PublishOptions | None = None, remote: bool | None = None, tag: str | None = None,
               owns_upload: bool = False) -> Task:
    """Queue a transcribe task of an upload; the running dispatcher picks it up within cancel_poll_s.

    `remote`: the job asks to run on a remote worker. `tag`: of the request's Idempotency-Key (`idempotent`).
    `owns_upload`: the upload was made for this job alone (the OpenAI routes; its client never learns the
    upload's id), so the controller deletes it once the job has ended (`Controller.sweep_uploads`).
    """
    settings = controller.settings
    controller.uploads.get(upload_id)  # an unknown upload is NOT_FOUND before any option is looked at
    check_publish(controller, publish)
    batch, resolved, on_worker = _checked(controller, options, batch_id, remote)
    with controller.uploads_guard:  # no sweep deletes the upload between this look and the job's row
        upload = controller.uploads.get(upload_id)
        if batch is None:
            batch = create_batch(controller, None, single=True, tag=tag)
        key = tag or new_id()
        out_dir = controller.jobs_dir / key
        stem = Path(upload.filename).stem or "upload"
        extra = {"upload_id": upload.upload_id, **({OWNS_UPLOAD: True} if owns_upload else {}),
                 **job_extra(publish=publish)}  # fmt: skip
        task_id, _ = add_transcribe_task(
            controller.store, batch.id, f"{key}/{upload.filename}", input_path=upload.path, display=upload.filename,
            digest=upload.sha256, outputs={fmt: out_dir / f"{stem}.{fmt}" for fmt in options.formats},
            options=options, resolved=resolved, settings=settings, extra=extra, remote=on_worker,
        )  # fmt: skip
    return get_task(controller, task_id)


def download_stem(task: Task) -> str:
    """The name a download gets, without extension: the uploaded file's stem."""
    return Path(str(task.spec.get("display") or task.key)).stem or "output"


def output_file(task: Task, fmt: str) -> Path:
    """The published output of a complete job in format `fmt`."""
    published = (task.result or {}).get("outputs") or {}
    wanted = (task.spec.get("outputs") or {})
    if fmt not in wanted:
        raise NotFound(
            f"job {task.id} has no {fmt!r} output; it asked for {', '.join(wanted) or 'none'}",
            jobId=task.id, format=fmt,
        )  # fmt: skip
    if not task.is_complete:
        raise JobNotComplete(
            f"job {task.id} is {task.state.value}, not complete; its outputs exist once it completes",
            jobId=task.id, status=task.state.value,
        )  # fmt: skip
    path = Path(published.get(fmt) or wanted[fmt])
    if not path.is_file():
        raise NotFound(f"the {fmt} output of job {task.id} is gone from the controller's disk", jobId=task.id, format=fmt)
    return path
