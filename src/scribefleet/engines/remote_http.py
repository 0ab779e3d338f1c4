"""WorkerClient: the controller's HTTP calls to one remote worker (seed 001's /v1 protocol).

One call, one try: the RemoteEngine decides when to try again (backoff with
jitter, `next_delay`). Every failure is translated where it enters into the
seed's codes: 401/403 REMOTE_WORKER_UNAUTHORIZED (never worth repeating; so
is a 429 TOO_MANY_ATTEMPTS, the worker throttling our wrong token),
429 REMOTE_WORKER_CAPACITY (with the worker's Retry-After), connection
errors, timeouts and 5xx REMOTE_WORKER_UNREACHABLE, any other refusal of a
new job REMOTE_DISPATCH_FAILED with the worker's own code and message in the
details. The token travels in the Authorization header only; it is never
logged or put in an error.

It lives under engines/ (not client/) because the RemoteEngine uses it and
engines sit below client in the layers.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx

from scribefleet.errors import (
    NotFound,
    RemoteDispatchFailed,
    RemoteWorkerCapacity,
    RemoteWorkerError,
    RemoteWorkerUnauthorized,
    RemoteWorkerUnreachable,
)
from scribefleet.fsio import atomic_open

UPLOAD_CHUNK = 1024 * 1024


def next_delay(previous_s: float, first_s: float, max_s: float) -> float:
    """Exponential backoff with jitter: double the previous delay (at most `max_s`), then take 50-100% of it."""
    grown = min(max_s, max(first_s, previous_s * 2))
    return grown * random.uniform(0.5, 1.0)


class WorkerClient:
    """HTTP calls to one worker's /v1 routes, each tried once, errors in seed 001's codes."""

    def __init__(self, url: str, token: str | None, *, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout_s))

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteWorkerUnreachable(
                f"worker {self.url} could not be reached ({type(exc).__name__}); the job waits and is tried again",
                worker=self.url,
            ) from exc
        if resp.status_code in (401, 403):
            raise RemoteWorkerUnauthorized(
                f"worker {self.url} refused the controller's token: set REMOTE_WORKER_TOKEN to the worker's WORKER_TOKEN",
                worker=self.url, status=resp.status_code,
            )  # fmt: skip
        if resp.status_code == 429 and _worker_error(resp)["workerCode"] == "TOO_MANY_ATTEMPTS":
            raise RemoteWorkerUnauthorized(
                f"worker {self.url} refuses the controller's tokens for a while after too many wrong ones: "
                "set REMOTE_WORKER_TOKEN to the worker's WORKER_TOKEN", worker=self.url, status=429,
            )  # fmt: skip
        if resp.status_code == 429:
            retry_after = _float(resp.headers.get("retry-after"), 5.0)
            raise RemoteWorkerCapacity(f"worker {self.url} is full", worker=self.url, retryAfterS=retry_after,
                                       **_worker_error(resp))  # fmt: skip
        if resp.status_code >= 500:
            raise RemoteWorkerUnreachable(
                f"worker {self.url} answered HTTP {resp.status_code}; the job waits and is tried again",
                worker=self.url, status=resp.status_code, **_worker_error(resp),
            )  # fmt: skip
        return resp

    def ping(self) -> dict[str, Any]:
        resp = self._call("GET", "/v1/ping")
        if resp.status_code != 200:
            raise RemoteWorkerError(f"worker {self.url} answered /v1/ping with HTTP {resp.status_code}", worker=self.url)
        return dict(resp.json())

    def find(self, idempotency_key: str) -> dict[str, Any] | None:
        """The worker's job made with this Idempotency-Key, if it has one (how a restarted controller re-attaches)."""
        resp = self._call("GET", "/v1/jobs", params={"idempotencyKey": idempotency_key})
        if resp.status_code != 200:
            return None
        items = resp.json().get("items") or []
        return dict(items[0]) if items else None

    def create(self, media: Path, filename: str, options: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        """POST /v1/jobs: the media streamed from disk, the options as JSON; the worker's job."""
        with open(media, "rb") as fh:
            resp = self._call(
                "POST", "/v1/jobs", headers={"Idempotency-Key": idempotency_key},
                files={"file": (filename, fh, "application/octet-stream")}, data={"options": json.dumps(options)},
            )  # fmt: skip
        if resp.status_code not in (200, 201):
            worker = _worker_error(resp)
            raise RemoteDispatchFailed(
                f"worker {self.url} would not create the job: [{worker.get('workerCode')}] {worker.get('workerMessage')}",
                worker=self.url, status=resp.status_code, **worker,
            )  # fmt: skip
        return dict(resp.json())

    def job(self, worker_job_id: str) -> dict[str, Any]:
        resp = self._call("GET", f"/v1/jobs/{worker_job_id}")
        if resp.status_code == 404:
            raise NotFound(f"worker {self.url} no longer knows job {worker_job_id}", worker=self.url)
        if resp.status_code != 200:
            raise RemoteWorkerError(f"worker {self.url} answered HTTP {resp.status_code} for job {worker_job_id}",
                                    worker=self.url, **_worker_error(resp))  # fmt: skip
        return dict(resp.json())

    def download(self, worker_job_id: str, fmt: str, dest: Path) -> None:
        """One output of a complete job, written to `dest` atomically (a reader never sees half a file)."""
        try:
            with self._http.stream("GET", f"/v1/jobs/{worker_job_id}/outputs/{fmt}") as resp:
                if resp.status_code != 200:
                    resp.read()
                    raise RemoteWorkerError(f"worker {self.url} answered HTTP {resp.status_code} for the {fmt} output",
                                            worker=self.url, **_worker_error(resp))  # fmt: skip
                with atomic_open(dest) as out:
                    for chunk in resp.iter_bytes(UPLOAD_CHUNK):
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise RemoteWorkerUnreachable(f"worker {self.url} dropped the {fmt} output ({type(exc).__name__})",
                                          worker=self.url) from exc  # fmt: skip

    def cancel(self, worker_job_id: str) -> dict[str, Any] | None:
        resp = self._call("POST", f"/v1/jobs/{worker_job_id}/cancel")
        return dict(resp.json()) if resp.status_code == 200 else None


def _float(value: str | None, default: float) -> float:
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default


def _worker_error(resp: httpx.Response) -> dict[str, Any]:
    """The worker's own {"error": {code, message}}, as details of ours."""
    try:
        error = resp.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    return {"workerCode": error.get("code"), "workerMessage": error.get("message")}
