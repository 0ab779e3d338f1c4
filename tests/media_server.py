"""A real HTTP server on loopback that serves media for the URL tests (no test touches the internet).

Routes are registered as `server.add(path, body, content_type)`; GET honours
`Range: bytes=N-` (206) the way a real media host does, HEAD answers the
headers, anything unknown is a 404. Every request's method, path and Range
header is recorded in `server.requests`. `chunk_delay_s` slows the body down
so a test can interrupt a download part way. `redirect(path, location)` answers
302; `MediaServer(host="127.0.0.2")` listens on another loopback address (the
network guard's tests tell two loopback servers apart by it). `stream(path,
head, chunk)` answers like a live radio stream: no Content-Length, `head`
then `chunk` again and again until the client hangs up. `gate(path, after=n)`
holds every request for `path` but the first `n` (after recording it) until
the Event it returns is set.
"""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class MediaServer:
    """Serves registered bodies on 127.0.0.1 (or `host`) in a thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.redirects: dict[str, str] = {}
        self.streams: dict[str, tuple[bytes, bytes, str]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.gates: dict[str, tuple[threading.Event, int]] = {}
        self.chunk_delay_s = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _serve(self, head: bool) -> None:
                path = self.path.split("?", 1)[0]
                rng = self.headers.get("Range")
                server.requests.append((self.command, path, rng))
                if path in server.gates:
                    gate, after = server.gates[path]
                    if sum(p == path for _, p, _ in server.requests) > after:
                        gate.wait(120)
                if path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path in server.streams:
                    head_bytes, chunk, ctype = server.streams[path]
                    self.send_response(200)
                    self.send_header("Content-Type", ctype)
                    self.end_headers()
                    try:
                        self.wfile.write(head_bytes)
                        while not head:
                            self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    self.close_connection = True
                    return
                if path not in server.routes:
                    self.send_error(404, "Not Found")
                    return
                body, ctype = server.routes[path]
                start = 0
                m = re.match(r"bytes=(\d+)-", rng or "")
                if m and int(m.group(1)) < len(body):
                    start = int(m.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if head:
                    return
                try:
                    for i in range(start, len(body), 16384):
                        self.wfile.write(body[i:i + 16384])
                        if server.chunk_delay_s:
                            time.sleep(server.chunk_delay_s)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._serve(head=False)

            def do_HEAD(self) -> None:  # noqa: N802
                self._serve(head=True)

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def add(self, path: str, body: bytes, content_type: str) -> str:
        self.routes[path] = (body, content_type)
        return self.url + path

    def stream(self, path: str, head: bytes, chunk: bytes, content_type: str) -> str:
        self.streams[path] = (head, chunk, content_type)
        return self.url + path

    def gate(self, path: str, after: int = 0) -> threading.Event:
        """Hold the requests for `path` after the first `after` until the returned Event is set."""
        self.gates[path] = (threading.Event(), after)
        return self.gates[path][0]

    def redirect(self, path: str, location: str) -> str:
        self.redirects[path] = location
        return self.url + path

    def __enter__(self) -> "MediaServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
