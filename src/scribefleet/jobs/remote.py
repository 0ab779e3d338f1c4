"""Folders of media and media URLs through a controller, resumably (seed 001's run_batch.sh; `scribefleet batch`).

Each media file of the input folders is uploaded, and each URL (a playlist:
each entry, read here as `transcribe` reads it) is sent as it is (`{"url"}`,
the controller fetches it); each becomes a job in one controller batch, is polled with exponential backoff and jitter, and its
outputs are downloaded where `transcribe` would put them
(`OUT/<relative path>.<fmt>`). At most `parallel` jobs are in flight. Every
change is written at once, atomically, to the state file
(`batch_state.json` in the first input folder, else in OUT; with each job's `executionMode`), so the same run
started again after
a crash, `kill -9` or Ctrl-C resumes: complete files are skipped, jobs in
flight are re-attached (never submitted twice), failed ones are submitted
again, from their upload when the controller still has it. Every job is
asked for with an `Idempotency-Key` saved in the state file before the
request goes (a new one for each new job of an input): a run killed after
the controller made the job but before its answer was recorded sends the
same key again and gets that job back, for a URL as for an upload. A file is known
by its path relative to its folder (its absolute path where two input folders
hold the same relative path) and recorded with its size and mtime (a
changed file is sent again); a URL is known by the URL itself. A controller that
goes away mid-run is waited for (backoff, up to
`SCRIBEFLEET_CONTROLLER_WAIT_S`); the state file is never lost.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

from scribefleet.client import Backoff, ControllerClient, connect
from scribefleet.config import Settings
from scribefleet.dispatch.lock import PidLock
from scribefleet.errors import (
    ControllerUnreachable, InputNotFound, OutputWriteFailed, ScribefleetError, Unauthorized, UsageError,
)
from scribefleet.fsio import atomic_write_json, make_dir, read_json
from scribefleet.jobs.inputs import InputFile, expand_inputs, is_url
from scribefleet.options import TranscribeOptions
from scribefleet.jobs.views import TaskView
from scribefleet.store.models import TERMINAL_STATUSES

T = TypeVar("T")
STATE_VERSION = 1
BAD_END = TERMINAL_STATUSES - {"complete"}


class Stopped(Exception):
    """The run was interrupted (Ctrl-C); what is recorded stays recorded."""


class BatchState:
    """The state file: what each input became on the controller, rewritten atomically on every change."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path, self.data = path, data
        self._lock = threading.Lock()
        self._file_lock = PidLock(path.with_name(f".{path.name}.lock"), f"is running a batch with the state file {path}")

    @classmethod
    def load(cls, path: Path, *, controller: str, input_dir: Path, options: dict[str, Any]) -> BatchState:
        """Read the state file, or start a new one; refuse one written for another controller."""
        make_dir(path.parent)
        try:
            data = read_json(path)
        except ValueError as exc:
            raise UsageError(f"state file {path} is not valid JSON ({exc}): restore it from a backup, or pass --state NEW to start over", path=str(path)) from exc
        except OSError as exc:  # a folder of that name, no permission to read it
            raise UsageError(f"state file {path} cannot be read ({exc.strerror}): pass --state NEW.json, a file",
                             path=str(path)) from exc  # fmt: skip
        if data is None:
            data = {"version": STATE_VERSION, "files": {}}
        files = data.get("files", {}) if isinstance(data, dict) else None
        if not isinstance(files, dict) or not all(isinstance(e, dict) for e in files.values()):
            raise UsageError(f"{path} is JSON, but no batch state file (an object with 'files'): is --state the "
                             "right file? pass --state NEW to start over", path=str(path))  # fmt: skip
        if data.get("controller") not in (None, controller):
            raise UsageError(
                f"state file {path} belongs to controller {data['controller']}: pass --controller {data['controller']} "
                "to resume that batch, or --state NEW to start another",
                path=str(path),
            )
        if data.get("options") not in (None, options):
            # other options make other transcripts: nothing recorded applies any more
            data["previousBatchId"], data["files"] = data.pop("batchId", None), {}
        data.update(version=STATE_VERSION, controller=controller, inputDir=str(input_dir), options=options)
        state = cls(path, data)
        state.lock()
        state.save()
        return state

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return self.data.setdefault("files", {})

    def entry(self, key: str) -> dict[str, Any]:
        with self._lock:
            return dict(self.files.get(key) or {})

    def update(self, key: str | None, **fields: Any) -> None:
        """Change one file's entry (or, with key None, the top level) and save at once."""
        with self._lock:
            target = self.data if key is None else self.files.setdefault(key, {})
            target.update(fields)
            self.save()

    def job_ids(self) -> set[str]:
        with self._lock:
            return {e["jobId"] for e in self.files.values() if e.get("jobId")}

    def reset(self, key: str) -> None:
        with self._lock:
            self.files[key] = {}
            self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    def lock(self) -> None:
        """Hold `.<name>.lock` beside the state file: two runners on one state would submit twice."""
        self._file_lock.acquire()  # the kernel drops it however this process dies

    def unlock(self) -> None:
        self._file_lock.release()


