"""The fetch stage: yt-dlp against a real HTTP server on loopback (no test touches the internet)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

pytest.importorskip("yt_dlp")

from helpers import DATA, TEXTS, wer  # noqa: E402
from media_server import MediaServer  # noqa: E402
from scribefleet.errors import (  # noqa: E402
    DownloadFailed,
    DownloadTooLarge,
    UrlBotCheck,
    UrlNotAllowed,
    UrlUnsupported,
    UsageError,
)
from scribefleet.options import FetchOptions  # noqa: E402
from scribefleet.pipeline.fetch import _map_error, check_url_allowed, expand_url, fetch_media  # noqa: E402
from scribefleet.pipeline.job import TranscriptionJob, run_transcription  # noqa: E402
from pipeline.conftest import ProgressLog  # noqa: E402

WAV = (DATA / "en01.wav").read_bytes()
PAGE = b"""<html><head><title>A talk</title></head><body><h1>Talk</h1>
<audio controls src="/media/talk.wav"></audio></body></html>"""
TWO = b"""<html><head><title>Two talks</title></head><body>
<audio controls src="/media/talk.wav"></audio><audio controls src="/media/other.wav"></audio></body></html>"""


@pytest.fixture
def server():
    with MediaServer() as s:
        s.add("/media/talk.wav", WAV, "audio/wav")
        s.add("/media/other.wav", (DATA / "en02.wav").read_bytes(), "audio/wav")
        s.add("/talk.html", PAGE, "text/html")
        s.add("/two.html", TWO, "text/html")
        s.add("/empty.html", b"<html><head><title>Nothing</title></head><body>no media here</body></html>", "text/html")
        yield s


def fetch(url: str, dest: Path, **kw):
    fractions: list[float] = []
    got = fetch_media(url, dest, kw.pop("options", FetchOptions()), max_file_mb=kw.pop("max_file_mb", 50),
                      on_progress=fractions.append, **kw)  # fmt: skip
    return got, fractions


def test_a_direct_media_link_downloads_with_progress(server: MediaServer, tmp_path: Path) -> None:
    got, fractions = fetch(server.url + "/media/talk.wav", tmp_path / "f")
    assert got.path == tmp_path / "f" / "media.wav" and got.path.read_bytes() == WAV
    assert fractions and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert got.metadata["source_url"] == server.url + "/media/talk.wav" and got.metadata["title"] == "talk"


def test_a_page_with_an_audio_element_downloads_its_audio(server: MediaServer, tmp_path: Path) -> None:
    got, _ = fetch(server.url + "/talk.html", tmp_path / "f")
    assert got.path.read_bytes() == WAV
    assert got.metadata["title"].startswith("A talk") and got.metadata["webpage_url"] == server.url + "/talk.html"


def test_a_page_with_two_media_expands_to_two_entries(server: MediaServer) -> None:
    entries = expand_url(server.url + "/two.html", FetchOptions())
    assert [e.url for e in entries] == [server.url + "/media/talk.wav", server.url + "/media/other.wav"]
    assert expand_url(server.url + "/media/talk.wav", FetchOptions())[0].title == "talk"


def test_an_interrupted_download_continues_where_it_stopped(server: MediaServer, tmp_path: Path) -> None:
    big = WAV * 8  # ~880 kB, many 16 kB blocks
    url = server.add("/media/long.wav", big, "audio/wav")

    class Killed(Exception):
        pass

    def die_midway(fraction: float) -> None:
        if 0.2 < fraction < 1.0:
            raise Killed  # as if the process were killed part way

    dest = tmp_path / "f"
    with pytest.raises(Killed):
        fetch_media(url, dest, FetchOptions(), max_file_mb=50, on_progress=die_midway)
    part = dest / "media.wav.part"
    kept = part.stat().st_size
    assert 0 < kept < len(big)
    server.requests.clear()
    got, _ = fetch(url, dest)
    assert got.path.read_bytes() == big and not part.exists()
    ranges = [r for method, path, r in server.requests if path == "/media/long.wav" and r]
    assert ranges and ranges[-1] == f"bytes={kept}-"  # only the missing bytes were asked for


def test_a_404_is_download_failed(server: MediaServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadFailed, match="404") as info:
        fetch(server.url + "/media/gone.wav", tmp_path / "f")
    assert info.value.code == "DOWNLOAD_FAILED"


def test_a_page_without_media_is_url_unsupported(server: MediaServer, tmp_path: Path) -> None:
    with pytest.raises(UrlUnsupported) as info:
        fetch(server.url + "/empty.html", tmp_path / "f")
    assert info.value.code == "URL_UNSUPPORTED"


def test_too_large_is_refused_before_the_body_is_downloaded(server: MediaServer, tmp_path: Path) -> None:
    url = server.add("/media/huge.wav", WAV * 20, "audio/wav")  # ~2.2 MB, over 1 MB
    with pytest.raises(DownloadTooLarge) as info:
        fetch(url, tmp_path / "f", max_file_mb=1)
    assert info.value.code == "DOWNLOAD_TOO_LARGE"
    assert not list((tmp_path / "f").glob("media.*"))


def test_a_stream_of_no_announced_size_stops_at_the_limit(server: MediaServer, tmp_path: Path) -> None:
    # yt-dlp's max_filesize checks only an announced size: an endless stream without Content-Length (a live
    # radio URL) was downloaded until the disk was full
    url = server.stream("/live.wav", WAV[:44], WAV[44:], "audio/wav")
    with pytest.raises(DownloadTooLarge) as info:
        fetch(url, tmp_path / "f", max_file_mb=2)
    assert info.value.code == "DOWNLOAD_TOO_LARGE" and "without announcing its size" in info.value.message
    assert 2 * 2**20 < info.value.details["bytes"] < 4 * 2**20
    assert not list((tmp_path / "f").glob("media.*")), "the partial download is kept"


def test_too_long_is_refused_from_the_metadata() -> None:
    from scribefleet.pipeline.fetch import _check_limits

    with pytest.raises(DownloadTooLarge, match="lasts 7200 s"):
        _check_limits("u", {"duration": 7200}, 10**9, 3600)
    with pytest.raises(DownloadTooLarge, match="MB"):
        _check_limits("u", {"filesize_approx": 3 * 1024 * 1024}, 1024 * 1024, None)
    _check_limits("u", {"duration": 60, "filesize": 10}, 1024, 3600)


def test_youtube_bot_check_is_its_own_code() -> None:
    from yt_dlp.utils import DownloadError

    err = _map_error("https://www.youtube.com/watch?v=x",
                     DownloadError("ERROR: [youtube] x: Sign in to confirm you\u2019re not a bot. Use --cookies"))
    assert isinstance(err, UrlBotCheck) and err.code == "URL_BOT_CHECK" and "--cookies" in err.message


def test_internal_addresses_are_refused_unless_allowed(server: MediaServer, tmp_path: Path) -> None:
    url = server.url + "/media/talk.wav"
    for bad in (url, "http://localhost:9/x.wav", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/a"):
        with pytest.raises(UrlNotAllowed) as info:
            check_url_allowed(bad, [])
        assert info.value.code == "URL_NOT_ALLOWED"
    check_url_allowed(url, ["127.0.0.0/8"])
    check_url_allowed("http://localhost:9/x.wav", ["localhost"])
    with pytest.raises(UrlNotAllowed):  # the fetch stage checks before any request
        fetch(url, tmp_path / "f", allowlist=["10.0.0.0/8"])
    assert server.requests == []
    got, _ = fetch(url, tmp_path / "f", allowlist=["127.0.0.1"])
    assert got.path.read_bytes() == WAV
    with pytest.raises(UrlUnsupported):
        check_url_allowed("file:///etc/passwd", [])


def _url_job(url: str, tmp_path: Path, model_path: Path, name: str) -> TranscriptionJob:
    from scribefleet.jobs.create import work_dir_for

    work = work_dir_for(tmp_path / "state", url, None, "opts1")
    return TranscriptionJob(url=url, work_dir=work, outputs={f: tmp_path / "out" / f"{name}.{f}" for f in ("json", "srt")},
                            options={"formats": ("json", "srt")}, model_path=model_path, model_id="tiny.en",
                            cpu_threads=2)  # fmt: skip


def test_a_url_job_fetches_then_transcribes_and_the_same_media_elsewhere_is_transcribed_once(
        server: MediaServer, tmp_path: Path, model_path: Path, models) -> None:
    progress = ProgressLog()
    first = run_transcription(_url_job(server.url + "/talk.html", tmp_path, model_path, "a"), models, progress)
    assert progress.started_stages[:2] == ["fetch", "decode"]
    assert [f for s, f, _ in progress.calls if s == "fetch"][-1] == 1.0
    doc = json.loads(Path(first["outputs"]["json"]).read_text())
    assert wer(TEXTS["en01.wav"], doc["text"]) <= 0.3
    assert doc["metadata"]["title"].startswith("A talk") and doc["metadata"]["source_url"] == server.url + "/talk.html"
    # the same bytes under a direct link: downloaded, hashed, and the transcript reused
    progress = ProgressLog()
    second = run_transcription(_url_job(server.url + "/media/talk.wav", tmp_path, model_path, "b"), models, progress)
    assert "transcribe" not in second["stages_run"] and "fetch" in second["stages_run"]
    assert json.loads(Path(second["outputs"]["json"]).read_text())["metadata"]["title"] == "talk"
    work = tmp_path / "state" / "work"
    content_dirs = [p for p in work.iterdir() if not p.name.startswith("url-")]
    assert len(content_dirs) == 1 and (content_dirs[0] / "transcript.json").exists()
    assert not list(work.glob("url-*/media.*"))  # the download goes once the transcript exists
    # run again: nothing is downloaded
    server.requests.clear()
    again = run_transcription(_url_job(server.url + "/talk.html", tmp_path, model_path, "a"), models, ProgressLog())
    assert server.requests == [] and again["stages_run"] == ["publish"]
    # fetch chosen again: downloaded again, transcript redone too (everything depends on the download)
    job = _url_job(server.url + "/talk.html", tmp_path, model_path, "a").model_copy(
        update={"rerun_stages": ("fetch",), "rerun_id": "r1"})
    redo = run_transcription(job, models, ProgressLog())
    assert redo["stages_run"] == ["fetch", "decode", "vad", "transcribe", "render", "publish"]


def test_a_url_job_that_cannot_download_fails_with_its_code(server: MediaServer, tmp_path: Path, model_path: Path,
                                                             models) -> None:
    with pytest.raises(DownloadFailed):
        run_transcription(_url_job(server.url + "/nope.wav", tmp_path, model_path, "x"), models, ProgressLog())


# -- the network guard: every connection is checked at the address it is made to -------------------


def test_a_redirect_to_loopback_and_a_name_for_loopback_are_refused_under_the_controllers_allowlist(
        server: MediaServer, tmp_path: Path) -> None:
    """`server` (127.0.0.1) stands for the controller's own network; the allowlist permits only 127.0.0.2."""
    inner = server.url.replace("127.0.0.1", "localhost") + "/media/talk.wav"
    with MediaServer(host="127.0.0.2") as allowed:
        allowed.add("/ok.wav", WAV, "audio/wav")
        hop = allowed.redirect("/hop.wav", "/ok.wav")
        sneaky = allowed.redirect("/sneaky.wav", inner)
        got, _ = fetch(hop, tmp_path / "ok", allowlist=["127.0.0.2"])  # a redirect within the allowed host is fine
        assert got.path.read_bytes() == WAV
        server.requests.clear()
        with pytest.raises(UrlNotAllowed) as info:
            fetch(sneaky, tmp_path / "sneaky", allowlist=["127.0.0.2"])
        assert info.value.details["address"] == "127.0.0.1" and server.requests == []
        with pytest.raises(UrlNotAllowed):  # `localhost` is loopback whatever it is called
            fetch(inner, tmp_path / "name", allowlist=["127.0.0.2"])
        assert server.requests == []
        # a playlist read (expand_url) is guarded too: the refused entry stays one job that fails with its code
        assert [e.url for e in expand_url(sneaky, FetchOptions(), allowlist=["127.0.0.2"])] == [sneaky]
        assert server.requests == []
        with pytest.raises(UsageError):  # another proxy would make connections the guard never sees
            fetch(hop, tmp_path / "p", allowlist=["127.0.0.2"], options=FetchOptions(proxy="http://127.0.0.2:9"))


