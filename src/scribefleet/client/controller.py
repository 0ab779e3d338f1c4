"""ControllerClient: the one way the CLI and the batch runner talk to a controller's HTTP API (docs/api.md).

Every command that names a controller (`batch`, `submit`, and `status` /
`logs` / `cancel` with `--controller`) goes through it. It sends the bearer
token, bounds every request with a timeout, retries what is safe to retry
with exponential backoff and jitter, and turns an error body
`{"error": {"code", "message", "details"}}` back into the ScribefleetError
of that code, so a FILE_TOO_LARGE raised in the controller is a
FILE_TOO_LARGE here, with the controller's message.

What is retried (at most `retries` times per request):

* connect errors: the request never reached the controller;
* 429 and 503: the controller did not take the request;
* other 5xx, timeouts and dropped connections: only requests that are safe
  to repeat (reads, cancel, uploads, and creating a job with an
  `Idempotency-Key`, which the controller answers with the job the first
  attempt made). Creating a batch, or a job without a key, is not sent again
  after those, because the first attempt may already have created it.

A controller still unreachable after the retries raises ControllerUnreachable
(retryable): a caller with its own patience, like the batch runner, waits
and asks again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from scribefleet import __version__
from scribefleet.config import Settings
from scribefleet.errors import ControllerUnreachable, ScribefleetError, Unauthorized, UsageError
from scribefleet.fsio import atomic_open
from scribefleet.options import is_http_url
from scribefleet.store.models import TERMINAL_STATUSES

log = logging.getLogger("scribefleet.client")

#: statuses that say "not taken, ask again later": retried even for requests that create things
_NOT_TAKEN = {429, 503}


def backoff_delay(attempt: int, *, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (0-based).

    Exponential (`base_s * 2**attempt`, capped at `max_s`) with "equal jitter":
    half of it fixed, half random, so a crowd of clients spreads out after an
    outage instead of knocking all at once, while no wait is ever shorter than
    half the schedule.
    """
    ceiling = min(max_s, base_s * (2.0 ** min(attempt, 60)))
    return ceiling / 2 + (rng or random).uniform(0.0, ceiling / 2)


