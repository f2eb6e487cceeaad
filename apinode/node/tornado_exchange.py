"""A request for the tornado Application (every URL but the run URL), on the front's connection.

To tornado this object is the request's `HTTPConnection` (`request.connection`): handlers
write through `write_headers`, `write` and `finish`, and register `set_close_callback`,
exactly as on tornado's own HTTP1Connection, whose framing rules this follows (chunked output
when no Content-Length is set, no body for HEAD, `Connection: close` when the connection will
close, `Keep-Alive` for an HTTP/1.0 client that asked). On the other side it drives the message
delegate that `Application.find_handler` returns, as HTTP1ServerConnection does: headers, body
pieces, end.

Concurrency: one task per request runs the delegate, awaiting what its methods return, so a
`@stream_request_body` handler's `prepare` runs before its first `data_received`, and a slow
`data_received` slows the client down: the connection stops reading while more than
`_BUFFER_BYTES` wait for the handler.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from collections.abc import Awaitable, Callable

import tornado.httputil
import tornado.iostream
import tornado.web
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine, ResponseStartLine

from .http_connection import HttpConnection, RequestHead

app_log = logging.getLogger("tornado.application")

SLASHES = re.compile(r"//+")
_BUFFER_BYTES = 1 << 18


class _Context:
    """What HTTPServerRequest reads from `connection.context`."""

    def __init__(self, remote_ip: str) -> None:
        self.remote_ip = remote_ip
        self.protocol = "http"


class TornadoExchange(tornado.httputil.HTTPConnection):
    def __init__(self, connection: HttpConnection, head: RequestHead, app: tornado.web.Application) -> None:
        self.connection = connection
        self.context = _Context(connection.remote_ip)
        self.head = head
        headers = HTTPHeaders()
        for name, value in head.headers:
            headers.add(name.decode("latin-1"), value.decode("latin-1"))
        self.start_line = RequestStartLine(head.method, head.url, head.version)
        self.request = HTTPServerRequest(connection=self, start_line=self.start_line, headers=headers)
        if "//" in self.request.path:  # a client given a base URL ending in "/" asks for "//admin/..."
            self.request.path = SLASHES.sub("/", self.request.path)
        self.delegate = app.find_handler(self.request)
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._read = False  # the request is read whole
        self._finish_delivered = False  # delegate.finish() was called
        self._gone = False
        self._answering = False
        self._chunking = False
        self._close = False
        self._close_callback: Callable[[], None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._task: asyncio.Future[None] | None = None

    # --- from the connection

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._drive())

    def body(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > _BUFFER_BYTES:
            self.connection.hold(self)
        self._wake()

    def complete(self) -> None:
        self._read = True
        self._wake()

    def eof(self) -> None:
        """Tornado's handlers learn of a closed connection only once it is lost, as under tornado."""

    def lost(self) -> None:
        self._gone = True
        self._wake()
        if not self._finish_delivered:
            self._call(self.delegate.on_connection_close)
        elif self._close_callback is not None:
            callback, self._close_callback = self._close_callback, None
            self._call(callback)

    # --- tornado's HTTPConnection interface

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        self._close_callback = callback

    def set_max_body_size(self, max_body_size: int) -> None:
        self.connection.set_max_body_size(max_body_size)

    def set_body_timeout(self, timeout: float) -> None:
        """The front's body timeout applies to every request (README, "Connections")."""

    def write_headers(
        self,
        start_line: RequestStartLine | ResponseStartLine,
        headers: HTTPHeaders,
        chunk: bytes | None = None,
    ) -> asyncio.Future[None]:
        assert isinstance(start_line, ResponseStartLine)
        if self._gone:
            return _closed()
        code = start_line.code
        version = self.head.version
        self._chunking = (
            version == "HTTP/1.1"
            and self.head.method != "HEAD"
            and code not in (204, 304)
            and not 100 <= code < 200
            and "Content-Length" not in headers
        )
        # a body neither chunked nor of a declared length ends where the connection does
        delimited = self._chunking or "Content-Length" in headers or self.head.method == "HEAD" or code in (204, 304)
        self._close = self.connection.closes_after(self) or not delimited
        if version == "HTTP/1.1" and self._close:
            headers["Connection"] = "close"
        elif version == "HTTP/1.0" and self.head.keep_alive and not self._close:
            headers["Connection"] = "Keep-Alive"
        if self._chunking:
            headers["Transfer-Encoding"] = "chunked"
        if "Date" not in headers:
            headers["Date"] = self.connection.front.date.decode()
        lines = [b"HTTP/1.1 %d %s" % (code, start_line.reason.encode("latin-1"))]
        lines.extend(f"{name}: {value}".encode("latin-1") for name, value in headers.get_all())
        self._answering = True
        return self.connection.write(b"\r\n".join(lines) + b"\r\n\r\n" + self._frame(chunk or b""))

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        if self._gone:
            return _closed()
        return self.connection.write(self._frame(chunk))

    def finish(self) -> None:
        if self._gone:
            return
        if self._chunking:
            self.connection.write(b"0\r\n\r\n")
        self._gone = True  # nothing more from this request's handler
        self.connection.finished(self, self._close)

    # --- inside

    def _frame(self, chunk: bytes) -> bytes:
        if self.head.method == "HEAD" or not chunk:
            return b""
        if self._chunking:
            return b"%x\r\n%b\r\n" % (len(chunk), chunk)
        return chunk

    async def _drive(self) -> None:
        try:
            await _settled(self.delegate.headers_received(self.start_line, self.request.headers))
            while not self._gone or self._chunks:
                while self._chunks:
                    chunk = self._chunks.popleft()
                    self._buffered -= len(chunk)
                    if not self._gone:
                        await _settled(self.delegate.data_received(chunk))
                self.connection.release(self)
                if self._read or self._gone:
                    break
                self._wakeup = asyncio.get_running_loop().create_future()
                await self._wakeup
            if not self._gone:
                self._finish_delivered = True
                self.delegate.finish()
        except Exception:
            app_log.error("Uncaught exception in %s %s", self.head.method, self.head.url, exc_info=True)
            self._gone = True
            self.connection.lose(self)

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _call(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            app_log.error("Uncaught exception closing %s %s", self.head.method, self.head.url, exc_info=True)


async def _settled(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result


def _closed() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_exception(tornado.iostream.StreamClosedError())
    future.exception()  # retrieved: a caller that ignores it is not warned about
    return future
