"""The link between the core process and a front process (`--fronts N`): frames on a unix socket.

A front process parses HTTP and relays each request to the core as the calls an `Exchange`
receives (start with the request head, body pieces, end, eof, lost); the core answers with the
calls an exchange makes on its connection (bytes to write, finished, hold/release reading,
lose). The common case is folded: a request whose body is small is one REQUEST frame (head and
body, once it is read whole), and an answer written in one piece is one ANSWER frame (its bytes
and the end of the exchange), so a call costs each end one frame in and one out. A large body
goes in pieces (START, BODY..., END) and a streamed answer comes a WRITE per chunk.

A frame is a 9-byte header (request id, kind, payload length) and its payload; the request head
travels as a `marshal`ed tuple (both ends run the same Python: the core spawns the fronts).

Concurrency: everything runs on the event loop of each end; frames of one request arrive in the
order they were sent (one stream socket), frames of different requests interleave. The frames
sent during one turn of the loop go out in one write: the link costs a few system calls per
turn, not per request.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import cast

_HEADER = struct.Struct("!IBI")

# front -> core
START = 1  # payload: marshal((method, url, version, headers, keep_alive, remote_ip))
BODY = 2  # payload: a piece of the request's body
END = 3  # the request is read whole
LOST = 4  # the client went away before the answer was written
EOF = 5  # the client closed its side after its request (Exchange.eof)
REQUEST = 6  # START, BODY and END at once; payload: marshal((method, ..., remote_ip, body))
FULL = 7  # the client's socket is full: send no more of a streamed answer for now
ROOM = 8  # the client reads again: send on
LISTENING = 9  # (request id 0) the front accepts on the port: the node may say it is ready
# core -> front
WRITE = 11  # payload: bytes of the answer, as they go on the wire (its head first)
FINISH = 12  # the answer is written; payload b"\1" if the connection closes after it
ANSWER = 16  # WRITE and FINISH at once; payload: b"\1" or b"\0" (closes after it), then the bytes
HOLD = 13  # stop reading the request's body for a while
RELEASE = 14  # read on
LOSE = 15  # the request failed without an answer: close the connection

log = logging.getLogger("apinode.http")


class FrameLink(asyncio.Protocol):
    """One end of the link: cuts the stream into frames and hands each to `received`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []  # frames sent during this turn of the event loop

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()  # kept: on Python 3.11 each lookup is a getpid() system call

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start, size = 0, len(buffer)
        while size - start >= _HEADER.size:
            request_id, kind, length = _HEADER.unpack_from(buffer, start)
            end = start + _HEADER.size + length
            if end > size:
                break
            self.received(request_id, kind, bytes(buffer[start + _HEADER.size : end]))
            start = end
        del buffer[:start]

    def send(self, request_id: int, kind: int, *payload: bytes) -> None:
        """Queue a frame whose payload is the pieces `payload`; the frames of one turn of the
        event loop go out in one write."""
        if not self._out:
            (self._loop or asyncio.get_running_loop()).call_soon(self._flush)
        self._out.append(_HEADER.pack(request_id, kind, sum(map(len, payload))))
        self._out += payload

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def received(self, request_id: int, kind: int, payload: bytes) -> None:
        raise NotImplementedError
