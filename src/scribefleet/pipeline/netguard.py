"""The controller's network guard for yt-dlp: every connection checked at the address it is made to.

A server that fetches URLs for its users must not become a way into its own
network. Checking a URL's host before handing it to yt-dlp is not enough:
yt-dlp resolves the name again when it connects (a name that answered a
public address to the check may answer 127.0.0.1 a second later: DNS
rebinding), follows redirects, and fetches whatever the page points to.

So while a guarded download runs, yt-dlp reaches the network only through
`GuardProxy`, an HTTP proxy on loopback that is the one place a name is
resolved: it resolves the host once, refuses (403) when any address is
loopback, link-local, private or otherwise internal and not on the
allowlist, and connects to exactly the address it checked. yt-dlp sends
every request there (its `proxy` option, honoured by all its HTTP handlers):
plain http as an absolute-URI request, https as a CONNECT tunnel (TLS stays
end to end; yt-dlp still checks the certificate against the name).
Each redirect is a new request, so it is checked again. A refusal is
remembered (`refused`) so the caller reports URL_NOT_ALLOWED instead of
yt-dlp's HTTP 403.

Allowlist entries are networks (`127.0.0.0/8`, `10.1.2.3`) or host names
(`media.lan`: any address it resolves to).
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from scribefleet.errors import DownloadFailed, UrlNotAllowed

log = logging.getLogger("scribefleet.fetch")

Resolver = Callable[..., list[tuple[Any, ...]]]
_HEAD_MAX = 64 * 1024
_HOP_HEADERS = {"proxy-connection", "proxy-authorization", "connection", "keep-alive"}


@dataclass(frozen=True)
class Allowlist:
    """The addresses an operator lets the controller fetch from although they are internal."""

    names: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def of(cls, entries: list[str]) -> Allowlist:
        names, networks = set(), []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.lower())
        return cls(frozenset(names), tuple(networks))

    def permits(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(ip.version == n.version and ip in n for n in self.networks)


def is_internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Loopback, link-local, private, reserved, unspecified or multicast."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_reserved or ip.is_unspecified \
        or ip.is_multicast


def resolve_allowed(url: str, host: str, port: int, allowlist: Allowlist,
                    resolve: Resolver = socket.getaddrinfo) -> tuple[Any, ...]:
    """The address to connect to for `host`: resolved once; URL_NOT_ALLOWED when any of its addresses is internal
    and not on the allowlist."""
    try:
        infos = resolve(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DownloadFailed(f"{host} of {url} does not resolve ({exc}); check the URL", url=url) from exc
    if not infos:
        raise DownloadFailed(f"{host} of {url} does not resolve; check the URL", url=url)
    if host.lower() not in allowlist.names:
        for info in infos:
            ip = ipaddress.ip_address(info[4][0].split("%")[0])
            if is_internal(ip) and not allowlist.permits(ip):
                raise UrlNotAllowed(
                    f"{url} resolves to {ip}, an internal address this server does not fetch; an operator can "
                    "permit it with SCRIBEFLEET_URL_ALLOWLIST", url=url, address=str(ip),
                )  # fmt: skip
    return infos[0]


class GuardProxy:
    """An HTTP proxy on 127.0.0.1 that connects only to addresses `resolve_allowed` passed (a context manager)."""

    def __init__(self, allowlist: list[str], *, timeout_s: float = 300.0, resolve: Resolver = socket.getaddrinfo) -> None:
        self.allowlist = Allowlist.of(allowlist)
        self.timeout_s, self.resolve = timeout_s, resolve
        self.refused: list[UrlNotAllowed] = []
        guard = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                guard._serve(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler, bind_and_activate=True)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="netguard", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> GuardProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- one client connection -------------------------------------------------------

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(self.timeout_s)
        try:
            head, rest = _read_head(client)
            if head is None:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = (lines[0].split(" ", 2) + ["", ""])[:3]
            if method.upper() == "CONNECT":
                host, _, port = target.rpartition(":")
                url, port_n, first = f"https://{target}", int(port or 443), b""
                host = host.strip("[]")
            else:
                parts = urlsplit(target)
                if parts.scheme != "http" or not parts.hostname:
                    _answer(client, 400, "the guard proxy takes absolute http:// requests and CONNECT")
                    return
                url, host, port_n = target, parts.hostname, parts.port or 80
                path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                headers = [h for h in lines[1:] if h and h.split(":", 1)[0].strip().lower() not in _HOP_HEADERS]
                first = "\r\n".join([f"{method} {path} {version}", *headers, "Connection: close", "", ""]).encode("latin-1")
                first += rest
            try:
                info = resolve_allowed(url, host, port_n, self.allowlist, self.resolve)
            except UrlNotAllowed as err:
                self.refused.append(err)
                log.info("refused %s: %s", url, err.message)
                _answer(client, 403, err.message)
                return
            except DownloadFailed as err:
                _answer(client, 502, err.message)
                return
            upstream = socket.socket(info[0], socket.SOCK_STREAM)
            upstream.settimeout(self.timeout_s)
            try:
                upstream.connect(info[4])  # the very address that was checked: no second lookup
            except OSError as exc:
                upstream.close()
                _answer(client, 502, f"cannot connect to {host}: {exc}")
                return
            with upstream:
                if method.upper() == "CONNECT":
                    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    if rest:
                        upstream.sendall(rest)
                else:
                    upstream.sendall(first)
                _relay(client, upstream, self.timeout_s)
        except OSError as exc:
            log.debug("guard proxy connection ended: %s", exc)
        finally:
            client.close()


def _read_head(sock: socket.socket) -> tuple[bytes | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
        if len(data) > _HEAD_MAX:
            _answer(sock, 431, "request head too large")
            return None, b""
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _answer(sock: socket.socket, status: int, message: str) -> None:
    body = message.encode()
    reason = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large", 502: "Bad Gateway"}[status]
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    sock.sendall(head.encode() + body)


def _relay(a: socket.socket, b: socket.socket, timeout_s: float) -> None:
    """Copy bytes both ways until either side closes or nothing moves for `timeout_s`."""
    peers = {a: b, b: a}
    while True:
        ready, _, _ = select.select(list(peers), [], [], timeout_s)
        if not ready:
            return
        for sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            peers[sock].sendall(data)