def test_the_guard_connects_to_the_address_it_checked_so_a_name_that_rebinds_is_refused(server: MediaServer) -> None:
    """DNS rebinding: a name answers an allowed address to one lookup and loopback to the next. Each connection
    is resolved once by the guard and made to that very address, so the second answer is refused, not used."""
    import urllib.error
    import urllib.request

    from scribefleet.pipeline.netguard import GuardProxy

    with MediaServer(host="127.0.0.2") as allowed:
        allowed.add("/media/talk.wav", WAV, "audio/wav")
        port = allowed.httpd.server_address[1]
        assert server.url.endswith(f":{server.httpd.server_address[1]}")
        answers = iter(["127.0.0.2", "127.0.0.1"])

        def rebinding(host: str, port: int, **kw: object) -> list[tuple]:  # getaddrinfo's interface and result
            assert host == "rebind.test"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

        with GuardProxy(["127.0.0.2"], resolve=rebinding) as guard:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": guard.url}))
            url = f"http://rebind.test:{port}/media/talk.wav"
            assert opener.open(url, timeout=10).read() == WAV
            with pytest.raises(urllib.error.HTTPError) as info:
                opener.open(url, timeout=10)
            assert info.value.code == 403 and guard.refused[0].details["address"] == "127.0.0.1"
        assert [p for _, p, _ in allowed.requests] == ["/media/talk.wav"]


