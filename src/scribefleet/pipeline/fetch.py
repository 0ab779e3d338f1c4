"""The `fetch` stage: a media URL downloaded with yt-dlp's Python API, audio only, resumable.

`fetch_media` downloads one URL (a direct media link, or a page yt-dlp
understands: YouTube, a page with an `<audio>` element, ...) into a fetch
folder as `media.<ext>`. The metadata is read first and the size and duration
limits are checked against it before a byte of media is downloaded
(DOWNLOAD_TOO_LARGE); yt-dlp's `max_filesize` also stops a download whose
Content-Length is over the limit. The download goes to a `.part` file that a
resumed run continues (`continuedl`, an HTTP Range request) instead of
starting over. Progress is the stage's fraction.

`expand_url` turns a playlist into its entries (one job each) without
downloading anything. With an `allowlist` (the controller) both keep to
public addresses and the listed ones (URL_NOT_ALLOWED): `check_url_allowed`
answers early, and yt-dlp reaches the network only through
`pipeline.netguard.GuardProxy`, which checks the address of every
connection it makes (redirects, DNS rebinding, media a page points to).

yt-dlp's errors are mapped to our codes where they enter (`_map_error`):
YouTube's "Sign in to confirm you're not a bot" -> URL_BOT_CHECK, no media
found -> URL_UNSUPPORTED, everything else -> DOWNLOAD_FAILED. A URL that does
not parse is refused before yt-dlp sees it (URL_UNSUPPORTED: a playlist's entry
is one); one a server sends (a redirect's `Location`, a page's media link) fails
inside urllib, urllib3 or requests with a bare ValueError (LocationParseError,
InvalidURL) that yt-dlp passes on as it is or as a RequestError: DOWNLOAD_FAILED
(`_malformed`), never a raw exception in a slot (INTERNAL_ERROR).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scribefleet.errors import DownloadFailed, DownloadTooLarge, UrlBotCheck, UrlNotAllowed, UrlUnsupported, UsageError
from scribefleet.options import FetchOptions, http_url_problem, is_http_url
from scribefleet.pipeline.netguard import Allowlist, GuardProxy, resolve_allowed

log = logging.getLogger("scribefleet.fetch")

MEDIA_STEM = "media"
_MIB = 1024 * 1024


@dataclass(frozen=True)
class UrlEntry:
    """One media URL to transcribe (a playlist is expanded into several)."""

    url: str
    title: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class Fetched:
    """A finished download: the file and the metadata kept in the JSON output."""

    path: Path
    metadata: dict[str, Any]


class _Logger:
    """yt-dlp's messages into our log; remembers whether its max-filesize check aborted the download."""

    def __init__(self) -> None:
        self.too_large: str | None = None

    def debug(self, msg: str) -> None:
        if "larger than max-filesize" in msg:
            self.too_large = msg.strip().removeprefix("[download] ")
        log.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)


def _params(options: FetchOptions, logger: _Logger, **more: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "format": "bestaudio/best",  # audio only where the site offers it; else the smallest whole file
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": logger,
        "cachedir": False,
        "noplaylist": True,
        **more,
    }
    if options.cookies:
        params["cookiefile"] = options.cookies
    if options.proxy:
        params["proxy"] = options.proxy
    if options.socket_timeout_s:
        params["socket_timeout"] = options.socket_timeout_s
    return params


def _map_error(url: str, exc: Exception) -> Exception:
    """A yt-dlp error as one of our codes; the message says what to do."""
    text = str(exc)
    cause = getattr(exc, "exc_info", None)
    cause_exc = cause[1] if cause else None
    from yt_dlp.utils import UnsupportedError

    if "not a bot" in text or "Sign in to confirm" in text:
        return UrlBotCheck(
            f"{url}: the site asked to sign in to confirm this is not a bot; pass a cookies file of a signed-in "
            "browser session with --cookies (see docs/errors.md)", url=url,
        )  # fmt: skip
    if isinstance(cause_exc, UnsupportedError) or "Unsupported URL" in text:
        return UrlUnsupported(
            f"{url} holds no media yt-dlp can find (not a media file, no supported site, no <audio>/<video> "
            "on the page); give the address of the media itself", url=url,
        )  # fmt: skip
    if "No video formats found" in text or "Requested format is not available" in text:
        return UrlUnsupported(f"{url}: the page has no downloadable audio or video", url=url)
    reason = text.removeprefix("ERROR: ").strip()
    return DownloadFailed(f"downloading {url} failed: {reason}; check the URL opens, then run again", url=url)


