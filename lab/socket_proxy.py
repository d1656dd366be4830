"""A least-privilege Docker socket proxy for tests: read-only GETs of the few endpoints the supervisor uses.

``Proxy(path)`` listens on a unix socket and forwards to the engine's socket (``/var/run/docker.sock``) only

- ``GET`` or ``HEAD`` requests,
- to ``/_ping``, ``/version``, ``/info``, ``/events``, ``/containers/json`` or ``/containers/<id or name>/json``,
  each with or without an API version prefix (``/v1.45/...``) and with any query string;

everything else is answered ``403 Forbidden`` (a JSON ``message``, as the engine words its errors) and never reaches
the engine. Every request is recorded in ``Proxy.allowed`` or ``Proxy.refused``.

One checked request per connection: the proxy reads and checks a request's head, forwards it with
``Connection: close`` (so the engine closes the connection after its answer), then pipes the answer back until either
side closes: the streaming ``/events`` answer runs as long as the client listens. Bytes the client sends after that
head (a pipelined second request) are read and dropped, never forwarded, so nothing unchecked reaches the engine;
docker-py opens a new connection per request when the answer says ``Connection: close``. An allowed request must not
carry a body (``Content-Length`` above 0 or ``Transfer-Encoding``): the endpoints above take none.

Stdlib only (socketserver and threads), for tests and the docs' example; a production deployment uses a socket proxy
container (docs/SOCKET_PROXY.md).
"""

from __future__ import annotations

import contextlib
import json
import re
import selectors
import socket
import socketserver
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["ALLOWED_METHODS", "DOCKER_SOCKET", "Proxy", "Request", "endpoint", "is_allowed"]

DOCKER_SOCKET = Path("/var/run/docker.sock")
ALLOWED_METHODS = frozenset({"GET", "HEAD"})
_VERSION_PREFIX = re.compile(r"^/v[0-9]+\.[0-9]+(?=/)")
# A container id or name: starts with a letter or digit (so never "." or ".."), no slash, no percent-escape.
_ENDPOINTS = re.compile(r"/(?:_ping|version|info|events|containers/json|containers/[A-Za-z0-9][A-Za-z0-9_.-]*/json)")
_MAX_HEAD = 64 * 1024  # bytes of request line and headers
_MAX_DRAIN = 1024 * 1024  # bytes of a refused request's body read before answering
_CHUNK = 64 * 1024
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "upgrade", "te"})


@dataclass(frozen=True)
class Request:
    """One request as the proxy saw it: its method and its path (the target without the query string)."""

    method: str
    path: str

    @property
    def endpoint(self) -> str:
        """The path without an API version prefix: ``/v1.45/containers/json`` -> ``/containers/json``."""
        return endpoint(self.path)


def endpoint(path: str) -> str:
    return _VERSION_PREFIX.sub("", path, count=1)


def is_allowed(method: str, path: str) -> bool:
    """True for a GET or HEAD of one of the read-only endpoints the supervisor uses."""
    return method in ALLOWED_METHODS and _ENDPOINTS.fullmatch(endpoint(path)) is not None


class _BadRequest(Exception):
    pass


def _read_head(conn: socket.socket) -> tuple[bytes, bytes] | None:
    """The request's head (up to and without the blank line) and the bytes read past it; None on an early close."""
    data = b""
    while True:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            return data[:end], data[end + 4 :]
        if len(data) > _MAX_HEAD:
            raise _BadRequest("request head too large")
        chunk = conn.recv(_CHUNK)
        if not chunk:
            return None
        data += chunk


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Method, target, HTTP version and headers of a request head; raises _BadRequest."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes any byte
        raise _BadRequest(str(exc)) from exc
    request_line, *lines = text.split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[1].startswith("/") or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(f"malformed request line {request_line[:200]!r}")
    headers = []
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(f"malformed header line {line[:200]!r}")
        headers.append((name, value.strip()))
    return parts[0], parts[1], parts[2], headers


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((value for key, value in headers if key.lower() == name), None)


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    """The declared body length (0 without the header), or None when it is not a plain number."""
    value = _header(headers, "content-length")
    if value is None:
        return 0
    return int(value) if value.isdigit() else None


