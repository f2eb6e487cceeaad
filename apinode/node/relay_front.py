"""A front process of `--fronts N`: the node's HTTP front, relaying every request to the core.

Run by the core (relay_core.py) as `python -m apinode.node.relay_front <json>` with its end of
the link as an inherited file descriptor. It listens on the node's port beside the core
(SO_REUSEPORT: the kernel spreads new connections evenly over the processes; an inherited
socket would let whichever process wakes first take a whole burst). It accepts, parses and
answers HTTP exactly as the core's own front does (front.py, http_connection.py: connection
limits, timeouts, keep-alive, pipelining), but each request's `Exchange` is a `RelayExchange`
that relays it to the core and writes back what the core answers.

The core decides an answer's `Connection` header from what it knows (the client's keep-alive,
the core draining); when this front closes for its own reasons (it drains, the client sent EOF,
requests are pipelined behind), it says `Connection: close` in the answer's head itself.

Lifecycle: SIGTERM drains (stop accepting, finish the answers in progress) and exits; if the
link to the core closes (the core died), the front closes every connection and exits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import marshal
import signal
import socket
import sys

import tornado.netutil

from . import eventloop, relay
from .front import Front, FrontSettings
from .http_connection import CLOSE_HEADER, KEEP_ALIVE_HEADER, HttpConnection, RequestHead

DRAIN_TIMEOUT = 30.0  # the core kills a front that drains for longer than its own drain timeout
_KEEP_ALIVE_LINES = (KEEP_ALIVE_HEADER, b"Connection: Keep-Alive\r\n")
WHOLE_BODY_BYTES = 64 << 10
"""Requests declaring a body up to this size are relayed whole, in one frame: far above what
calls send (hundreds of bytes), and no more than a socket buffer holds per request."""


class RelayExchange:
    """One request, relayed to the core; the core's answer is written to the client.

    A request whose declared body is at most WHOLE_BODY_BYTES goes once read whole, as one
    REQUEST frame; any other goes as it comes (START, BODY..., END), so that the core can
    answer a large or chunked upload before it has arrived (413)."""

    __slots__ = ("close", "connection", "full", "head", "link", "pending", "request_id", "written")

    def __init__(self, link: FrontLink, connection: HttpConnection, head: RequestHead) -> None:
        self.link = link
        self.connection = connection
        self.head = head
        self.request_id = link.open(self)
        self.written = False  # the answer's head went out
        self.close = False
        self.pending: list[bytes] | None = None  # the body, while the request goes whole
        self.full = False  # the client's socket is full, and the core knows

    def start(self) -> None:
        self.connection.set_max_body_size(self.link.body_limit)  # the core applies each URL's own limit
        head = self.head
        declared = head.header(b"content-length")
        if head.header(b"transfer-encoding") is None and (
            declared is None or (declared.isdigit() and int(declared) <= WHOLE_BODY_BYTES)
        ):
            self.pending = []
        else:
            self.link.send(self.request_id, relay.START, marshal.dumps(self._fields()))

    def body(self, chunk: bytes) -> None:
        if self.pending is None:
            self.link.send(self.request_id, relay.BODY, chunk)
        else:
            self.pending.append(chunk)

    def complete(self) -> None:
        if self.pending is None:
            self.link.send(self.request_id, relay.END)
            return
        body = b"".join(self.pending)
        self.pending = None
        self.link.send(self.request_id, relay.REQUEST, marshal.dumps((*self._fields(), body)))

    def eof(self) -> None:
        if self.pending is None:
            self.link.send(self.request_id, relay.EOF)

    def lost(self) -> None:
        if self.pending is None:  # else the core has not heard of it
            self.link.send(self.request_id, relay.LOST)
        self.link.exchanges.pop(self.request_id, None)

    def _fields(self) -> tuple[str, str, str, list[tuple[bytes, bytes]], bool, str]:
        head = self.head
        return (head.method, head.url, head.version, head.headers, head.keep_alive, self.connection.remote_ip)

    def answer(self, kind: int, payload: bytes) -> None:
        """A frame of the core's answer."""
        connection = self.connection
        if kind == relay.ANSWER:
            self._write(payload[1:])
            self.link.exchanges.pop(self.request_id, None)
            connection.finished(self, self.close or payload[0] == 1)
        elif kind == relay.WRITE:
            self._write(payload)
        elif kind == relay.FINISH:
            self.link.exchanges.pop(self.request_id, None)
            connection.finished(self, self.close or payload == b"\1")
        elif kind == relay.HOLD:
            connection.hold(self)
        elif kind == relay.RELEASE:
            connection.release(self)
        elif kind == relay.LOSE:
            self.link.exchanges.pop(self.request_id, None)
            connection.lose(self)

    def _write(self, data: bytes) -> None:
        connection = self.connection
        if not self.written:
            self.written = True
            data = self._head_closing(data) if connection.closes_after(self) else data
        writable = connection.write(data)
        if not writable.done() and not self.full:  # a slow reader: the core holds the stream back
            self.full = True
            self.link.send(self.request_id, relay.FULL)
            writable.add_done_callback(self._room)

    def _room(self, _: object) -> None:
        self.full = False
        if self.request_id in self.link.exchanges:
            self.link.send(self.request_id, relay.ROOM)

    def _head_closing(self, data: bytes) -> bytes:
        """The answer's head says `Connection: close` (the head comes whole in the first write)."""
        self.close = True
        end = data.find(b"\r\n\r\n") + 2
        head = data[:end]
        if CLOSE_HEADER in head:
            return data
        for line in _KEEP_ALIVE_LINES:
            head = head.replace(line, b"")
        return head + CLOSE_HEADER + data[end:]