def expand_url(url: str, options: FetchOptions, *, allowlist: list[str] | None = None) -> list[UrlEntry]:
    """The media URLs behind `url`: its entries for a playlist, else itself (nothing is downloaded).

    A URL whose metadata cannot be read stays one entry: its job then fails with its own code.
    `allowlist`: reach only public addresses and these (the controller's guard, `pipeline.netguard`).
    """
    import yt_dlp

    params = _params(options, _Logger(), extract_flat="in_playlist", noplaylist=False, skip_download=True)
    try:
        with _guarded(params, options, allowlist), yt_dlp.YoutubeDL(params) as ydl:
            info = ydl.extract_info(url, download=False)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure is the job's to report, with its code
        log.info("could not read %s up front (%s); its job reports why", url, exc)
        return [UrlEntry(url)]
    if info.get("_type") in ("playlist", "multi_video") and info.get("entries") is not None:
        entries = []
        for e in info["entries"]:
            if not e:
                continue
            # a flat entry names its own page; a resolved one found on this very page names its media
            own_page = e.get("webpage_url") if e.get("webpage_url") not in (None, url) else None
            link = e.get("url") if e.get("_type") in ("url", "url_transparent") else own_page or e.get("url")
            if link:
                entries.append(UrlEntry(link, e.get("title"), e.get("id")))
        return entries
    return [UrlEntry(url, info.get("title"), info.get("id"))]


def check_url_allowed(url: str, allowlist: list[str]) -> None:
    """URL_NOT_ALLOWED when `url`'s host resolves to a loopback, link-local or private address not on `allowlist`.

    The early refusal (before a job is made); the download itself is guarded connection by connection
    (`pipeline.netguard`). Allowlist entries are networks (`127.0.0.0/8`, `10.1.2.3`) or host names (`media.lan`).
    """
    _check_form(url)
    parts = urlsplit(url)
    try:
        resolve_allowed(url, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                        Allowlist.of(allowlist))  # fmt: skip
    except DownloadFailed:
        return  # a name that does not resolve reaches nothing; its job fails with DOWNLOAD_FAILED when it runs


def _check_form(url: str) -> None:
    """URL_UNSUPPORTED for a URL that is no http(s) URL or does not parse (an entry of a playlist, a link of a
    page: they were never checked where the command's own URL was)."""
    if not is_http_url(url):
        raise UrlUnsupported(f"{url} is not an http(s) URL", url=url)
    if problem := http_url_problem(url):
        raise UrlUnsupported(f"{url!r} is not a well-formed URL: {problem} - give the address of the media itself "
                             "(copy it again)", url=url)  # fmt: skip


def _malformed(url: str, exc: Exception) -> DownloadFailed:
    """A malformed address met on the way (a redirect's Location, a media link of the page) as DOWNLOAD_FAILED."""
    reason = str(exc) or type(exc).__name__
    return DownloadFailed(
        f"downloading {url} failed: the server led to an address that is not a valid URL ({reason}) - the link "
        "or a redirect behind it is broken; check that the URL opens in a browser, or give the media's own address",
        url=url, reason=reason,
    )  # fmt: skip


@contextmanager
def _guarded(params: dict[str, Any], options: FetchOptions, allowlist: list[str] | None) -> Iterator[GuardProxy | None]:
    """yt-dlp's params sent through the network guard when internal addresses are refused (`allowlist` given)."""
    if allowlist is None:
        yield None
        return
    if options.proxy:
        raise UsageError("a proxy cannot be used where internal addresses are refused (the controller): the "
                         "guard must make every connection itself; drop the proxy")  # fmt: skip
    with GuardProxy(allowlist, timeout_s=options.socket_timeout_s or 300.0) as guard:
        params["proxy"] = guard.url
        yield guard


def _refused(guard: GuardProxy | None) -> UrlNotAllowed | None:
    return guard.refused[0] if guard is not None and guard.refused else None


def _check_limits(url: str, info: dict[str, Any], max_bytes: int, max_duration_s: float | None) -> None:
    duration = info.get("duration")
    if max_duration_s and duration and duration > max_duration_s:
        raise DownloadTooLarge(
            f"{url} lasts {duration:.0f} s, over the {max_duration_s:.0f} s limit; raise --max-duration or pick "
            "a shorter video", url=url, duration_s=duration,
        )  # fmt: skip
    formats = info.get("requested_formats") or [info]
    size = sum((f.get("filesize") or f.get("filesize_approx") or 0) for f in formats)
    if size > max_bytes:
        raise DownloadTooLarge(
            f"{url} is {size / _MIB:.0f} MB, over the {max_bytes / _MIB:.0f} MB download limit "
            "(SCRIBEFLEET_MAX_FILE_MB or the job's max_download_mb); raise it or pick a smaller file",
            url=url, bytes=size,
        )  # fmt: skip