def input_keys(files: list[InputFile]) -> list[str]:
    """Each file's key in the state file: its path relative to its folder, or its absolute path where files of two
    input folders share that relative path (x/a.wav and y/a.wav given as x and y); a URL's own text."""
    rels = Counter(f.rel.as_posix() for f in files if f.url is None)
    return [f.url or (str(f.path) if rels[f.rel.as_posix()] > 1 else f.rel.as_posix()) for f in files]


class BatchRunner:
    """Drives every file of one input folder through a controller, `parallel` at a time."""

    def __init__(self, client: ControllerClient, state: BatchState, files: list[InputFile], options: TranscribeOptions,
                 settings: Settings, *, parallel: int, say: Callable[[str], None], remote: bool = False) -> None:
        self.client, self.state, self.files, self.options = client, state, files, options
        self.settings, self.parallel, self.say = settings, parallel, say
        self.remote = remote  # ask the controller to run each job on a remote worker (seed 001's --remote)
        self.stop = threading.Event()
        self._keys = {id(f): k for f, k in zip(files, input_keys(files))}

    def key(self, f: InputFile) -> str:
        """The file's key in the state file (`input_keys`)."""
        return self._keys[id(f)]

    def run(self) -> None:
        """Process every file; returns when each is done, failed, or the controller stayed away."""
        if not self.state.data.get("batchId"):
            name = Path(self.state.data["inputDir"]).name
            batch = self._patient(lambda: self.client.create_batch(name), "creating the batch")
            self.state.update(None, batchId=batch["id"])
        todo = [f for f in self.files if not self._finished(f)]
        # jobs already in flight first, so a resumed run never has more than `parallel` at once
        todo.sort(key=lambda f: 0 if self.state.entry(self.key(f)).get("status") in {"queued", "running"} else 1)
        with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="batch") as pool:
            futures = [pool.submit(self._process, f) for f in todo]
            try:
                while wait(futures, timeout=0.5).not_done:
                    pass  # short waits keep Ctrl-C responsive in the main thread
            except KeyboardInterrupt:
                self.stop.set()
                for fut in futures:
                    fut.cancel()
                raise
        errors = [fut.exception() for fut in futures if not fut.cancelled() and fut.exception() is not None]
        for kind in (Unauthorized, ControllerUnreachable):  # the run's own failures, worst first
            found = [e for e in errors if isinstance(e, kind)]
            if found:
                raise found[0]
        for exc in errors:
            if not isinstance(exc, Stopped):
                raise exc

    # -- one file ----------------------------------------------------------------

    def _finished(self, f: InputFile) -> bool:
        e = self.state.entry(self.key(f))
        if f.url is None:
            st = f.path.stat() if f.path.is_file() else None
            if st is None or e.get("sizeBytes") != st.st_size or e.get("mtimeNs") != st.st_mtime_ns:
                return False
        outputs = f.outputs(self.options.formats)
        return e.get("status") == "complete" and e.get("downloaded") is True and all(p.is_file() for p in outputs.values())

    def _process(self, f: InputFile) -> None:
        if self.stop.is_set():
            raise Stopped()
        key = self.key(f)
        try:
            self._drive(f, key)
        except (ControllerUnreachable, Unauthorized, UsageError, OutputWriteFailed):
            self.stop.set()  # the same for every file (the controller's disk too): the run stops, the state file
            raise  # says where each was
        except ScribefleetError as exc:  # this file's own problem (too large, unreadable): the rest go on
            self._record(key, status="failed", lastErrorCode=exc.code, lastErrorMessage=exc.message)
            self.say(f"{key}: failed [{exc.code}] {exc.message}")

    def _drive(self, f: InputFile, key: str) -> None:
        e = self.state.entry(key)
        if f.url is not None:
            if not e:
                self.state.update(key, url=f.url, status="pending")
        else:
            try:
                st = f.path.stat()
            except OSError as exc:
                self._record(key, status="failed", lastErrorCode=InputNotFound.code, lastErrorMessage=f"cannot read {f.path}: {exc.strerror}")
                return
            if e and (e.get("sizeBytes"), e.get("mtimeNs")) != (st.st_size, st.st_mtime_ns):
                self.state.reset(key)  # the file changed since it was sent: its old job does not describe it
                e = {}
            if not e:
                self.state.update(key, sizeBytes=st.st_size, mtimeNs=st.st_mtime_ns, status="pending")
        job = None
        if e.get("jobId") and e.get("status") not in BAD_END:
            job = self._reattach(key, e["jobId"])
        if job is None:
            job = self._submit_url(f.url, key) if f.url is not None else self._submit(f, key)
        job = self._wait(key, job)
        if job["status"] == "complete":
            self._download(f, key, job)

    def _reattach(self, key: str, job_id: str) -> dict[str, Any] | None:
        try:
            job = self._patient(lambda: self.client.job(job_id), f"reading job {job_id}")
        except ScribefleetError as exc:
            if exc.code != "NOT_FOUND":  # not MODEL_NOT_FOUND & co: those are real failures
                raise
            self.say(f"{key}: job {job_id} is gone from the controller; submitting again")
            return None
        self.say(f"{key}: re-attached to job {job_id} ({job['status']})")
        return job

    def _submit(self, f: InputFile, key: str) -> dict[str, Any]:
        batch_id = self.state.data["batchId"]
        opts = self.options.model_dump(mode="json")
        entry = self.state.entry(key)
        upload_id = entry.get("uploadId")
        if upload_id and entry.get("status") == "uploaded" and not entry.get("idempotencyKey"):
            adopted = self._adopt(f, key)  # a state file of a runner that sent no key: found by file name
            if adopted is not None:
                return adopted
        idem = self._job_key(key)
        for _ in range(2):  # a second time only when the controller no longer has the upload
            if not upload_id:
                upload = self._patient(lambda: self.client.upload(f.path), f"uploading {key}")
                upload_id = upload["uploadId"]
                self._record(key, uploadId=upload_id, status="uploaded", jobId=None)
            try:
                job = self._patient(lambda: self.client.create_job(upload_id, opts, batch_id, remote=self.remote,
                                                                   idempotency_key=idem), f"submitting {key}")  # fmt: skip
            except ScribefleetError as exc:
                if exc.code != "NOT_FOUND":  # not MODEL_NOT_FOUND & co: those are real failures
                    raise
                upload_id = None
                continue
            self._record(key, jobId=job["id"], status=job.get("status"), executionMode=job.get("executionMode"),
                         lastErrorCode=None, lastErrorMessage=None, warnings=[], downloaded=False)
            self.say(f"{key}: job {job['id']} {job.get('status')}")
            return job
        raise ScribefleetError(f"{key}: the controller lost the upload twice; check its upload folder and logs")

    def _submit_url(self, url: str, key: str) -> dict[str, Any]:
        """One job of a URL (the controller fetches it); an entry of a playlist was expanded here already."""
        opts = self.options.model_dump(mode="json")
        batch_id = self.state.data["batchId"]
        idem = self._job_key(key)
        jobs = self._patient(lambda: self.client.create_url_job(url, opts, batch_id, idempotency_key=idem),
                             f"submitting {key}")  # fmt: skip
        job = jobs[0]
        self._record(key, jobId=job["id"], status=job.get("status"), executionMode=job.get("executionMode"),
                     lastErrorCode=None, lastErrorMessage=None, warnings=[], downloaded=False)  # fmt: skip
        self.say(f"{key}: job {job['id']} {job.get('status')}")
        return job

    def _job_key(self, key: str) -> str:
        """The Idempotency-Key of the input's next job: the one saved for a request whose job was never
        recorded (the run was killed, the answer lost), else a new one, saved before any request carries it."""
        entry = self.state.entry(key)
        if entry.get("idempotencyKey") and not entry.get("jobId"):
            return str(entry["idempotencyKey"])
        idem = secrets.token_hex(16)
        self._record(key, idempotencyKey=idem, jobId=None)  # a failed or lost job is not this key's
        return idem

    def _adopt(self, f: InputFile, key: str) -> dict[str, Any] | None:
        """The job a killed run created for this upload but had not recorded yet, if it can be told apart
        (a state file written before runners sent an Idempotency-Key).

        Jobs do not carry their upload id, so a job of this batch is taken only when its
        file name is this file's alone among the inputs and no other entry claims it.
        """
        if sum(1 for g in self.files if g.path.name == f.path.name) != 1:
            return None
        claimed = self.state.job_ids()
        batch_id = self.state.data["batchId"]
        jobs = self._patient(lambda: self.client.jobs(batch_id=batch_id), "listing the batch's jobs")
        mine = [j for j in jobs if j.get("filename") == f.path.name and j.get("id") not in claimed]
        if len(mine) != 1:
            return None
        job = mine[0]
        self._record(key, jobId=job["id"], status=job.get("status"), executionMode=job.get("executionMode"), downloaded=False)
        self.say(f"{key}: found job {job['id']} created before the interruption; not submitting again")
        return job

    def _wait(self, key: str, job: dict[str, Any]) -> dict[str, Any]:
        backoff = Backoff(self.settings.controller_poll_min_s, self.settings.controller_poll_max_s)
        seen = None
        while True:
            view = TaskView.from_api(job)
            now = (view.status, view.stage, view.percent)
            if now != seen:
                seen = now
                backoff.reset()
                self._record(key, status=view.status, executionMode=job.get("executionMode"),
                             lastErrorCode=view.error_code, lastErrorMessage=view.error_message,
                             warnings=list(view.warnings))  # fmt: skip
            if view.is_terminal:
                error = f" [{view.error_code}] {view.error_message}" if view.error_code else ""
                self.say(f"{key}: {view.status}{error}")
                for warning in view.warnings:  # a cut-off file completes too: "complete" alone would hide it
                    self.say(f"warning: {key}: {warning}")
                return job
            self._sleep(backoff.next())
            job = self._patient(lambda: self.client.job(job["id"]), f"polling job {job['id']}")

    def _download(self, f: InputFile, key: str, job: dict[str, Any]) -> None:
        offered = job.get("outputs") or {}
        wanted = [fmt for fmt in self.options.formats if not offered or fmt in offered]
        outputs = f.outputs(tuple(wanted))
        for fmt, dest in outputs.items():
            self._patient(lambda: self.client.download(job["id"], fmt, dest), f"downloading {key} ({fmt})")
        self._record(key, downloaded=True, outputs={k: str(v) for k, v in outputs.items()})
        self.say(f"{key}: downloaded {', '.join(outputs)} -> {f.out_stem}.*")

    # -- patience ----------------------------------------------------------------

    def _record(self, key: str, **fields: Any) -> None:
        self.state.update(key, **fields)

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopped()

    def _patient(self, call: Callable[[], T], what: str) -> T:
        """`call()`, waiting out an unreachable controller, or one whose disk has no room (507
        OUTPUT_WRITE_FAILED: its jobs end and free theirs, old uploads go), for up to controller_wait_s."""
        backoff = Backoff(self.settings.controller_poll_min_s, self.settings.controller_poll_max_s)
        since: float | None = None
        while True:
            try:
                return call()
            except (ControllerUnreachable, OutputWriteFailed) as exc:
                if isinstance(exc, OutputWriteFailed) and not getattr(exc, "from_controller", False):
                    raise  # this machine's own disk (a download): not the controller's to free
                now = time.monotonic()
                since = now if since is None else since
                unreachable = isinstance(exc, ControllerUnreachable)
                if now - since >= self.settings.controller_wait_s:
                    if not unreachable:
                        raise OutputWriteFailed(
                            f"{what}: the controller had no room for {self.settings.controller_wait_s:.0f}s "
                            f"(SCRIBEFLEET_CONTROLLER_WAIT_S): {exc.message}; state saved in {self.state.path} - "
                            "free space on the controller and run the same command again to resume",
                            url=self.client.url,
                        ) from exc  # fmt: skip
                    raise ControllerUnreachable(
                        f"{what}: the controller stayed unreachable for {self.settings.controller_wait_s:.0f}s "
                        f"(SCRIBEFLEET_CONTROLLER_WAIT_S); state saved in {self.state.path} - start the controller "
                        "and run the same command again to resume",
                        url=self.client.url,
                    ) from exc
                delay = backoff.next()
                why = "controller unreachable" if unreachable else f"the controller has no room ({exc.message})"
                self.say(f"{what}: {why}; trying again in {delay:.1f}s")
                self._sleep(delay)


