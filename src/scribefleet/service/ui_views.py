"""What the UI's templates draw: API answers (docs/api.md) turned into small view objects.

Pure functions of JSON, no I/O: `ui.py` fetches, these shape, the templates
draw. They read the API's field names in one place, tolerate fields an older
or newer controller leaves out, and format what people read (times as
`00:01:02.345`, percents as whole numbers). Nothing here escapes text: the
templates do, always.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from scribefleet.jobs.eta import clock as clock_s
from scribefleet.jobs.views import TaskView
from scribefleet.options import FORMATS
from scribefleet.store.models import TERMINAL_STATUSES



def error_of(resp: httpx.Response) -> tuple[str, str]:
    """(code, message) of an API error answer `{"error": {"code", "message"}}`."""
    try:
        err = resp.json().get("error") or {}
    except (ValueError, AttributeError):
        err = {}
    code = str(err.get("code") or f"HTTP_{resp.status_code}")
    return code, str(err.get("message") or f"The controller answered HTTP {resp.status_code}.")


def items_of(listing: Any) -> list[dict[str, Any]]:
    """The rows of a paged listing (`{"items": [...]}`; a bare list is accepted too)."""
    if isinstance(listing, list):
        return listing
    if isinstance(listing, dict):
        rows = listing.get("items", listing.get("jobs", []))
        return rows if isinstance(rows, list) else []
    return []


def total_of(listing: Any, default: int) -> int:
    total = listing.get("total") if isinstance(listing, dict) else None
    return total if isinstance(total, int) else default


def percent_of(value: Any) -> int:
    """A progress percent as a whole number in 0..100."""
    try:
        pct = float(value)
    except (TypeError, ValueError):
        return 0
    return max(0, min(100, int(pct + 0.5)))


@dataclass(frozen=True)
class JobView:
    """One job as the pages show it."""

    id: str
    name: str
    status: str
    stage: str | None = None
    percent: int = 0
    error_code: str | None = None
    error_message: str | None = None
    outputs: list[tuple[str, str]] = field(default_factory=list)  # (format, url), in FORMATS order
    batch_id: str | None = None
    execution_mode: str | None = None
    slot: str | None = None
    times: str = ""  # "elapsed 1m05s · ETA 30s" (times_text)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


def job_view(job: dict[str, Any]) -> JobView:
    """The API's job JSON, read by the one TaskView, laid out for the pages."""
    view = TaskView.from_api(job)
    order = {fmt: i for i, fmt in enumerate(FORMATS)}
    links = sorted(view.outputs.items(), key=lambda fu: (order.get(fu[0], 99), fu[0]))
    return JobView(
        id=view.id,
        name=view.name if view.name != view.id else str(job.get("key") or view.id),
        status=view.status,
        stage=view.stage or job.get("stage"),
        percent=100 if view.status == "complete" else percent_of(view.percent),
        error_code=view.error_code,
        error_message=view.error_message,
        outputs=links,
        batch_id=view.batch_id,
        execution_mode=job.get("executionMode"),
        slot=view.slot,
        times=times_text(view.elapsed_s, view.eta_s, view.is_terminal),
    )


#: the statuses a job shows (GET /api/jobs?status=), in the order the home page's filter lists them
JOB_STATUSES = ("queued", "queued_remote", "running", "complete", "failed", "canceled", "skipped")
#: shown in the filter even with no job in them (the others only when some job is)
ALWAYS_SHOWN = frozenset({"queued", "running", "complete", "failed", "canceled"})


@dataclass(frozen=True)
class StatusFilter:
    """One choice of the home page's status filter: a status ('' for all), its job count, its link."""

    status: str
    count: int
    url: str
    current: bool


@dataclass(frozen=True)
class JobsPage:
    """One page of the home page's job list: its rows, where it lies in the whole list, the ways to move."""

    jobs: list[JobView]
    total: int  # jobs of the chosen status (all of them without one)
    offset: int
    status: str
    filters: list[StatusFilter]
    newer_url: str | None  # the page before (newer jobs); None on the first
    older_url: str | None  # the page after; None on the last

    @property
    def first(self) -> int:
        """The 1-based position of the first row ("21" in "21-40 of 48"); 0 when the page is empty."""
        return self.offset + 1 if self.jobs else 0

    @property
    def last(self) -> int:
        return self.offset + len(self.jobs)

    @property
    def is_live(self) -> bool:
        """Whether jobs made now belong at its top: the first page of every status."""
        return self.offset == 0 and not self.status


def jobs_url(status: str, offset: int) -> str:
    """The home page's URL showing jobs of `status` ('' for all) from `offset`."""
    query = {k: v for k, v in (("status", status), ("offset", offset)) if v}
    return "/ui/" + (f"?{urlencode(query)}" if query else "")


