"""The channel between the node and a pipeline: length-prefixed frames on a socket.

A frame is a fixed header (kind, HTTP status, execution milliseconds, payload length) and a
payload of bytes. The header carries everything the node needs to answer, so the node never
parses a request or a result: it forwards the body as received and the payload as produced.
The channel is its own socket, never stdin/stdout, so a `print()` in user code cannot corrupt it.
"""

from __future__ import annotations

import socket
import struct

HEADER = struct.Struct("!BHdI")

# node -> pipeline
LOAD = 1  # payload: JSON {"code", "function", "folders", "name"}
CALL = 2  # payload: the request body, as received
# pipeline -> node
READY = 3  # the endpoint's code loaded; payload: JSON description (runtime.schema), or empty
LOAD_FAILED = 4  # payload: JSON {"message", "traceback"}
RESULT = 5  # payload: the result as JSON
ERROR = 6  # payload: the error body as JSON; status: its HTTP status


def pack(kind: int, payload: bytes = b"", status: int = 200, execution_ms: float = 0.0) -> bytes:
    return HEADER.pack(kind, status, execution_ms, len(payload)) + payload


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError("channel closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def receive(sock: socket.socket) -> tuple[int, int, float, bytes]:
    """Block for the next frame: (kind, status, execution_ms, payload). EOFError when closed."""
    kind, status, execution_ms, length = HEADER.unpack(_recv_exactly(sock, HEADER.size))
    return kind, status, execution_ms, _recv_exactly(sock, length) if length else b""