class Backoff:
    """A polling schedule: the next delay doubles (with jitter) until reset() after progress."""

    def __init__(self, base_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.base_s, self.max_s, self._rng = base_s, max_s, rng
        self.attempt = 0

    def next(self) -> float:
        delay = backoff_delay(self.attempt, base_s=self.base_s, max_s=self.max_s, rng=self._rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


def normalize_url(url: str) -> str:
    """`host:8476` -> `http://host:8476`; no trailing slash."""
    url = url.strip().rstrip("/")
    if not url:
        raise UsageError("the controller URL is empty: pass --controller URL or set SCRIBEFLEET_CONTROLLER")
    if "://" not in url:
        url = "http://" + url
    if not is_http_url(url):
        raise UsageError(f"controller URL {url!r} is not http(s): use e.g. http://127.0.0.1:8476", url=url)
    return url


def error_from_response(resp: httpx.Response, what: str) -> ScribefleetError:
    """The ScribefleetError an error response stands for (its code survives the wire)."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and isinstance(err.get("code"), str):
        exc = ScribefleetError.from_code(err["code"], str(err.get("message") or f"{what} failed"))
        details = err.get("details")
        exc.details = details if isinstance(details, dict) else {}
        if isinstance(exc, Unauthorized) and "SCRIBEFLEET_TOKEN" not in exc.message:
            exc.message = f"{exc.message} (from this CLI: pass --token or set SCRIBEFLEET_TOKEN)"
            exc.args = (exc.message,)
    elif resp.status_code in (401, 403):
        exc = Unauthorized(
            f"the controller refused {what} (HTTP {resp.status_code}): pass --token or set "
            "SCRIBEFLEET_TOKEN to one of the controller's API tokens"
        )
    else:
        exc = ScribefleetError(
            f"{what}: the controller answered HTTP {resp.status_code} without a scribefleet error body; "
            "check that --controller points at 'scribefleet serve' (not a proxy or another service)",
            status=resp.status_code,
        )
    exc.http_status = resp.status_code  # type: ignore[misc]  # what the wire carried, on this instance
    exc.from_controller = True  # type: ignore[attr-defined]  # the controller's answer, not this machine's error
    return exc


class ControllerClient:
    """HTTP client of one controller: bearer token, timeouts, retries, error codes."""

    def __init__(
        self,
        url: str,
        token: str | SecretStr | None = None,
        *,
        timeout_s: float = 30.0,
        retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
    ) -> None:
        self.url = normalize_url(url)
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        headers = {"User-Agent": f"scribefleet/{__version__}", "Accept": "application/json"}
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        self.retries = retries
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout_s))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ControllerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the API -------------------------------------------------------------

    def upload(self, path: Path) -> dict[str, Any]:
        """POST /api/uploads: stream one file; returns {"uploadId", "filename", "sizeBytes"}."""
        path = Path(path)

        def send() -> httpx.Response:
            with path.open("rb") as fh:  # opened per attempt: a retry sends the file from its start
                return self._http.post("/api/uploads", files={"file": (path.name, fh, "application/octet-stream")})

        return self._call(send, f"upload of {path.name}", safe=True).json()

    def create_job(self, upload_id: str, options: dict[str, Any], batch_id: str | None = None, *,
                   remote: bool = False, publish: dict[str, Any] | None = None,
                   idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /api/jobs: a transcription job of an upload (on a remote worker when `remote`); returns the job.
        `idempotency_key`: the same key again answers the job the first request made."""
        body: dict[str, Any] = {"uploadId": upload_id, "options": options}
        if batch_id:
            body["batchId"] = batch_id
        if publish:
            body["publish"] = publish
        if remote:
            body["remote"] = True
        return self._create_job(body, idempotency_key)

    def create_url_job(self, url: str, options: dict[str, Any], batch_id: str | None = None, *,
                       publish: dict[str, Any] | None = None, idempotency_key: str | None = None) -> list[dict[str, Any]]:
        """POST /api/jobs {"url"}: the controller fetches the media; one job, or one per entry of a playlist
        (`publish`: also upload the outputs to S3 with the controller's AWS settings). `idempotency_key`: the
        same key again answers the job(s) the first request made, nothing new."""
        body: dict[str, Any] = {"url": url, "options": options}
        if batch_id:
            body["batchId"] = batch_id
        if publish:
            body["publish"] = publish
        job = self._create_job(body, idempotency_key)
        return job.get("jobs") or [job]

    def _create_job(self, body: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
        """POST /api/jobs; with an Idempotency-Key it is safe to send again after a timeout or a 5xx."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        send = lambda: self._http.post("/api/jobs", json=body, headers=headers)  # noqa: E731
        return self._call(send, "creating a job", safe=idempotency_key is not None).json()

    def job(self, job_id: str) -> dict[str, Any]:
        """GET /api/jobs/{id}."""
        return self._get(f"/api/jobs/{_seg(job_id)}", f"reading job {job_id}").json()

    def jobs(self, *, batch_id: str | None = None, status: str | None = None, page_size: int = 500) -> list[dict[str, Any]]:
        """GET /api/jobs filtered by batch and status, every page (newest first)."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": page_size, "offset": 0}
        if batch_id:
            params["batchId"] = batch_id
        if status:
            params["status"] = status
        while True:
            page = self._get("/api/jobs", "listing jobs", params=params).json()
            items = page.get("items") or []
            found.extend(items)
            params["offset"] += len(items)
            if not items or params["offset"] >= int(page.get("total") or 0):
                return found

    def cancel(self, job_id: str) -> dict[str, Any]:
        """POST /api/jobs/{id}/cancel (repeating it is harmless); returns the job."""
        resp = self._call(lambda: self._http.post(f"/api/jobs/{_seg(job_id)}/cancel"), f"canceling job {job_id}", safe=True)
        return resp.json() if resp.content else {}

    def logs(self, job_id: str, *, fmt: str = "text") -> str:
        """GET /api/jobs/{id}/logs: the job's whole event and log history (`text` or `jsonl`)."""
        resp = self._get(f"/api/jobs/{_seg(job_id)}/logs", f"reading the logs of job {job_id}", params={"format": fmt})
        return resp.text

    def download(self, job_id: str, fmt: str, dest: Path) -> Path:
        """GET /api/jobs/{id}/outputs/{fmt} streamed into `dest`, which appears complete or not at all."""
        what = f"downloading the {fmt} output of job {job_id}"

        def send() -> httpx.Response:
            req = self._http.build_request("GET", f"/api/jobs/{_seg(job_id)}/outputs/{_seg(fmt)}")
            resp = self._http.send(req, stream=True)
            if resp.status_code >= 400:
                resp.read()
                return resp
            try:
                with atomic_open(dest) as fh:
                    for chunk in resp.iter_bytes():
                        fh.write(chunk)
            finally:
                resp.close()
            return resp

        self._call(send, what, safe=True)
        return Path(dest)

    def create_batch(self, name: str) -> dict[str, Any]:
        """POST /api/batches: returns {"id", ...}."""
        return self._call(lambda: self._http.post("/api/batches", json={"name": name}), "creating a batch", safe=False).json()

    def batch(self, batch_id: str) -> dict[str, Any]:
        """GET /api/batches/{id}: the batch with its counts and jobs."""
        return self._get(f"/api/batches/{_seg(batch_id)}", f"reading batch {batch_id}").json()

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """POST /api/batches/{id}/cancel: every unfinished job of it; returns the batch."""
        what = f"canceling batch {batch_id}"
        return self._call(lambda: self._http.post(f"/api/batches/{_seg(batch_id)}/cancel"), what, safe=True).json()

    # -- the machinery -----------------------------------------------------------

    def _get(self, path: str, what: str, params: dict[str, Any] | None = None) -> httpx.Response:
        return self._call(lambda: self._http.get(path, params=params), what, safe=True)

    def _call(self, send: Callable[[], httpx.Response], what: str, *, safe: bool) -> httpx.Response:
        """Send with retries; return a 2xx response or raise the error it stands for."""
        attempt = 0
        while True:
            try:
                resp = send()
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                raise UsageError(f"controller URL {self.url!r} is not usable ({exc}); use e.g. http://127.0.0.1:8476") from exc
            except httpx.TransportError as exc:
                # a connect error never reached the controller: always safe to send again
                if attempt < self.retries and (safe or isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))):
                    attempt = self._pause(attempt, what, type(exc).__name__)
                    continue
                raise ControllerUnreachable(
                    f"{what}: the controller at {self.url} is unreachable ({type(exc).__name__}: {exc}) after "
                    f"{attempt + 1} attempt(s) - start it ('scribefleet serve') or fix --controller / SCRIBEFLEET_CONTROLLER",
                    url=self.url,
                ) from exc
            if resp.status_code < 400:
                return resp
            again = resp.status_code in _NOT_TAKEN or (safe and resp.status_code >= 500)
            if again and attempt < self.retries:
                attempt = self._pause(attempt, what, f"HTTP {resp.status_code}", resp.headers.get("Retry-After"))
                continue
            raise error_from_response(resp, what)

    def _pause(self, attempt: int, what: str, why: str, retry_after: str | None = None) -> int:
        delay = backoff_delay(attempt, base_s=self.backoff_base_s, max_s=self.backoff_max_s)
        if retry_after and retry_after.isdigit():
            delay = max(delay, min(float(retry_after), self.backoff_max_s))
        log.warning("%s: %s from %s; retry %d of %d in %.1fs", what, why, self.url, attempt + 1, self.retries, delay)
        time.sleep(delay)
        return attempt + 1