def chosen_status(raw: str | None) -> str:
    """The `status` query of the home page if it names one status, else '' (all)."""
    return raw if raw in JOB_STATUSES else ""


def page_offset(raw: str | None, page_size: int) -> int:
    """The `offset` query of the home page: a whole number >= 0, rounded down to a page boundary."""
    try:
        offset = int(raw or 0)
    except ValueError:
        return 0
    return max(0, min(offset, 10**9)) // page_size * page_size


def jobs_page(listing: Any, counts: dict[str, int], status: str, offset: int, page_size: int) -> JobsPage:
    """The home page's job list from GET /api/jobs (one page) and each status's total (`counts`)."""
    jobs = [job_view(j) for j in items_of(listing)]
    all_jobs = sum(counts.values())
    total = total_of(listing, len(jobs))
    filters = [StatusFilter("", all_jobs, jobs_url("", 0), not status)]
    filters += [StatusFilter(s, counts.get(s, 0), jobs_url(s, 0), s == status) for s in JOB_STATUSES
                if s in ALWAYS_SHOWN or counts.get(s, 0) or s == status]  # fmt: skip
    newer = jobs_url(status, max(0, offset - page_size)) if offset > 0 else None
    older = jobs_url(status, offset + page_size) if offset + page_size < total else None
    return JobsPage(jobs, total, offset, status, filters, newer, older)


def times_text(elapsed_s: float | None, eta_s: float | None, finished: bool) -> str:
    """A job's or batch's times as the pages show them (app.js timesText writes the same)."""
    if elapsed_s is None:
        return ""
    if finished:
        return f"took {clock_s(elapsed_s)}"
    return f"elapsed {clock_s(elapsed_s)} · ETA {clock_s(eta_s)}"


@dataclass(frozen=True)
class BatchView:
    """A batch's summary line, of all its jobs (not only the page's): how many are done, how far all are."""

    id: str
    total: int
    done: int
    percent: int
    status: str  # "running", "done", "done, 3 failed", "empty" (app.js drawSummary writes the same)
    state: str  # "running", "done" or "empty": the summary's data-state
    name: str = ""
    times: str = ""  # the whole batch's elapsed time and ETA (GET /api/batches/{id}'s progress)
    first: int = 0  # the rows of this page: "201-400 of 450"
    last: int = 0
    newer_url: str | None = None
    older_url: str | None = None


def batch_view(batch_id: str, batch: dict[str, Any], *, offset: int = 0, shown: int = 0, page_size: int = 1) -> BatchView:
    """The batch page's summary from GET /api/batches/{id} (`counts` and `progress` are of every job), and where
    the page's `shown` rows from `offset` lie among them."""
    counts = batch.get("counts") if isinstance(batch.get("counts"), dict) else {}
    sums = batch.get("progress") if isinstance(batch.get("progress"), dict) else {}
    total = sum(n for n in counts.values() if isinstance(n, int))
    done = sum(n for s, n in counts.items() if s in TERMINAL_STATUSES and isinstance(n, int))
    failed = counts.get("failed") if isinstance(counts.get("failed"), int) else 0
    state = "empty" if not total else "done" if done == total else "running"
    status = f"done, {failed} failed" if state == "done" and failed else state
    times = times_text(sums.get("elapsedS"), sums.get("etaS"), state == "done")
    base = f"/ui/batches/{quote(batch_id, safe='')}"
    newer = (base + (f"?offset={offset - page_size}" if offset > page_size else "")) if offset > 0 else None
    older = f"{base}?offset={offset + page_size}" if offset + page_size < total else None
    return BatchView(batch_id, total, done, batch_percent(sums, done, total), status, state,
                     name=str(batch.get("name") or ""), times=times, first=offset + 1 if shown else 0,
                     last=offset + shown, newer_url=newer, older_url=older)  # fmt: skip


def batch_percent(progress: dict[str, Any], done: int, total: int) -> int:
    """How far a batch is, 0..100: of the audio of its files that can still complete (a batch's `progress`),
    else of those files; every file ended when none can (app.js batchPercent is the same)."""
    files, audio = progress.get("files"), progress.get("audioS")
    if not files:
        return 100 if total and done == total else 0
    if audio:
        return percent_of(100 * (progress.get("audioDoneS") or 0) / audio)
    return percent_of(100 * (progress.get("filesDone") or 0) / files)


def clock(seconds: Any) -> str:
    """Seconds as `HH:MM:SS.mmm` (the SRT clock, with a dot)."""
    try:
        ms = max(0, int(round(float(seconds) * 1000)))
    except (TypeError, ValueError):
        return "--:--:--"
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