class FrontLink(relay.FrameLink):
    """The front's end of its link to the core."""

    def __init__(self, body_limit: int, core_gone: asyncio.Event) -> None:
        super().__init__()
        self.body_limit = body_limit
        self.core_gone = core_gone
        self.exchanges: dict[int, RelayExchange] = {}
        self._next_id = 0

    def open(self, exchange: RelayExchange) -> int:
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        self.exchanges[self._next_id] = exchange
        return self._next_id

    def exchange(self, connection: HttpConnection, head: RequestHead) -> RelayExchange:
        """The front's router: every URL goes to the core."""
        return RelayExchange(self, connection, head)

    def received(self, request_id: int, kind: int, payload: bytes) -> None:
        exchange = self.exchanges.get(request_id)
        if exchange is not None:
            exchange.answer(kind, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self.core_gone.set()


async def run_front(core: socket.socket, host: str, port: int, settings: FrontSettings) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    core_gone = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # Ctrl-C reaches the core, which drains the fronts
    # a relayed body may be as large as the largest any URL accepts; the core refuses past each URL's own limit
    link = FrontLink(1 << 31, core_gone)
    await loop.create_unix_connection(lambda: link, sock=core)
    front = Front(link, settings)
    front.serve(tornado.netutil.bind_sockets(port, host, reuse_port=True))
    link.send(0, relay.LISTENING)
    stopping = asyncio.ensure_future(stop.wait())
    dying = asyncio.ensure_future(core_gone.wait())
    await asyncio.wait([stopping, dying], return_when=asyncio.FIRST_COMPLETED)
    if not core_gone.is_set():
        draining = asyncio.ensure_future(front.drain(DRAIN_TIMEOUT))
        await asyncio.wait([draining, dying], return_when=asyncio.FIRST_COMPLETED)
    front.close()
    stopping.cancel()
    dying.cancel()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = json.loads(sys.argv[1])
    core = socket.socket(fileno=spec["core"])
    eventloop.run(run_front(core, spec["host"], spec["port"], FrontSettings(**spec["settings"])))


if __name__ == "__main__":
    main()
