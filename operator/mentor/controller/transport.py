"""The operator's requests to the API server: HTTP/1.1 on kept-alive connections, with nothing
between the socket and the JSON.

Under a burst of jobs the operator's hot path is requests: two pods, a Service, two status
writes and two Events a job. Through the generated client's urllib3 pool a small request cost
0.36 ms of CPU on an idle machine (about 0.8 ms in a burst of 1,000 jobs, a third of the
operator's CPU), spent on what a JSON API does not need: the URL parsed again for every call,
header containers, retry bookkeeping, and http.client's e-mail parser for the answer's headers.
Here a request is one write of its line, headers and body, and its answer is read with readline
and read: about 0.1 ms (`benchmarks/README.md`, session 36).

The connections themselves are still made by urllib3, from the client's configuration (its CA,
client certificate, server name and socket options), so what changes is how the bytes are
exchanged, not with whom or how securely. A configuration with a proxy is left to urllib3
entirely (`kube.request`).
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

CONNECT_TIMEOUT = 10.0  # seconds to open a connection (TCP and TLS)
READ_TIMEOUT = 60.0  # seconds an answer may take: a busy API server answers in seconds
MAX_LINE = 65536  # bytes of a status or header line: longer is not an API server's


@dataclass(frozen=True)
class Response:
    """An answer, with what `ApiException.from_response` reads of one."""

    status: int
    reason: str
    headers: dict[str, str]  # names in lower case
    data: bytes


class _Stale(Exception):
    """A kept-alive connection the server had closed before it read the request: the request
    was never seen, so it is sent again on a new connection."""


class _Connection:
    def __init__(self, pool: Any) -> None:
        # urllib3 makes the connection as the generated client would (TLS settings, client
        # certificate, socket options); from here on its socket is read and written directly.
        self._conn = pool._new_conn()
        self._conn.timeout = CONNECT_TIMEOUT
        self._conn.connect()
        self.sock = self._conn.sock
        self.sock.settimeout(READ_TIMEOUT)
        self.reader = self.sock.makefile("rb")
        self.reused = False

    def close(self) -> None:
        self.reader.close()
        self._conn.close()


class Transport:
    """A pool of kept-alive connections to one API server, shared by every thread: a request
    takes an idle connection (or opens one), and gives it back once its answer is read whole."""

    def __init__(self, pool: Any, authority: str, size: int) -> None:
        self._pool, self._authority, self._size = pool, authority, size
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def request(self, method: str, path: str, headers: dict[str, str],
                body: bytes | None) -> Response:
        """Send one request and read its answer. A connection that fails is closed; a failure
        to reach the server at all is an ApiException of status 0 that names the cause (as the
        generated client says a TLS failure), so callers handle every API error alike."""
        conn, line = self._start(self._message(method, path, headers, body))
        try:
            return self._finish(conn, method, line)
        except (OSError, HTTPError, ValueError) as e:
            raise _unreachable(e) from e

    def stream(self, path: str, headers: dict[str, str],
               timeout: float) -> Generator[bytes, None, None]:
        """The lines of a streamed GET (a watch), each as it comes, with `timeout` seconds of
        silence allowed. An answer other than 200 is raised as the client's ApiException; a
        stream read to its end gives its connection back, one left early closes it."""
        conn, line = self._start(self._message("GET", path, headers, None))
        done = False
        try:
            version, status, reason, head = _head(conn.reader, line)
            if status != 200 or "chunked" not in head.get("transfer-encoding", ""):
                # A refusal (a 403, a kind that is not served), or an answer that is not a
                # stream: read whole, an error raised as the client raises it.
                data, done = _body(conn.reader, "GET", version, status, head)
                if status != 200:
                    ApiException.from_response(http_resp=Response(status, reason, head, data),
                                               body=None, data=None)
                yield from lines([data])
                return
            conn.sock.settimeout(timeout)
            yield from lines(_chunked(conn.reader))
            done = _keep(version, head)
        except (OSError, ValueError) as e:
            raise _unreachable(e) from e
        finally:
            if done:
                conn.sock.settimeout(READ_TIMEOUT)
                self._give(conn)
            else:
                conn.close()

    def _take(self) -> _Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._open()

    def _open(self) -> _Connection:
        return _Connection(self._pool)

    def _give(self, conn: _Connection) -> None:
        conn.reused = True
        with self._lock:
            if len(self._idle) < self._size:
                self._idle.append(conn)
                return
        conn.close()

    def _start(self, message: bytes) -> tuple[_Connection, bytes]:
        """Send a request on a kept-alive connection, or on a new one if the server had closed
        it; the connection and the answer's status line."""
        try:
            try:
                conn = self._take()
                return conn, self._send(conn, message)
            except _Stale:
                conn = self._open()
                return conn, self._send(conn, message)
        except (OSError, HTTPError, _Stale, ValueError) as e:
            raise _unreachable(e) from e

    def _message(self, method: str, path: str, headers: dict[str, str],
                 body: bytes | None) -> bytes:
        head = [f"{method} {path} HTTP/1.1", f"Host: {self._authority}",
                *(f"{k}: {v}" for k, v in headers.items()),
                f"Content-Length: {len(body) if body else 0}", "", ""]
        return "\r\n".join(head).encode("latin-1") + (body or b"")

    @staticmethod
    def _send(conn: _Connection, message: bytes) -> bytes:
        """Send a request; its answer's status line. A kept-alive connection that turns out
        closed raises _Stale (the request never reached the server)."""
        try:
            conn.sock.sendall(message)
            line: bytes = conn.reader.readline(MAX_LINE)
        except (BrokenPipeError, ConnectionResetError) as e:
            conn.close()
            if conn.reused:
                raise _Stale() from e
            raise
        except BaseException:
            conn.close()
            raise
        if not line:
            conn.close()
            if conn.reused:
                raise _Stale()
            raise ConnectionError("the API server closed the connection without answering")
        return line

    def _finish(self, conn: _Connection, method: str, line: bytes) -> Response:
        """Read the rest of an answer; the connection goes back to the pool if it can."""
        try:
            version, status, reason, head = _head(conn.reader, line)
            data, keep = _body(conn.reader, method, version, status, head)
        except BaseException:
            conn.close()
            raise
        if keep:
            self._give(conn)
        else:
            conn.close()
        return Response(status, reason, head, data)


