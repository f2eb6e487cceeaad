"""A streamed answer of the run URL: server-sent events or JSON lines, written as items come.

The caller picks the format with its Accept header (DESIGN.md, "Function shapes"):
- `text/event-stream`: `data: <item>` per item, then `event: end` whose data is
  `{"timing", "apiContext"}`, or `event: error` whose data is the usual error object;
- `application/x-ndjson`: one line per item, the item's JSON as is, then always one last line
  `{"event": "end", "data": {...}}` or `{"event": "error", "data": {error object}}`: a reader
  takes every line but the last as an item.
Without either (or from an HTTP/1.0 caller, which cannot read chunks) nothing streams: a
generator's items are collected by the pipeline and answered in the usual envelope.

The answer is chunked; each item is written as one chunk the moment its frame arrives. While
the client's socket is full, the pipeline's channel is not read (ItemSink.writable), so the
node holds no more of a stream than the socket buffers do and a slow reader slows the
generator down. The head is written with the first
item (or the end): an error before any item is answered as any other, with its own status.

Concurrency: on the event loop, from the call's task.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .http_connection import Exchange, HttpConnection, RequestHead

_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: %b\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache\r\n"
    b"Date: %b\r\nServer: apinode\r\n"
)
_LAST_CHUNK = b"0\r\n\r\n"


@dataclass(frozen=True)
class StreamFormat:
    content_type: bytes
    item: bytes  # each a %-template of one JSON value
    end: bytes
    error: bytes


SSE = StreamFormat(b"text/event-stream", b"data: %b\n\n", b"event: end\ndata: %b\n\n", b"event: error\ndata: %b\n\n")
NDJSON = StreamFormat(
    b"application/x-ndjson", b"%b\n", b'{"event":"end","data":%b}\n', b'{"event":"error","data":%b}\n'
)


def stream_format(head: RequestHead) -> StreamFormat | None:
    """The stream the caller accepts, or None for the usual whole answer."""
    accept = head.header(b"accept")
    if not accept or head.version != "HTTP/1.1" or head.method != "POST":
        return None
    for stream in (SSE, NDJSON):
        if stream.content_type in accept:
            return stream
    return None


class StreamAnswer:
    """One streamed answer on one connection; `gone` once the client has left."""

    def __init__(self, connection: HttpConnection, exchange: Exchange, stream: StreamFormat) -> None:
        self.connection = connection
        self.exchange = exchange
        self.format = stream
        self.started = False
        self.gone = False
        self._close = False

    def item(self, payload: bytes | bytearray) -> bool:
        """Write one item; False once the client is gone (the generator is then stopped)."""
        if self.gone:
            return False
        self._write(self.format.item % payload)
        return True

    def writable(self) -> asyncio.Future[None]:
        return self.connection.writable()

    def end(self, body: bytes, ends_stream: bool) -> bool:
        """Finish with the end data (`ends_stream`) or an error object: True when that closed
        the stream; False when nothing streamed and the answer is a whole one, as usual."""
        if not (self.started or ends_stream):
            return False
        if self.gone:  # cut short: the connection cannot carry another answer (it may be half-open)
            self.connection.lose(self.exchange)
        else:
            self._write((self.format.end if ends_stream else self.format.error) % body, _LAST_CHUNK)
            self.connection.finished(self.exchange, self._close)
        return True

    def _write(self, data: bytes, after: bytes = b"") -> None:
        chunk = b"%x\r\n%b\r\n%b" % (len(data), data, after)
        if not self.started:
            self.started = True
            self._close = self.connection.closes_after(self.exchange)
            head = _HEAD % (self.format.content_type, self.connection.front.date)
            chunk = head + (b"Connection: close\r\n\r\n" if self._close else b"\r\n") + chunk
        self.connection.write(chunk)