def downloaded(dest: Path) -> Path | None:
    """The finished media file of a fetch folder, if there is one (a `.part` file is not finished)."""
    done = [p for p in dest.glob(f"{MEDIA_STEM}.*") if p.suffix not in (".part", ".ytdl", ".json") and p.is_file()]
    return done[0] if done else None


def fetch_media(url: str, dest: Path, options: FetchOptions, *, max_file_mb: int,
                on_progress: Callable[[float], None], allowlist: list[str] | None = None) -> Fetched:
    """Download `url`'s audio into `dest/media.<ext>`, continuing a `.part` an earlier run left."""
    import yt_dlp
    from yt_dlp.networking.exceptions import RequestError

    _check_form(url)
    if allowlist is not None:
        check_url_allowed(url, allowlist)  # the clear early answer; the guard below checks every connection
    dest.mkdir(parents=True, exist_ok=True)
    max_bytes = (options.max_download_mb or max_file_mb) * _MIB
    logger = _Logger()

    too_large: list[DownloadTooLarge] = []

    def hook(d: dict[str, Any]) -> None:
        if d.get("status") == "downloading":
            done = d.get("downloaded_bytes") or 0
            if done > max_bytes:
                # no size was known up front (no Content-Length: a live stream, a chunked answer), and yt-dlp's
                # max_filesize checks only what is announced: a stream that never ends filled the disk
                too_large.append(DownloadTooLarge(
                    f"{url} sent more than the {max_bytes / _MIB:.0f} MB download limit without announcing its size "
                    "(a live stream?); raise SCRIBEFLEET_MAX_FILE_MB or the job's max_download_mb, or pick a file",
                    url=url, bytes=done,
                ))  # fmt: skip
                raise too_large[0]
            total = d.get("total_bytes") or d.get("total_bytes_estimate")
            if total:
                on_progress(min(1.0, done / total))

    params = _params(
        options, logger,
        outtmpl={"default": str(dest / f"{MEDIA_STEM}.%(ext)s")},
        continuedl=True,  # a .part file left by an interrupted run is continued with a Range request
        nopart=False,
        overwrites=False,
        max_filesize=max_bytes,
        progress_hooks=[hook],
    )  # fmt: skip
    guard = None
    try:
        with _guarded(params, options, allowlist) as guard, yt_dlp.YoutubeDL(params) as ydl:
            info = ydl.extract_info(url, download=False)
            if info.get("_type") in ("playlist", "multi_video"):
                raise UrlUnsupported(f"{url} is a playlist, and this job takes one media; give it as an input of "
                                     "transcribe, submit, batch, a plan or POST /api/jobs, which make one job per "
                                     "entry", url=url)  # fmt: skip
            _check_limits(url, info, max_bytes, options.max_duration_s)
            if allowlist is not None:  # the media may live elsewhere than the page naming it
                for fmt in info.get("requested_formats") or [info]:
                    if fmt.get("url"):
                        check_url_allowed(fmt["url"], allowlist)
            info = ydl.process_ie_result(info, download=True)
    except (yt_dlp.utils.DownloadError, DownloadTooLarge) as exc:
        if too_large:
            for part in dest.glob(f"{MEDIA_STEM}.*.part"):  # its next run would only fetch past the limit again
                part.unlink(missing_ok=True)
            raise too_large[0] from exc
        raise (_refused(guard) or _map_error(url, exc)) from exc
    except (RequestError, ValueError) as exc:  # urllib's ValueError, urllib3's LocationParseError, requests' InvalidURL
        raise (_refused(guard) or _malformed(url, exc)) from exc
    if logger.too_large:
        raise DownloadTooLarge(f"{url}: {logger.too_large}; raise the download limit or pick a smaller file", url=url)
    path = downloaded(dest)
    if path is None:
        raise DownloadFailed(f"downloading {url} produced no file; run again with --verbose", url=url)
    metadata = {
        "source_url": url,
        "webpage_url": info.get("webpage_url") or url,
        "title": info.get("title"),
        "uploader": info.get("uploader"),
        "duration": info.get("duration"),
        "extractor": info.get("extractor_key") or info.get("extractor"),
    }
    return Fetched(path, {k: v for k, v in metadata.items() if v is not None})
