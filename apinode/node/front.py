"""The node's HTTP front: accepts connections on the sockets it is given and keeps them bounded.

The front serves any listening socket it is handed (bound here, or inherited from a parent
process), so that several processes could each run one on a shared port.

Bounds, all settings of `apinode run|serve` (see README, "Connections"):
- at most `max_connections` open at once: past it the front stops accepting, and newcomers wait
  in the kernel's backlog until a connection closes;
- `header_timeout`, `body_timeout` and `idle_timeout` (see http_connection.py) against clients
  that hold a connection without using it (slowloris, forgotten keep-alive connections);
- the soft open-file limit is raised to the hard one at start; if `accept` still fails for want
  of file descriptors (EMFILE and friends), the front stops accepting for a moment and logs
  it (at most once a minute), instead of spinning on a socket it cannot accept from.

Concurrency: everything runs on the event loop. One timer, once a second, refreshes the `Date`
header every answer carries and closes the connections past their deadline: a request costs no
timer of its own.

Shutdown: `drain` stops accepting, closes idle connections at once and lets each busy one finish
its answer, sent with `Connection: close`; `close` aborts whatever is left.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
from dataclasses import dataclass
from email.utils import formatdate

from .errors import BodyTooLarge
from .handlers import BODY_LIMIT_OPTION, body_too_large
from .http_connection import HttpConnection, Router

log = logging.getLogger("apinode.http")

DEFAULT_MAX_CONNECTIONS = 10_000
DEFAULT_IDLE_TIMEOUT = 75.0
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
FILE_LIMIT_SHARE = 0.75
"""Share of the open-file limit the default connection cap may take: the rest is for pipelines'
channels, logs and bundles."""
OUT_OF_FILES_LOG_EVERY = 60.0  # seconds between two logs of running out of file descriptors
ACCEPT_PAUSE = 0.5
"""Seconds without accepting after accept failed for want of file descriptors."""
_ACCEPT_BATCH = 64  # connections accepted per wake-up at most, so that a burst cannot starve answers
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass(frozen=True)
class FrontSettings:
    max_body_bytes: int
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT


class Front:
    def __init__(self, router: Router, settings: FrontSettings) -> None:
        self.router = router
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.connections: set[HttpConnection] = set()
        self.draining = False
        self.date = _http_date()
        self._listeners: list[socket.socket] = []
        self._accepting = False
        self._resuming: asyncio.TimerHandle | None = None
        self._next_out_of_files_log = 0.0  # loop time: said at most once a minute, not per pause
        self._tasks: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._ticker = self.loop.call_later(1.0, self._tick)

    def serve(self, sockets: list[socket.socket]) -> None:
        """Accept connections on these listening sockets (the front closes them when draining)."""
        for sock in sockets:
            sock.setblocking(False)
            self._listeners.append(sock)
        self._accept_again()

    def body_too_large(self, max_bytes: int) -> BodyTooLarge:
        return body_too_large(None, max_bytes, BODY_LIMIT_OPTION)

    def forget(self, connection: HttpConnection) -> None:
        """A connection closed."""
        self.connections.discard(connection)
        if not self.connections:
            self._idle.set()
        if not self._accepting and self._resuming is None:
            self._accept_again()

    async def drain(self, timeout: float) -> None:
        """Stop accepting; wait (up to `timeout` s) for the answers in progress, then return."""
        self.draining = True
        self._stop_accepting()
        for sock in self._listeners:
            sock.close()
        self._listeners.clear()
        for connection in list(self.connections):
            connection.drain()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("%d connection(s) still busy after %g s of draining", len(self.connections), timeout)

    def close(self) -> None:
        """Stop everything; close the connections left (once drained, there are none)."""
        self.draining = True
        self._stop_accepting()
        self._ticker.cancel()
        if self._resuming is not None:
            self._resuming.cancel()
        for connection in list(self.connections):
            connection.abort()

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(_ACCEPT_BATCH):
            if len(self.connections) >= self.settings.max_connections:
                self._stop_accepting()  # forget() starts again when one closes
                return
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as error:
                if error.errno not in _OUT_OF_RESOURCES:
                    raise
                self._out_of_files(error)
                return
            self._adopt(sock, address[0] if isinstance(address, tuple) else str(address))

    def _adopt(self, sock: socket.socket, remote_ip: str) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # answers go out whole, at once
        connection = HttpConnection(self, remote_ip)
        self.connections.add(connection)
        self._idle.clear()
        task: asyncio.Task[object] = self.loop.create_task(self.loop.connect_accepted_socket(lambda: connection, sock))
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._adopted(done, connection, sock))

    def _adopted(self, task: asyncio.Task[object], connection: HttpConnection, sock: socket.socket) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is not None:
            sock.close()
            self.forget(connection)

    def _out_of_files(self, error: OSError) -> None:
        self._stop_accepting()
        now = self.loop.time()
        if now >= self._next_out_of_files_log:
            self._next_out_of_files_log = now + OUT_OF_FILES_LOG_EVERY
            log.error(
                "cannot accept connections: %s (%d open); not accepting for %g s at a time until one can be "
                "accepted. Raise the open-file limit (ulimit -n) or lower --max-connections",
                error.strerror,
                len(self.connections),
                ACCEPT_PAUSE,
            )
        self._resuming = self.loop.call_later(ACCEPT_PAUSE, self._accept_again)

    def _accept_again(self) -> None:
        self._resuming = None
        if self._accepting or self.draining or len(self.connections) >= self.settings.max_connections:
            return
        for listener in self._listeners:
            self.loop.add_reader(listener.fileno(), self._accept, listener)
        self._accepting = True

    def _stop_accepting(self) -> None:
        if self._accepting:
            for listener in self._listeners:
                self.loop.remove_reader(listener.fileno())
            self._accepting = False

    def _tick(self) -> None:
        self.date = _http_date()
        now = self.loop.time()
        for connection in [c for c in self.connections if c.deadline is not None and c.deadline <= now]:
            connection.timed_out()
        self._ticker = self.loop.call_later(1.0, self._tick)


def _http_date() -> bytes:
    return formatdate(usegmt=True).encode()


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one (each connection is a file); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as error:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, error)
    return soft


def default_max_connections(file_limit: int) -> int:
    """The connection cap an operator gets without asking: bounded by the open-file limit."""
    return max(1, min(DEFAULT_MAX_CONNECTIONS, int(file_limit * FILE_LIMIT_SHARE)))