#: how many speaker colours the stylesheet has (`.spk-0` ... `.spk-11`); more speakers reuse them in turn
SPEAKER_COLOURS = 12


@dataclass(frozen=True)
class Segment:
    """One timed line of a transcript: clock times to read, seconds to seek to, who speaks."""

    start: str
    end: str
    text: str
    start_s: float = 0.0
    end_s: float = 0.0
    speaker: str | None = None
    colour: int = 0  # index of the speaker's colour (order of first appearance)


@dataclass(frozen=True)
class Transcript:
    """A transcript to read: timed segments, or plain text when there are none."""

    segments: list[Segment] = field(default_factory=list)
    text: str = ""
    language: str | None = None
    speakers: list[str] = field(default_factory=list)  # in order of first appearance


def _seconds(value: Any) -> float:
    try:
        return max(0.0, round(float(value), 3))
    except (TypeError, ValueError):
        return 0.0


def transcript_from_json(data: Any) -> Transcript:
    """The JSON output (openai-whisper's result shape: text, segments[start, end, text, speaker?], language)."""
    if not isinstance(data, dict):
        return Transcript(text=str(data))
    # sorted by start: the page binary-searches the starts, and colours go in order of first appearance
    rows = sorted((seg for seg in data.get("segments") or [] if isinstance(seg, dict)),
                  key=lambda seg: _seconds(seg.get("start")))
    speakers = list(dict.fromkeys(str(seg["speaker"]) for seg in rows if seg.get("speaker")))
    colour = {name: i % SPEAKER_COLOURS for i, name in enumerate(speakers)}
    segments = []
    for seg in rows:
        speaker = str(seg["speaker"]) if seg.get("speaker") else None
        segments.append(Segment(
            clock(seg.get("start")), clock(seg.get("end")), str(seg.get("text") or "").strip(),
            start_s=_seconds(seg.get("start")), end_s=_seconds(seg.get("end")), speaker=speaker,
            colour=colour.get(speaker or "", 0),
        ))  # fmt: skip
    return Transcript(segments=segments, text=str(data.get("text") or "").strip(), language=data.get("language"),
                      speakers=speakers)


@dataclass(frozen=True)
class Media:
    """What the job page plays: the media URL and element, or why there is nothing to play."""

    url: str | None = None
    element: str = "audio"  # audio or video
    note: str = ""


VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".webm", ".mkv", ".mov", ".ogv"})


def media_view(job: dict[str, Any], status: int, error_message: str) -> Media:
    """The player of a job page from its media route's answer to a one-byte probe (`status`)."""
    job_id = str(job.get("id") or job.get("jobId") or "")
    if status in (200, 206):
        name = str(job.get("filename") or job.get("name") or "").lower()
        element = "video" if any(name.endswith(ext) for ext in VIDEO_EXTENSIONS) else "audio"
        return Media(url=f"/api/jobs/{quote(job_id, safe='')}/media", element=element)
    return Media(note=error_message or "The controller keeps no media of this job.")


@dataclass(frozen=True)
class SlotView:
    """One slot line of the runtime page."""

    name: str
    device: str
    busy: bool
    state: str
    task: str | None
    models: list[str]
    done: str = ""
    error: str = ""
    gpu_memory: str = ""  # "1234 MiB" the slot's process holds on its GPU; "-" where NVML cannot tell


@dataclass(frozen=True)
class Table:
    """Rows of scalars under column names (for answers whose fields the page does not know)."""

    columns: list[str]
    rows: list[list[str]]

    def __bool__(self) -> bool:
        return bool(self.rows)


@dataclass(frozen=True)
class ErrorView:
    """One recent error."""

    at: str
    code: str
    message: str
    job: str | None
    filename: str | None = None


@dataclass(frozen=True)
class DevicesView:
    """What the controller's machine has: facts, tables (GPUs, ...), problems found."""

    facts: list[tuple[str, str]] = field(default_factory=list)
    tables: list[tuple[str, Table]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.facts or self.tables or self.problems)


def devices_view(devices: Any) -> DevicesView:
    """The runtime's `devices`: a dict of `scribefleet doctor` facts, or a list of devices."""
    if isinstance(devices, list):
        return DevicesView(tables=[("devices", table_of(devices))])
    if not isinstance(devices, dict):
        return DevicesView()
    view = DevicesView()
    for key, value in devices.items():
        if key == "problems" and isinstance(value, list):
            view.problems.extend(str(p) for p in value)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            view.tables.append((key, table_of(value)))
        elif isinstance(value, list) and not value:
            view.facts.append((key, "none"))
        else:
            view.facts.append((key, _cell(value)))
    return view


