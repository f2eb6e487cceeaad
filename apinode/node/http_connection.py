"""One client connection of the node's HTTP front: HTTP/1.1 parsed in C, answers in order.

httptools (llhttp, the parser of Node.js and uvicorn) parses the bytes as they arrive and calls
back with the URL, each header, body pieces and the end of each request. Once a request's
headers are in, the front's router turns it into an `Exchange` (the run URL's `RunCall`, or a
`TornadoExchange` for every other URL) which receives the body and writes one answer.

Keep-alive and pipelining: requests on one connection are answered one after another, in the
order they came. A request read while another is being answered is held back with its body
(reading pauses meanwhile) and started when its turn comes. An answer given before its request
was read whole (413) says `Connection: close`; the rest of that body is read and dropped (up
to LINGER_BYTES more), then the connection closes. While the node drains, the requests already
read are answered and the last answer says `Connection: close`.

Malformed requests are answered with the node's JSON error (400 naming what llhttp found
wrong, 414 for an overlong URL, 431 for overlong headers) and the connection is closed.

Concurrency and timeouts: everything runs on the event loop. `deadline` is when the client's
current turn expires: before a connection's first request and while a request's headers come
in, `header_timeout`; while its body comes in, `body_timeout` of silence; between requests,
`idle_timeout`. While the node answers there is no deadline (the pools bound a call). The
front's once-a-second sweep closes connections past their deadline, so a request costs no
timer; a request read halfway is answered 408 first.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol, cast

import httptools

from .errors import ApiError, BadRequest, HeadersTooLarge, RequestTimeout, UriTooLong
from .handlers import INTERNAL_ERROR

if TYPE_CHECKING:
    from .front import Front

log = logging.getLogger("apinode.http")

MAX_URL_BYTES = 8192
"""Longest request target accepted (Apache's LimitRequestLine is 8190; browsers send far less)."""
MAX_HEADER_BYTES = 65536
"""Largest header block accepted (tornado's default `max_header_size`)."""

LINGER_BYTES = 16 << 20
"""How much more of a body answered early (413, 401 to an upload) is read and dropped, so that
a client still sending reads its answer rather than a reset; past it the connection is reset."""

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_JSON_HEAD = (
    b"HTTP/1.1 %d %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\nDate: %b\r\nServer: apinode\r\n"
)
CLOSE_HEADER = b"Connection: close\r\n"
KEEP_ALIVE_HEADER = b"Connection: keep-alive\r\n"
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


def json_head(status: int, length: int, headers: dict[str, str] | None, connection: bytes, date: bytes) -> bytes:
    """The head of an answer with a JSON body; `connection` is a Connection header line or b""."""
    head = _JSON_HEAD % (status, _REASONS.get(status, b""), length, date)
    if headers:
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("latin-1")
    return head + connection + b"\r\n"


def connection_header(close: bool, version: str) -> bytes:
    """The Connection header an answer carries: an HTTP/1.0 client keeps the connection only if told so."""
    return CLOSE_HEADER if close else KEEP_ALIVE_HEADER if version == "HTTP/1.0" else b""


def written(loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    """What `write` returns when the writer need not wait: a future already done."""
    done = loop.create_future()
    done.set_result(None)
    return done


class Exchange(Protocol):
    """One request's life once its headers are in; it answers through its connection."""

    def start(self) -> None: ...
    def body(self, chunk: bytes) -> None: ...
    def complete(self) -> None: ...
    def lost(self) -> None:
        """The connection closed before the answer was written."""

    def eof(self) -> None:
        """The client closed its side after sending the whole request: it may be gone (a closed
        socket and a half-closed one look alike until an answer is written)."""


class Router(Protocol):
    def exchange(self, connection: HttpConnection, head: RequestHead) -> Exchange: ...


@dataclass(slots=True)
class RequestHead:
    method: str
    url: str  # the request target as sent (path and query), latin-1 as HTTP defines it
    version: str  # "HTTP/1.1"
    headers: list[tuple[bytes, bytes]]  # names in lower case
    keep_alive: bool  # what the client asked for (HTTP/1.1 default, or HTTP/1.0 keep-alive)

    def header(self, name: bytes) -> bytes | None:
        """The first value of header `name` (lower case)."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class _Ahead:
    """A request read while an earlier one is being answered (pipelining), or a malformed one."""

    head: RequestHead | None
    chunks: list[bytes] = field(default_factory=list)
    complete: bool = False
    refusal: ApiError | None = None


class _Refused(Exception):
    """Raised in a parser callback to stop parsing and answer `refusal`."""

    def __init__(self, refusal: ApiError) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


_AHEAD = "requests held back"
_REFUSED = "a refused request"


class HttpConnection(asyncio.Protocol):
    def __init__(self, front: Front, remote_ip: str) -> None:
        self.front = front
        self.remote_ip = remote_ip
        self.transport: asyncio.Transport | None = None
        self.deadline: float | None = None
        self._parser = httptools.HttpRequestParser(self)
        # the request being parsed
        self._in_message = False  # between its first byte and its end
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body_bytes = 0
        self._body_limit = front.settings.max_body_bytes
        # the request being answered
        self._exchange: Exchange | None = None
        self._head: RequestHead | None = None
        self._request_read = False  # read whole
        self._answered = False  # its answer is written (the rest of its body is dropped)
        self._ahead: collections.deque[_Ahead] = collections.deque()
        self._last = False  # no request after the ones read so far
        self._held: set[object] = set()  # who asked to stop reading (an exchange, `_AHEAD`)
        self._writable: asyncio.Future[None] | None = None
        self._closing = False

    # --- transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.deadline = self.front.loop.time() + self.front.settings.header_timeout

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._last = True  # what follows the request is not HTTP: answer it, then close
            self.hold(_REFUSED)
            if self._exchange is None:
                self._close()
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            if isinstance(cause, _Refused):
                self._refuse(cause.refusal)
            else:  # a bug in the node: the client gets the usual 500, the log the traceback
                log.error("failed to handle a request from %s", self.remote_ip, exc_info=cause)
                self._refuse(INTERNAL_ERROR)
        except httptools.HttpParserError as error:
            reason = str(error).rstrip(".") or "it cannot be parsed"
            self._refuse(BadRequest(f"malformed HTTP request: {reason}"))

    def eof_received(self) -> bool:
        """The client sent all it will send (`printf ... | nc`): answer what it asked, then close."""
        self._last = True  # a request left halfway is answered 408 at its timeout
        if self._exchange is not None and not self._in_message and not self._answered:
            self._exchange.eof()
        return self._exchange is not None  # False: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.deadline = None
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        exchange, self._exchange = self._exchange, None
        if exchange is not None and not self._answered:
            exchange.lost()
        self.front.forget(self)

    def pause_writing(self) -> None:
        self._writable = self.front.loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # --- parser callbacks (httptools), in the order of the bytes

    def on_message_begin(self) -> None:
        self._in_message = True
        self._url = b""
        self._headers = []
        self._header_bytes = self._body_bytes = 0
        self._body_limit = self.front.settings.max_body_bytes
        if not self._ahead:
            self.deadline = self.front.loop.time() + self.front.settings.header_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URL_BYTES:
            raise _Refused(
                UriTooLong(f"the request URL is over {MAX_URL_BYTES} bytes; send long parameters in the body")
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise _Refused(HeadersTooLarge(f"the request headers are over {MAX_HEADER_BYTES} bytes"))
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        version = parser.get_http_version()
        head = RequestHead(
            parser.get_method().decode(),
            self._url.decode("latin-1"),
            f"HTTP/{version}",
            self._headers,
            parser.should_keep_alive(),
        )
        if version == "1.1" and head.header(b"host") is None:
            raise _Refused(BadRequest("the request has no Host header, which HTTP/1.1 requires"))
        if self._exchange is None:
            self.deadline = self.front.loop.time() + self.front.settings.body_timeout
            self._start(head, read=False)
        else:
            self._ahead.append(_Ahead(head))
            self.hold(_AHEAD)

    def on_body(self, chunk: bytes) -> None:
        self._body_bytes += len(chunk)
        if self._body_bytes > self._body_limit:
            if self._answered and not self._ahead:  # dropping the rest of an answered request
                self._abort()
                return
            raise _Refused(self.front.body_too_large(self._body_limit))
        if self._ahead:
            self._ahead[-1].chunks.append(chunk)
        elif self._exchange is not None and not self._answered:
            self.deadline = self.front.loop.time() + self.front.settings.body_timeout
            self._exchange.body(chunk)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self._ahead:
            self._ahead[-1].complete = True
        else:
            self.deadline = None
            self._read_whole()

    # --- what exchanges call

    def set_max_body_size(self, max_bytes: int) -> None:
        """The body size past which the request being read is refused (413)."""
        self._body_limit = max_bytes

    def hold(self, owner: object) -> None:
        """Stop reading until `owner` releases (flow control, requests held back)."""
        if not self._held and self.transport is not None and not self._closing:
            self.transport.pause_reading()
            self.deadline = None  # the client is not waited for while the node does not read
        self._held.add(owner)

    def release(self, owner: object) -> None:
        if owner not in self._held:
            return
        self._held.discard(owner)
        if not self._held and self.transport is not None and not self._closing:
            self.transport.resume_reading()
            if self._in_message:
                self.deadline = self.front.loop.time() + self.front.settings.body_timeout

    def closes_after(self, exchange: Exchange) -> bool:
        """Whether the connection closes after this exchange's answer."""
        return (
            not self._request_read
            or self._closing
            or ((self.front.draining or self._last) and not self._ahead)
            or self._head is None
            or not self._head.keep_alive
            or self._exchange is not exchange
        )

    def write(self, data: bytes) -> asyncio.Future[None]:
        """Send bytes; the future is done once the transport's buffer has room (flow control)."""
        if self.transport is not None and not self._closing:
            self.transport.write(data)
        return self.writable()

    def writable(self) -> asyncio.Future[None]:
        """Done once the transport's buffer has room (or the connection is gone)."""
        return self._writable if self._writable is not None else written(self.front.loop)

    def respond(
        self,
        exchange: Exchange,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        head_only: bool = False,
    ) -> bool:
        """The whole answer, a JSON body; False when the client is gone."""
        if self._exchange is not exchange or self._closing or self.transport is None:
            return False
        close = self.closes_after(exchange)
        connection = connection_header(close, self._head.version if self._head else "HTTP/1.1")
        self.transport.write(self._json_head(status, len(body), headers, connection) + (b"" if head_only else body))
        self.finished(exchange, close)
        return True

    def finished(self, exchange: Exchange, close: bool) -> None:
        """The exchange's answer is written: go on with the next request, or close."""
        if self._exchange is not exchange:
            return
        self._answered = True
        if not self._request_read:  # the rest of the body is dropped; on_message_complete closes
            self._body_limit = max(self._body_limit, self._body_bytes + LINGER_BYTES)
            self.release(exchange)
            return
        self._exchange = self._head = None
        self._answered = False
        if close or self._closing or (self.front.draining and not self._ahead):
            self._close()
        else:
            self._next()

    def lose(self, exchange: Exchange) -> None:
        """The exchange failed without answering: close, as tornado does when a handler raises."""
        if self._exchange is exchange:
            self._abort()

    # --- what the front calls

    def timed_out(self) -> None:
        self.deadline = None
        if self._in_message and not self._answered and not self._ahead:
            self._refuse(RequestTimeout("the request did not arrive in time; send it whole, without pauses"))
        else:
            self._abort()

    def drain(self) -> None:
        """Close now if between requests; else after the answer in progress."""
        if self._exchange is None and not self._in_message:
            self._close()

    def abort(self) -> None:
        self._abort()

    # --- inside

    def _start(self, head: RequestHead, read: bool) -> None:
        self._head = head
        self._request_read = self._answered = False
        self._exchange = exchange = self.front.router.exchange(self, head)
        exchange.start()
        if not read and self._exchange is exchange and not self._answered and head.header(b"expect") == b"100-continue":
            self.write(_CONTINUE)

    def _read_whole(self) -> None:
        self._request_read = True
        if self._answered:  # answered before its body was read whole: that said `Connection: close`
            self._close()
        elif self._exchange is not None:
            self._exchange.complete()

    def _next(self) -> None:
        if not self._ahead:
            self.deadline = self.front.loop.time() + (
                self.front.settings.header_timeout if self._in_message else self.front.settings.idle_timeout
            )
            return
        ahead = self._ahead.popleft()
        if not self._ahead:
            self.release(_AHEAD)
        if ahead.refusal is not None or ahead.head is None:
            self._send_refusal(ahead.refusal or BadRequest("malformed HTTP request"))
            return
        self._start(ahead.head, read=ahead.complete)
        exchange = self._exchange
        for chunk in ahead.chunks:
            if exchange is None or self._answered or exchange is not self._exchange:
                return
            exchange.body(chunk)
        if ahead.complete:
            self._read_whole()

    def _refuse(self, refusal: ApiError) -> None:
        """Answer a request that cannot be read, in its turn, then close."""
        self.hold(_REFUSED)  # nothing more is parsed on this connection
        self._in_message = False
        if self._exchange is not None and (self._ahead or (self._request_read and not self._answered)):
            broken = self._ahead[-1] if self._ahead else None
            if broken is not None and broken.head is not None and not broken.complete:
                self._ahead[-1] = _Ahead(None, refusal=refusal)  # the request that broke, refused in its turn
            else:
                self._ahead.append(_Ahead(None, refusal=refusal))  # after the answers in progress
            return
        exchange, self._exchange = self._exchange, None
        if exchange is not None and not self._answered:
            exchange.lost()  # its request is broken: it will not be answered
        if self._answered:  # the answer went out already; the rest of its body is broken
            self._abort()
        else:
            self._send_refusal(refusal)

    def _send_refusal(self, refusal: ApiError) -> None:
        log.info("refused a request from %s: %s", self.remote_ip, refusal.message)
        if self.transport is not None and not self._closing:
            body = refusal.body()
            self.transport.write(self._json_head(refusal.status, len(body), refusal.headers, CLOSE_HEADER) + body)
        self._close()

    def _json_head(self, status: int, length: int, headers: dict[str, str] | None, connection: bytes) -> bytes:
        return json_head(status, length, headers, connection, self.front.date)

    def _close(self) -> None:
        if not self._closing and self.transport is not None:
            self._closing = True
            self.deadline = None
            self.transport.close()  # once what is buffered is sent

    def _abort(self) -> None:
        if self.transport is not None:
            self._closing = True
            self.deadline = None
            self.transport.abort()