def run_remote_batch(inputs: list[str], options: TranscribeOptions, settings: Settings, *, controller: str | None,
                     token: str | None, state_path: Path | None, parallel: int, out: Path,
                     say: Callable[[str], None], remote: bool = False) -> tuple[BatchState, list[InputFile]]:
    """Every media file of the `inputs` folders, and every media URL of them (a playlist: each entry), through the
    controller; the state file and the files (what each became)."""
    opts = options
    url = controller or settings.controller
    if not url:
        raise UsageError("no controller: pass --controller URL or set SCRIBEFLEET_CONTROLLER (start one with 'scribefleet serve')")
    folders = [Path(i).expanduser().resolve() for i in inputs if not is_url(i)]
    for folder in folders:
        if not folder.is_dir():
            raise UsageError(f"--input {folder} is not a folder or URL: name the folder that holds the media, or a "
                             "media URL")  # fmt: skip
    out = out.resolve()
    files = expand_inputs([str(f) for f in folders] + [i for i in inputs if is_url(i)], out_dir=out)
    if not files:
        raise InputNotFound(f"no media found in {', '.join(inputs)}: put audio or video files there")
    home = folders[0] if folders else out
    with connect(url, token, settings) as client:
        bstate = BatchState.load((state_path or home / "batch_state.json").resolve(), controller=client.url,
                                 input_dir=home, options=opts.model_dump(mode="json"))
        say(f"batch of {len(files)} input(s) from {', '.join(inputs)} via {client.url}; state in {bstate.path}")
        try:
            BatchRunner(client, bstate, files, opts, settings, parallel=parallel, say=say, remote=remote).run()
        finally:
            bstate.unlock()
    return bstate, files