@dataclass(frozen=True)
class RuntimeView:
    """The runtime page: slots, devices, capacity, queue, recent errors."""

    slots: list[SlotView]
    devices: DevicesView
    capacity_line: str
    queue: list[tuple[str, str]]
    errors: list[ErrorView]
    remote: Table | None = None  # the remote workers (seed 001), when the controller has any


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)


def table_of(rows: Any) -> Table:
    """A list of flat dicts as a Table (columns in first-seen order)."""
    dicts = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
    columns: list[str] = []
    for row in dicts:
        columns.extend(k for k in row if k not in columns)
    return Table(columns, [[_cell(row.get(c)) for c in columns] for row in dicts])


def _flat(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        out: list[tuple[str, str]] = []
        for key, sub in value.items():
            out.extend(_flat(sub, f"{prefix}{key}" if not prefix else f"{prefix}.{key}"))
        return out
    return [(prefix or "queued", _cell(value))]


def slot_view(slot: dict[str, Any]) -> SlotView:
    task = slot.get("taskId") or slot.get("jobId") or slot.get("task")
    if isinstance(task, dict):
        task = task.get("id") or task.get("jobId")
    busy = bool(slot.get("busy") if "busy" in slot else task)
    models = slot.get("models") if isinstance(slot.get("models"), list) else []
    return SlotView(
        name=str(slot.get("name") or slot.get("slot") or slot.get("id") or "?"),
        device=_cell(slot.get("device")),
        busy=busy,
        state=str(slot.get("status") or slot.get("state") or ("busy" if busy else "idle")),
        task=str(task) if task else None,
        models=[str(m) for m in models],
        done=_cell(slot.get("tasksDone")),
        error=_slot_error(slot.get("error")),
        gpu_memory=_gpu_memory(slot),
    )


def _gpu_memory(slot: dict[str, Any]) -> str:
    """A GPU slot's memory (GET /api/runtime's gpuMemoryMb); nothing for a CPU slot."""
    if slot.get("device") != "cuda":
        return ""
    mb = slot.get("gpuMemoryMb")
    return f"{mb} MiB" if isinstance(mb, int) else "-"


def _slot_error(error: Any) -> str:
    if isinstance(error, dict):
        return " ".join(str(error.get(k)) for k in ("code", "message") if error.get(k))
    return _cell(error)


def runtime_view(runtime: dict[str, Any]) -> RuntimeView:
    slots = [slot_view(s) for s in runtime.get("slots") or [] if isinstance(s, dict)]
    capacity = runtime.get("capacity")
    if isinstance(capacity, dict):
        line = ", ".join(f"{k}: {_cell(v)}" for k, v in capacity.items())
    else:
        line = f"{sum(s.busy for s in slots)} of {len(slots)} busy"
    queue = runtime.get("queue")
    errors = [
        ErrorView(
            at=str(e.get("at") or e.get("time") or e.get("timestamp") or ""),
            code=str(e.get("code") or ""),
            message=str(e.get("message") or ""),
            job=e.get("jobId") or e.get("taskId"),
            filename=e.get("filename"),
        )
        for e in runtime.get("recentErrors") or []
        if isinstance(e, dict)
    ]
    return RuntimeView(slots, devices_view(runtime.get("devices")), line, _flat(queue) if queue else [], errors,
                       remote_workers_table(runtime.get("remoteWorker")))  # fmt: skip


def remote_workers_table(remote: Any) -> Table | None:
    """One row per remote worker: where, whether it answers, its places, GPU, models, last answer, last error."""
    if not isinstance(remote, dict):
        return None
    rows = []
    for w in remote.get("workers") or []:
        if not isinstance(w, dict):
            continue
        caps = w.get("workerCapabilities") if isinstance(w.get("workerCapabilities"), dict) else {}
        rows.append({
            "worker": w.get("url"), "connected": w.get("connected"),
            "jobs": f"{_cell(caps.get('activeJobs'))} of {_cell(caps.get('maxConcurrentJobs'))}",
            "gpu": caps.get("gpuName") or caps.get("gpu"), "models": w.get("models"),
            "last seen": w.get("lastSeenAt"), "last error": _slot_error(w.get("lastError")),
        })  # fmt: skip
    return table_of(rows)


def known_models(runtime: Any) -> list[str]:
    """Model names worth suggesting: the default, what slots hold, what the runtime lists."""
    names = ["tiny.en"]
    if isinstance(runtime, dict):
        for slot in runtime.get("slots") or []:
            if isinstance(slot, dict):
                names.extend(str(m) for m in slot.get("models") or [])
        names.extend(str(m) for m in runtime.get("models") or [] if isinstance(m, str))
    names.extend(["tiny", "base", "small", "medium", "large-v3", "turbo"])
    return list(dict.fromkeys(names))
