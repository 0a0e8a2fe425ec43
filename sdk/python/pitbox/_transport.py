"""HTTP/1.1 with keep-alive over http.client: a small pool of connections to one daemon."""

from __future__ import annotations

import http.client
import json as jsonlib
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any, Union

from .errors import PitboxConnectionError, error_from_response

__version__ = "0.1.0"

# A query value: None is left out, booleans are "true"/"false", a list repeats the parameter.
QueryValue = Union[str, int, float, bool, None, list[str]]
Body = Union[bytes, IO[bytes], IO[str], Iterable[bytes], None]


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()
"""Stands for "the client's timeout" where a timeout may be given."""

_CHUNK = 64 * 1024


def _file_chunks(f: IO[Any]) -> Iterator[bytes]:
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            return
        yield chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)


class Response:
    """An answer whose status was below 400. Unless it was asked for as a stream, its body has
    been read (``content``) and its connection given back."""

    def __init__(self, transport: Transport, conn: http.client.HTTPConnection,
                 raw: http.client.HTTPResponse, stream: bool) -> None:
        self._transport = transport
        self._conn: http.client.HTTPConnection | None = conn
        self.raw = raw
        self.status = raw.status
        self.headers = raw.headers
        self.content = b""
        if not stream:
            self.content = self._read_all()

    def _read_all(self) -> bytes:
        try:
            data = self._guard(lambda _: self.raw.read(), -1)
        except BaseException:
            self.close()
            raise
        self._done()
        return data

    def json(self) -> Any:
        return jsonlib.loads(self.content) if self.content else None

    def _done(self) -> None:
        """The body is read to its end: the connection may serve the next call."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._transport._release(conn)

    def close(self) -> None:
        """Drops the connection (used when a stream is left before its end)."""
        conn, self._conn = self._conn, None
        self.raw.close()
        if conn is not None:
            conn.close()

    def _guard(self, read: Callable[[int], bytes], size: int) -> bytes:
        """One read of the body; a broken connection is a PitboxConnectionError."""
        try:
            return read(size)
        except TimeoutError:
            raise
        except (OSError, http.client.HTTPException) as e:
            raise PitboxConnectionError(
                "the connection to %s broke during the answer: %r" % (self._transport.url, e),
                code="unavailable") from e

    def iter_chunks(self, size: int = _CHUNK) -> Iterator[bytes]:
        """The body as it comes; the connection is reused when it was read to its end and
        dropped when the iteration is left early."""
        try:
            while True:
                chunk = self._guard(self.raw.read1, size)
                if not chunk:
                    break
                yield chunk
        except BaseException:
            self.close()
            raise
        self._done()

    def iter_lines(self) -> Iterator[bytes]:
        try:
            while True:
                line = self._guard(self.raw.readline, -1)
                if not line:
                    break
                yield line
        except BaseException:
            self.close()
            raise
        self._done()


class Transport:
    """Sends calls to one base URL with a bearer key, reusing idle connections."""

    def __init__(self, url: str, api_key: str | None, timeout: float | None,
                 max_idle: int = 8) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the API URL must look like http://host:port, not %r" % url)
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._max_idle = max_idle
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    # --- connections

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout,
                                               blocksize=_CHUNK)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout,
                                          blocksize=_CHUNK)

    def _acquire(self, fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
        if not fresh:
            with self._lock:
                if self._idle:
                    return self._idle.pop(), True
        return self._connect(), False

    def _release(self, conn: http.client.HTTPConnection) -> None:
        if conn.sock is None:  # the server said it would close: nothing to keep
            return
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # --- calls

    def target(self, path: str, query: Mapping[str, QueryValue] | None = None) -> str:
        pairs: list[tuple[str, str]] = []
        for name, value in (query or {}).items():
            if value is None:
                continue
            if isinstance(value, bool):
                pairs.append((name, "true" if value else "false"))
            elif isinstance(value, list):
                pairs.extend((name, str(v)) for v in value)
            else:
                pairs.append((name, str(value)))
        target = self._prefix + path
        if pairs:
            target += "?" + urllib.parse.urlencode(pairs)
        return target

    def request(self, method: str, path: str, *, query: Mapping[str, QueryValue] | None = None,
                json: Any = None, body: Body = None, headers: Mapping[str, str] | None = None,
                timeout: float | None = DEFAULT, stream: bool = False) -> Response:
        """Makes one call. Raises the matching :class:`PitboxError` for a status of 400 or
        more, :class:`PitboxConnectionError` when the daemon cannot be reached, and
        TimeoutError when ``timeout`` seconds pass without a byte from it."""
        h = {"User-Agent": "pitbox-python/" + __version__, "Accept-Encoding": "identity"}
        if self.api_key:
            h["Authorization"] = "Bearer " + self.api_key
        data: bytes | Iterable[bytes] | None
        replayable = True
        if json is not None:
            data = jsonlib.dumps(json).encode("utf-8")
            h["Content-Type"] = "application/json"
        elif body is None or isinstance(body, (bytes, bytearray, memoryview)):
            data = bytes(body) if body is not None else None
        else:
            data = _file_chunks(body) if hasattr(body, "read") else iter(body)  # type: ignore
            replayable = False
        h.update(headers or {})
        if timeout is DEFAULT:
            timeout = self.timeout
        url = self.target(path, query)

        for attempt in range(2):
            # A body that cannot be sent twice goes on a new connection: a kept one may have
            # been closed by the server meanwhile.
            conn, reused = self._acquire(fresh=not replayable or attempt > 0)
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            try:
                try:
                    conn.request(method, url, body=data, headers=h)
                except (BrokenPipeError, ConnectionResetError):
                    # The server may have answered (an error) without reading the whole body:
                    # its answer is still there to read.
                    pass
                raw = conn.getresponse()
            except TimeoutError:
                conn.close()
                raise
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if reused and replayable and attempt == 0:
                    continue  # a kept connection the server had closed: once more, anew
                raise PitboxConnectionError(
                    "cannot reach the pitbox API at %s: %s" % (self.url, e or type(e).__name__),
                    code="unavailable") from e
            if raw.status >= 400:
                try:
                    content = raw.read()
                except (OSError, http.client.HTTPException):
                    content = b""
                if raw.will_close or conn.sock is None:
                    conn.close()
                else:
                    self._release(conn)
                raise error_from_response(raw.status, content)
            return Response(self, conn, raw, stream)
        raise AssertionError("unreachable")
