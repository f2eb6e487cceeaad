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

# node -> pipeline or template
LOAD = 1  # payload: JSON {"code", "function", "folders", "name", "maxResultBytes", "batch"}
CALL = 2  # payload: the request body, as received (for a batched endpoint, CALL frames packed)
# pipeline or template -> node
READY = 3  # the endpoint's code loaded; payload: JSON description (runtime.schema), or empty
LOAD_FAILED = 4  # payload: JSON {"message", "traceback"}
RESULT = 5  # payload: the result as JSON (for a batched endpoint, RESULT/ERROR frames packed)
ERROR = 6  # payload: the error body as JSON; status: its HTTP status
# node -> template: fork a pipeline; two descriptors ride along (SCM_RIGHTS): the pipeline's
# end of its channel, and where its output goes
FORK = 7
# template -> node
FORKED = 8  # payload: the new pipeline's pid, in ASCII digits
FORK_REFUSED = 9  # payload: why this template cannot fork, UTF-8 text
# A call whose caller takes a stream: a generator's items come one ITEM frame each, as produced,
# and END (or ERROR) closes the call; any other function answers RESULT or ERROR as to CALL.
CALL_STREAMED = 10  # node -> pipeline; payload: the request body
ITEM = 11  # pipeline -> node; payload: one item as JSON
END = 12  # pipeline -> node: the stream is over; execution_ms: the time inside the function
CANCEL = 13  # node -> pipeline, during a streamed call: the caller went away, close the generator


def pack(kind: int, payload: bytes = b"", status: int = 200, execution_ms: float = 0.0) -> bytes:
    return HEADER.pack(kind, status, execution_ms, len(payload)) + payload


def unpack_all(payload: bytes | bytearray) -> list[tuple[int, int, float, bytes]]:
    """The frames packed one after another in a payload (a batch's calls or answers)."""
    frames, at = [], 0
    while at < len(payload):
        kind, status, execution_ms, length = HEADER.unpack_from(payload, at)
        at += HEADER.size
        frames.append((kind, status, execution_ms, bytes(payload[at : at + length])))
        at += length
    return frames


_SMALL = 1 << 16


def send(sock: socket.socket, kind: int, payload: bytes = b"", status: int = 200, execution_ms: float = 0.0) -> None:
    """Send one frame; a large payload is not copied behind its header."""
    header = HEADER.pack(kind, status, execution_ms, len(payload))
    if len(payload) < _SMALL:
        sock.sendall(header + payload)
    else:
        sock.sendall(header)
        sock.sendall(payload)


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


def receive_with_fds(sock: socket.socket, max_fds: int) -> tuple[int, bytes, list[int]]:
    """Block for the next frame and the descriptors sent with it: (kind, payload, fds)."""
    head, fds, _, _ = socket.recv_fds(sock, HEADER.size, max_fds)
    if not head:
        raise EOFError("channel closed")
    if len(head) < HEADER.size:
        head += _recv_exactly(sock, HEADER.size - len(head))
    kind, _, _, length = HEADER.unpack(head)
    return kind, _recv_exactly(sock, length) if length else b"", list(fds)
