"""A serverless request's folders on the worker's disk: held while it runs, removed when it has ended.

A warm worker runs request after request for hours; whatever one leaves on
its disk stays until the worker is gone. So a request's checkpoints (its URL's
work dir and the content-keyed twin beside it, pipeline/job.py) and its local
SRT are removed as soon as it has ended: the SRT is in S3 by then, or the
request failed. One failure keeps what it cost most: a request that failed at
its upload (`PUBLISH_FAILED`: wrong keys, a missing bucket) keeps its
transcript (not the download), so the same request sent again uploads without
transcribing; the newest `KEEP_FAILED` of those are kept, older ones removed.

Two requests of the same URL and options share a work dir: `request_lock`
holds it for one request at a time (a `scribefleet handle` per request may
run in parallel on one state folder; the RunPod worker takes one job at a
time), and its lock file goes with the request. A twin shared by two URLs of
the same media is left alone while the other request holds it (its `.lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from scribefleet.fsio import read_json
from scribefleet.pipeline.job import WorkDir

log = logging.getLogger("scribefleet.serverless")

#: failed uploads whose transcripts are kept for a retry (the newest ones)
KEEP_FAILED = 16
#: the mark of a URL work dir kept for a retry
KEPT_MARK = ".kept"


@contextlib.contextmanager
def request_lock(work_dir: Path) -> Iterator[None]:
    """Hold `work_dir` for this request: `.<name>.lock` beside it, flocked, deleted when done.

    A lock file that is deleted can be flocked by a waiter after its deletion (an inode nobody else
    will find): so a waiter checks, once it has the lock, that the path is still its file, else tries again.
    """
    path = work_dir.with_name(f".{work_dir.name}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


def twin_of(work_dir: Path) -> Path | None:
    """The content-keyed work dir of a URL's work dir (named in its fetch.json), once it was fetched."""
    fetched = read_json(work_dir / "fetch.json")
    digest = fetched.get("digest") if isinstance(fetched, dict) else None
    return WorkDir(work_dir).content_twin(digest) if isinstance(digest, str) and digest else None


def remove_request(work_dir: Path, output: Path | None = None) -> None:
    """Remove a request's work dir, its twin (unless another request holds it) and its local output."""
    if output is not None:
        output.unlink(missing_ok=True)
    twin = twin_of(work_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    if twin is not None and twin.is_dir():
        _remove_unless_held(twin)


def keep_for_retry(work_dir: Path, output: Path) -> None:
    """A request that failed at its upload: keep its transcript for the same request sent again, drop the rest
    (the download, the local output), and remove the oldest kept ones beyond KEEP_FAILED."""
    output.unlink(missing_ok=True)
    for leftover in WorkDir(work_dir).checkpoints("fetch")[1:]:
        leftover.unlink(missing_ok=True)  # the download: the transcript is what a retry needs
    if work_dir.is_dir():
        (work_dir / KEPT_MARK).touch()
    kept = sorted(work_dir.parent.glob(f"*/{KEPT_MARK}"), key=_mtime, reverse=True)
    for mark in kept[KEEP_FAILED:]:
        if not mark.parent.with_name(f".{mark.parent.name}.lock").exists():  # else a request runs there now
            remove_request(mark.parent)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _remove_unless_held(folder: Path) -> None:
    lock = folder / ".lock"
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        shutil.rmtree(folder, ignore_errors=True)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.debug("%s is in use by another request; left for it", folder.name)
        os.close(fd)
        return
    try:
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        os.close(fd)