def _unreachable(e: Exception) -> ApiException:
    return ApiException(status=0, reason=f"{type(e).__name__}: {e}")


def _head(reader: Any, line: bytes) -> tuple[str, int, str, dict[str, str]]:
    """An answer's version, status, reason and headers, its status line already read (an
    interim 1xx answer is skipped: the real one follows)."""
    while True:
        parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ValueError(f"not an HTTP answer: {line[:80]!r}")
        headers = _headers(reader)
        if not 100 <= int(parts[1]) < 200:
            return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "", headers
        line = reader.readline(MAX_LINE)


def _body(reader: Any, method: str, version: str, status: int,
          headers: dict[str, str]) -> tuple[bytes, bool]:
    """An answer's body, and whether its connection can be kept for the next request."""
    keep = _keep(version, headers)
    if method == "HEAD" or status in (204, 304):
        return b"", keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _chunks(reader), keep
    if "content-length" in headers:
        length = int(headers["content-length"])
        data = reader.read(length)
        if len(data) != length:
            raise ConnectionError(f"the answer ended after {len(data)} of {length} bytes")
        return data, keep
    return reader.read(), False  # delimited by the connection's end


def _keep(version: str, headers: dict[str, str]) -> bool:
    return version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"


def _headers(reader: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    while True:
        line = reader.readline(MAX_LINE)
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()


def _chunks(reader: Any) -> bytes:
    return b"".join(_chunked(reader))


def _chunked(reader: Any) -> Iterator[bytes]:
    """The chunks of a chunked body as they come, to its end (trailers read and dropped)."""
    while size := int(reader.readline(MAX_LINE).split(b";")[0], 16):
        chunk = reader.read(size + 2)  # the chunk and its CRLF
        if len(chunk) != size + 2:
            raise ConnectionError("the answer ended inside a chunk")
        yield chunk[:size]
    _headers(reader)  # trailers, if any, and the final empty line


def lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The non-empty lines of a stream of chunks (a watch: one JSON event a line), each as soon
    as it is whole."""
    pending = b""
    for chunk in chunks:
        *whole, pending = (pending + chunk).split(b"\n")
        yield from (line for line in whole if line)
    if pending:
        yield pending