def _answer(conn: socket.socket, status: str, message: str) -> None:
    body = json.dumps({"message": message}).encode() + b"\n"
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    with contextlib.suppress(OSError):
        conn.sendall(head.encode() + body)


def _drain_body(conn: socket.socket, headers: list[tuple[str, str]], already: int) -> None:
    """Read (a bounded part of) a refused request's body, so the client is not cut off while still sending it."""
    left = min(_content_length(headers) or 0, _MAX_DRAIN) - already
    conn.settimeout(2)
    with contextlib.suppress(OSError):
        while left > 0:
            chunk = conn.recv(min(left, _CHUNK))
            if not chunk:
                return
            left -= len(chunk)


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, path: str, proxy: Proxy) -> None:
        self.proxy = proxy
        super().__init__(path, _Handler)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server
    request: socket.socket

    def handle(self) -> None:
        proxy = self.server.proxy
        conn = self.request
        proxy._track(conn)
        try:
            self._serve(proxy, conn)
        finally:
            proxy._untrack(conn)

    def _serve(self, proxy: Proxy, conn: socket.socket) -> None:
        try:
            read = _read_head(conn)
            if read is None:
                return
            head, rest = read
            method, target, version, headers = _parse_head(head)
        except _BadRequest as exc:
            proxy._record(proxy.refused, Request("?", "?"))
            _answer(conn, "400 Bad Request", f"socket proxy: {exc}")
            return
        except OSError:
            return
        request = Request(method, target.split("?", 1)[0])
        has_body = _header(headers, "transfer-encoding") is not None or _content_length(headers) != 0
        if not is_allowed(method, request.path) or has_body:
            proxy._record(proxy.refused, request)
            _drain_body(conn, headers, len(rest))
            _answer(conn, "403 Forbidden", f"socket proxy: {method} {request.path} is not allowed")
            return
        proxy._record(proxy.allowed, request)
        kept = [(name, value) for name, value in headers if name.lower() not in _HOP_BY_HOP]
        forwarded = "\r\n".join([f"{method} {target} {version}", *(f"{n}: {v}" for n, v in kept), "Connection: close"])
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(str(proxy.upstream))
        except OSError as exc:
            upstream.close()
            _answer(conn, "502 Bad Gateway", f"socket proxy: engine not reachable: {exc}")
            return
        proxy._track(upstream)
        try:
            upstream.sendall(forwarded.encode("latin-1") + b"\r\n\r\n")
            _pipe(conn, upstream)
        except OSError:
            pass
        finally:
            proxy._untrack(upstream)
            upstream.close()


def _pipe(client: socket.socket, upstream: socket.socket) -> None:
    """Copy the engine's answer to the client until either side closes; the client's further bytes are dropped."""
    with selectors.DefaultSelector() as selector:
        selector.register(client, selectors.EVENT_READ)
        selector.register(upstream, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                source = key.fileobj
                assert isinstance(source, socket.socket)
                data = source.recv(_CHUNK)
                if not data:
                    return
                if source is upstream:
                    client.sendall(data)


class Proxy:
    """The proxy on a unix socket at `path`, forwarding allowed requests to `upstream`. Start it, or use ``with``."""

    def __init__(self, path: Path, upstream: Path = DOCKER_SOCKET) -> None:
        self.path = path
        self.upstream = upstream
        self.allowed: list[Request] = []
        self.refused: list[Request] = []
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The value for DOCKER_HOST or docker-py's base_url."""
        return f"unix://{self.path}"

    def start(self) -> Proxy:
        if len(str(self.path).encode()) >= 108:
            raise ValueError(f"unix socket path too long (at most 107 bytes): {self.path}")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = _Server(str(self.path), self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="socket-proxy", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting, cut every open connection (ending /events streams) and remove the socket file."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        with self._lock:
            still_open = list(self._open)
        for sock in still_open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def seen(self) -> tuple[list[Request], list[Request]]:
        """A consistent copy of (allowed, refused)."""
        with self._lock:
            return list(self.allowed), list(self.refused)

    def _record(self, into: list[Request], request: Request) -> None:
        with self._lock:
            into.append(request)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
