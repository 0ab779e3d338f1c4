"""The controller's web UI: server-rendered pages over the controller's own HTTP API.

Every page reads its data through the HTTP API of docs/api.md, called in
process (httpx over ASGI, with the browser's cookies and client address), so
the UI is authorised exactly as the browser is, shows exactly what any API
client sees, and depends on no internals of the API. A page whose API call
answers 401 sends the browser to the login page instead.

What changes while a page is open is done by `static/app.js` against the same
API: login (`POST /api/session`), uploads and job creation, live progress over
SSE (`GET /api/jobs/{id}/events`), cancel. State-changing requests carry the
session's CSRF token in `X-CSRF-Token`. Templates autoescape everything; the
script only ever sets `textContent`, so a file name is text, never markup.

Pages, under `/ui` (`/` and `/ui` redirect to `/ui/`): `login`, `/` (drop files,
batch progress, every job a page at a time, `?status=` and `?offset=`), `jobs/{id}` (with a player of the job's media,
`GET /api/jobs/{id}/media`, and a transcript that follows it: static/player.js),
`batches/{id}`, `runtime`; the
script and stylesheet at `static/{name}`. The login page and the static files
are the only ones service/auth.py lets through without credentials.
"""

from __future__ import annotations

import hashlib
import mimetypes
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from scribefleet.options import FORMATS, TranscribeOptions
from scribefleet.service import ui_views as views
from scribefleet.service.auth import csrf_token_of

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))

#: the files /ui/static serves, by name (nothing else under the folder is reachable)
STATIC_FILES = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()} if STATIC_DIR.is_dir() else {}
#: cache-busting version of the static files: changes whenever one of them does
_STATIC_VERSION = hashlib.sha256(
    b"".join(p.read_bytes() for _, p in sorted(STATIC_FILES.items()))
).hexdigest()[:10]

#: the most jobs one batch page draws at once
PAGE_JOBS = 200
#: the jobs one page of the home page's list shows (static/pages.js RECENT_ROWS says the same)
RECENT_JOBS = 20

router = APIRouter(include_in_schema=False)
PREFIX = "/ui"


def static_url(name: str) -> str:
    return f"{PREFIX}/static/{quote(name)}?v={_STATIC_VERSION}"


TEMPLATES.env.globals.update(static_url=static_url)


class NotLoggedIn(Exception):
    """The API refused the browser's session: the page sends it to the login page."""


class ApiError(Exception):
    """The API answered an error the page shows as it is."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Api:
    """The controller's HTTP API, called in process with the browser's credentials."""

    def __init__(self, request: Request) -> None:
        client = request.client
        transport = httpx.ASGITransport(  # an API bug is its 500 answer here, shown as an error page
            app=request.app, raise_app_exceptions=False, client=(client.host, client.port) if client else ("127.0.0.1", 0)
        )
        headers = {"Accept": "application/json", "User-Agent": "scribefleet-ui"}
        for name in ("cookie", "authorization"):
            if name in request.headers:
                headers[name] = request.headers[name]
        self._http = httpx.AsyncClient(transport=transport, base_url="http://ui.internal", headers=headers)

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def get(self, path: str, *, params: dict[str, Any] | None = None, missing_ok: bool = False) -> Any:
        """GET `path` as JSON; None for a 404 when `missing_ok`."""
        resp = await self._http.get(path, params={k: v for k, v in (params or {}).items() if v is not None})
        if resp.status_code == 401:
            raise NotLoggedIn()
        if resp.status_code == 404 and missing_ok:
            return None
        if resp.status_code >= 400:
            code, message = views.error_of(resp)
            raise ApiError(resp.status_code, code, message)
        return resp.json()

    async def probe(self, path: str) -> tuple[int, str]:
        """(status, error message) of a one-byte Range GET of `path`: whether a media URL will play."""
        resp = await self._http.get(path, headers={"Range": "bytes=0-0"})
        if resp.status_code == 401:
            raise NotLoggedIn()
        return resp.status_code, views.error_of(resp)[1] if resp.status_code >= 400 else ""

    async def get_text(self, path: str) -> str | None:
        """GET `path` as text; None unless it answers 200."""
        resp = await self._http.get(path)
        if resp.status_code == 401:
            raise NotLoggedIn()
        return resp.text if resp.status_code == 200 else None


def _render(request: Request, name: str, page: str, status: int = 200, **context: Any) -> HTMLResponse:
    # the session's CSRF token goes into a <meta> tag for the script's POST/DELETE requests
    context = {"page": page, "csrf_token": csrf_token_of(request), **context}
    return TEMPLATES.TemplateResponse(request, name, context, status_code=status)


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(PREFIX + "/login?" + urlencode({"next": target}), status_code=303)


def _error_page(request: Request, err: ApiError) -> HTMLResponse:
    return _render(request, "error.html", "error", status=err.status, error=err)


def safe_next(target: str) -> str:
    """`target` if it is a path of this site, else the UI's home page.

    Browsers drop tabs and newlines inside a URL and read a backslash as a slash, so
    "/<tab>/evil.example" or "/\\evil.example" would leave the site: a target must start with one
    "/" and hold no control character, space or backslash, and parse with no scheme or host.
    """
    if (
        not target.startswith("/")
        or target.startswith("//")
        or any(c == "\\" or c.isspace() or unicodedata.category(c)[0] == "C" for c in target)
    ):
        return PREFIX + "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else PREFIX + "/"


@router.get("/", response_class=RedirectResponse)
async def root() -> RedirectResponse:
    return RedirectResponse(PREFIX + "/", status_code=303)


@router.get(PREFIX, response_class=RedirectResponse)
async def ui_root() -> RedirectResponse:
    return RedirectResponse(PREFIX + "/", status_code=303)


@router.get(PREFIX + "/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "") -> HTMLResponse:  # noqa: A002  (the query name)
    return _render(request, "login.html", "login", next_url=safe_next(next))


@router.get(PREFIX + "/", response_class=HTMLResponse)
async def home_page(request: Request, status: str = "", offset: str = "") -> Response:
    """The submit form and the job list: RECENT_JOBS a page, newest first, of one status (`status`) or all,
    from `offset`, with every status's count (GET /api/jobs?status=S&limit=1 answers its `total`)."""
    chosen, start = views.chosen_status(status), views.page_offset(offset, RECENT_JOBS)
    async with Api(request) as api:
        try:
            listing = await api.get("/api/jobs", params={"limit": RECENT_JOBS, "offset": start, "status": chosen or None})
            counts = {s: views.total_of(await api.get("/api/jobs", params={"status": s, "limit": 1}), 0)
                      for s in views.JOB_STATUSES}  # fmt: skip
            runtime = await api.get("/api/runtime")
        except NotLoggedIn:
            return _to_login(request)
        except ApiError as err:
            return _error_page(request, err)
    jobs = views.jobs_page(listing, counts, chosen, start, RECENT_JOBS)
    return _render(
        request,
        "home.html",
        "home",
        jobs=jobs,
        formats=FORMATS,
        default_model=TranscribeOptions().model,
        models=views.known_models(runtime),
        remote_mode=(runtime.get("remoteWorker") or {}).get("mode", "off") if isinstance(runtime, dict) else "off",
    )