def _seg(value: str) -> str:
    """One path segment: an id that holds a '/' cannot walk to another route."""
    from urllib.parse import quote

    return quote(str(value), safe="")


def connect(url: str, token: str | None, settings: Settings) -> ControllerClient:
    """The client every controller-facing command uses, configured from the settings."""
    return ControllerClient(url, token or settings.token, timeout_s=settings.controller_timeout_s,
                            retries=settings.controller_retries)  # fmt: skip


def _not_found(client: ControllerClient, ident: str) -> ScribefleetError:
    return ScribefleetError.from_code(
        "NOT_FOUND", f"no job or batch has the id {ident!r} on the controller at {client.url}: check the id "
        "('submit' and 'batch' print them) or --controller", id=ident,
    )  # fmt: skip


def job_or_batch(client: ControllerClient, ident: str) -> tuple[str, dict[str, Any]]:
    """("job", job) or ("batch", batch) for an id of either kind."""
    for kind, read in (("job", client.job), ("batch", client.batch)):
        try:
            return kind, read(ident)
        except ScribefleetError as exc:
            if exc.code != "NOT_FOUND":
                raise
    raise _not_found(client, ident)


def cancel(client: ControllerClient, ident: str, *, wait_s: float = 10.0) -> list[dict[str, Any]]:
    """Cancel a job, or every unfinished job of a batch; what each became after up to `wait_s`."""
    try:
        jobs = [client.cancel(ident)]
    except ScribefleetError as exc:
        if exc.code != "NOT_FOUND":
            raise
        try:
            jobs = list(client.cancel_batch(ident).get("jobs") or [])
        except ScribefleetError as again:
            if again.code != "NOT_FOUND":
                raise
            raise _not_found(client, ident) from None
    deadline = time.monotonic() + wait_s
    while any(j.get("status") not in TERMINAL_STATUSES for j in jobs) and time.monotonic() < deadline:
        time.sleep(0.3)  # a running job's slot is being killed: the controller says when it has ended
        jobs = [client.job(j["id"]) if j.get("status") not in TERMINAL_STATUSES else j for j in jobs]
    return jobs