def test_the_guard_tunnels_connect_to_an_allowed_address_and_refuses_loopback(server: MediaServer) -> None:
    """https goes through the guard as a CONNECT tunnel (bytes relayed as they are, TLS end to end); the tunnel
    is checked like a plain request. A plain HTTP exchange inside the tunnel shows the relay."""
    import http.client

    from scribefleet.pipeline.netguard import GuardProxy

    with MediaServer(host="127.0.0.2") as allowed, GuardProxy(["127.0.0.2"]) as guard:
        allowed.add("/media/talk.wav", WAV, "audio/wav")
        proxy_port = int(guard.url.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
        conn.set_tunnel("127.0.0.2", allowed.httpd.server_address[1])
        conn.request("GET", "/media/talk.wav")
        assert conn.getresponse().read() == WAV
        conn.close()
        refused = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
        refused.set_tunnel("localhost", server.httpd.server_address[1])
        with pytest.raises(OSError, match="403"):
            refused.request("GET", "/media/talk.wav")
        assert server.requests == [] and guard.refused[0].details["address"] == "127.0.0.1"


# -- malformed URLs: a stable code, never a raw ValueError in a slot (INTERNAL_ERROR) -------------------------


@pytest.mark.parametrize("location", ["http://[::1/x.wav", "http://host:99999/x.wav", "http://[::1]:abc/x.wav"])
def test_a_redirect_to_a_malformed_location_is_download_failed(server: MediaServer, tmp_path: Path,
                                                               location: str) -> None:
    """urllib raised ValueError ('Invalid IPv6 URL'), requests InvalidURL (urllib3's LocationParseError), and
    yt-dlp passed them on bare or as a RequestError: the slot failed the job with INTERNAL_ERROR."""
    url = server.redirect("/moved.wav", location)
    for allowlist in (None, ["127.0.0.0/8"]):  # the CLI, and the controller's guard
        with pytest.raises(DownloadFailed) as info:
            fetch(url, tmp_path / "f", allowlist=allowlist)
        assert info.value.code == "DOWNLOAD_FAILED" and "not a valid URL" in info.value.message
        assert info.value.details["url"] == url and info.value.details["reason"]


def test_a_page_whose_media_link_redirects_to_a_malformed_location_is_download_failed(
        server: MediaServer, tmp_path: Path) -> None:
    server.redirect("/media/moved.wav", "http://[::1/x.wav")
    url = server.add("/moved.html", PAGE.replace(b"/media/talk.wav", b"/media/moved.wav"), "text/html")
    with pytest.raises(DownloadFailed) as info:
        fetch(url, tmp_path / "f")
    assert info.value.code == "DOWNLOAD_FAILED"


@pytest.mark.parametrize("bad", ["http://[::1/x.wav", "http://host:99999/x.wav", "http://a b/x.wav", "http:///x.wav"])
def test_a_malformed_url_is_url_unsupported_before_any_request(server: MediaServer, tmp_path: Path, bad: str) -> None:
    """A playlist entry is fetched without the check the command's own URL had (jobs.inputs.check_url_form)."""
    for allowlist in (None, ["127.0.0.0/8"]):
        with pytest.raises(UrlUnsupported) as info:
            fetch(bad, tmp_path / "f", allowlist=allowlist)
        assert info.value.code == "URL_UNSUPPORTED" and "not a well-formed URL" in info.value.message
        with pytest.raises(UrlUnsupported):
            check_url_allowed(bad, [])
    assert server.requests == []


def test_a_page_with_a_malformed_media_link_fails_with_a_stable_code(server: MediaServer, tmp_path: Path,
                                                                     model_path: Path, models) -> None:
    page = TWO.replace(b"/media/other.wav", b"http://[::1/other.wav")
    url = server.add("/broken.html", page, "text/html")
    assert [e.url for e in expand_url(url, FetchOptions())] == [url]  # unreadable up front: one job, its own code
    with pytest.raises(DownloadFailed) as info:
        fetch(url, tmp_path / "f")
    assert "not a valid URL" in info.value.message
    with pytest.raises(UrlUnsupported):  # an entry of a playlist is run as a job of its own: it is checked there
        run_transcription(_url_job("http://[::1/other.wav", tmp_path, model_path, "x"), models, ProgressLog())