@router.get(PREFIX + "/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: str) -> Response:
    async with Api(request) as api:
        try:
            job = await api.get(f"/api/jobs/{quote(job_id, safe='')}", missing_ok=True)
            if job is None:
                raise ApiError(404, "NOT_FOUND", f"There is no job {job_id!r}.")
            view = views.job_view(job)
            transcript, note = await _transcript(api, view)
            media = None
            if transcript is not None and transcript.segments:  # a player needs timed lines to follow
                media = views.media_view(job, *await api.probe(f"/api/jobs/{quote(view.id, safe='')}/media"))
        except NotLoggedIn:
            return _to_login(request)
        except ApiError as err:
            return _error_page(request, err)
    return _render(request, "job.html", "job", job=view, transcript=transcript, transcript_note=note, media=media)


async def _transcript(api: Api, job: views.JobView) -> tuple[views.Transcript | None, str]:
    """The transcript of a finished job: from its JSON output, else its plain text."""
    if job.status != "complete":
        return None, ""
    outputs = dict(job.outputs)
    if "json" in outputs:
        data = await api.get(outputs["json"], missing_ok=True)
        if data is not None:
            return views.transcript_from_json(data), ""
    if "txt" in outputs:
        text = await api.get_text(outputs["txt"])
        if text is not None:
            return views.Transcript(text=text), ""
    return None, "This job has no JSON or text output to show; download one of its formats instead."


@router.get(PREFIX + "/batches/{batch_id}", response_class=HTMLResponse)
async def batch_page(request: Request, batch_id: str, offset: str = "") -> Response:
    """A batch: its summary (of every job) and PAGE_JOBS of its jobs a page, newest first, from `offset`."""
    start = views.page_offset(offset, PAGE_JOBS)
    async with Api(request) as api:
        try:
            batch = await api.get(f"/api/batches/{quote(batch_id, safe='')}", params={"jobs": "false"}, missing_ok=True)
            if batch is None:
                raise ApiError(404, "NOT_FOUND", f"There is no batch {batch_id!r}.")
            listing = await api.get("/api/jobs", params={"batchId": batch_id, "limit": PAGE_JOBS, "offset": start})
        except NotLoggedIn:
            return _to_login(request)
        except ApiError as err:
            return _error_page(request, err)
    jobs = [views.job_view(j) for j in views.items_of(listing)]
    summary = views.batch_view(batch_id, batch, offset=start, shown=len(jobs), page_size=PAGE_JOBS)
    return _render(request, "batch.html", "batch", batch=summary, jobs=jobs)


@router.get(PREFIX + "/runtime", response_class=HTMLResponse)
async def runtime_page(request: Request, fragment: bool = False) -> Response:
    async with Api(request) as api:
        try:
            runtime = await api.get("/api/runtime")
        except NotLoggedIn:
            if fragment:  # a refresh after the session ended: the script reloads the page
                return Response(status_code=401)
            return _to_login(request)
        except ApiError as err:
            return _error_page(request, err)
    view = views.runtime_view(runtime)
    if fragment:
        return TEMPLATES.TemplateResponse(request, "_runtime.html", {"rt": view})
    return _render(request, "runtime.html", "runtime", rt=view)


@router.get(PREFIX + "/static/{name}")
async def static_file(name: str) -> Response:
    path = STATIC_FILES.get(name)
    if path is None:
        return Response("not found", status_code=404, media_type="text/plain")
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})
