"""The core's side of `--fronts N`: it spawns N-1 front processes and serves what they relay.

The core process owns everything stateful (services, pools, pipelines, admin state, metrics,
query logs) and also accepts on the port with its own front; each front process listens on the
same port (SO_REUSEPORT), parses HTTP, and relays every request here (relay.py). For the
request's exchange (`RunCall` or `TornadoExchange`, exactly as on a direct connection) a
`RelayedRequest` stands in for the client connection and turns what the exchange does into
frames. So pool rules, metrics and query logs are those of one process; what is per front is
only connections: their limits, timeouts and accepting.

Lifecycle: `FrontProcesses.start` spawns the fronts (a small interpreter each; they import no
services) and returns once each one listens (LISTENING), so a node that says it is ready
accepts in every process; one that exits while the node serves is spawned again (at most once
a second).
`drain` sends each front SIGTERM: it stops accepting and finishes its answers, which the core
still serves; a front still alive past the drain timeout is killed. A front whose core dies sees
its link close and exits (relay_front.py).

Concurrency: all on the core's event loop. Both directions are flow-controlled per request:
request bodies through HOLD/RELEASE, and answers through FULL/ROOM, which the front sends when
its client's socket fills and drains, so that a streamed answer waits for a slow reader here
(apinode.node.stream_answer) as on a direct connection. A whole answer is sent at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import marshal
import signal
import socket
import sys
from typing import TYPE_CHECKING

from . import relay
from .errors import ApiError
from .http_connection import Exchange, RequestHead, Router, connection_header, json_head, written

if TYPE_CHECKING:
    from .front import Front

log = logging.getLogger("apinode.node")

RESPAWN_PAUSE = 1.0  # seconds between two spawns of a front that keeps dying
FRONT_START_TIMEOUT = 30.0  # seconds for a front to listen (it takes about 0.3 s)


class FrontStartFailed(OSError):
    """A front process ended, or hung, before it listened on the port (the command line reports
    it as it does a port it cannot bind)."""


class RelayedRequest:
    """One relayed request, as the connection its exchange answers through."""

    def __init__(self, link: CoreLink, request_id: int, head: RequestHead, remote_ip: str) -> None:
        self.link = link
        self.request_id = request_id
        self.head = head
        self.remote_ip = remote_ip
        self.front = link.front  # the core's own front: the Date header, draining, the 413 wording
        self.exchange: Exchange | None = None
        self.read = False
        self.body_bytes = 0
        self.body_limit = link.front.settings.max_body_bytes
        self.full: asyncio.Future[None] | None = None  # while the client's socket is full (FULL .. ROOM)

    # --- what an exchange calls (HttpConnection's interface)

    def set_max_body_size(self, max_bytes: int) -> None:
        self.body_limit = max_bytes

    def hold(self, owner: object) -> None:
        self.link.send(self.request_id, relay.HOLD)

    def release(self, owner: object) -> None:
        self.link.send(self.request_id, relay.RELEASE)

    def closes_after(self, exchange: Exchange) -> bool:
        """What the core knows; the front adds `Connection: close` when it closes for its own reasons."""
        return not self.read or not self.head.keep_alive or self.front.draining or exchange is not self.exchange

    def write(self, data: bytes) -> asyncio.Future[None]:
        if self.exchange is not None:
            self.link.send(self.request_id, relay.WRITE, data)
        return self.writable()

    def writable(self) -> asyncio.Future[None]:
        """Done unless the front said the client's socket is full (a streamed answer waits)."""
        return self.full if self.full is not None else written(self.link.loop)

    def room(self) -> None:
        full, self.full = self.full, None
        if full is not None and not full.done():
            full.set_result(None)

    def respond(
        self,
        exchange: Exchange,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        head_only: bool = False,
    ) -> bool:
        if exchange is not self.exchange:
            return False
        close = self.closes_after(exchange)
        head = json_head(status, len(body), headers, connection_header(close, self.head.version), self.front.date)
        self.link.send(self.request_id, relay.ANSWER, b"\1" if close else b"\0", head, b"" if head_only else body)
        self._forget()
        return True

    def finished(self, exchange: Exchange, close: bool) -> None:
        if exchange is self.exchange:
            self.link.send(self.request_id, relay.FINISH, b"\1" if close else b"")
            self._forget()

    def lose(self, exchange: Exchange) -> None:
        if exchange is self.exchange:
            self.link.send(self.request_id, relay.LOSE)
            self._forget()

    # --- what the front relays

    def body(self, chunk: bytes) -> None:
        self.body_bytes += len(chunk)
        if self.body_bytes <= self.body_limit:
            assert self.exchange is not None
            self.exchange.body(chunk)
            return
        exchange = self.exchange
        assert exchange is not None
        exchange.lost()  # as on a direct connection: the request is refused, its exchange hears no more
        refused: ApiError = self.front.body_too_large(self.body_limit)
        body = refused.body()
        self.link.send(
            self.request_id,
            relay.WRITE,
            json_head(refused.status, len(body), refused.headers, connection_header(True, "HTTP/1.1"), self.front.date)
            + body,
        )
        self.finished(exchange, True)

    def complete(self) -> None:
        self.read = True
        assert self.exchange is not None
        self.exchange.complete()

    def _forget(self) -> None:
        self.room()  # nothing waits for a client that is gone
        self.exchange = None
        self.link.requests.pop(self.request_id, None)


class CoreLink(relay.FrameLink):
    """The core's end of one front's link."""

    def __init__(self, router: Router, front: Front) -> None:
        super().__init__()
        self.router = router
        self.front = front
        self.loop = asyncio.get_running_loop()
        self.requests: dict[int, RelayedRequest] = {}
        self.listening: asyncio.Future[None] = self.loop.create_future()  # the front accepts on the port

    def received(self, request_id: int, kind: int, payload: bytes) -> None:
        if kind == relay.LISTENING:
            self.listening.set_result(None)
            return
        if kind == relay.REQUEST:
            method, url, version, headers, keep_alive, remote_ip, body = marshal.loads(payload)
            request = self._start(request_id, RequestHead(method, url, version, headers, keep_alive), remote_ip)
            if body and request.exchange is not None:
                request.body(body)
            if request.exchange is not None:
                request.complete()
            return
        if kind == relay.START:
            method, url, version, headers, keep_alive, remote_ip = marshal.loads(payload)
            self._start(request_id, RequestHead(method, url, version, headers, keep_alive), remote_ip)
            return
        found = self.requests.get(request_id)
        exchange = found.exchange if found is not None else None
        if found is None or exchange is None:
            return  # answered already: the rest of its request is dropped
        if kind == relay.BODY:
            found.body(payload)
        elif kind == relay.END:
            found.complete()
        elif kind == relay.EOF:
            exchange.eof()
        elif kind == relay.FULL:
            found.full = found.full or self.loop.create_future()
        elif kind == relay.ROOM:
            found.room()
        elif kind == relay.LOST:
            found._forget()
            exchange.lost()

    def _start(self, request_id: int, head: RequestHead, remote_ip: str) -> RelayedRequest:
        started = RelayedRequest(self, request_id, head, remote_ip)
        self.requests[request_id] = started
        started.exchange = self.router.exchange(started, head)  # type: ignore[arg-type]
        started.exchange.start()
        return started

    def connection_lost(self, exc: Exception | None) -> None:
        """The front is gone: its requests' clients are too (their calls finish, answers dropped)."""
        if not self.listening.done():
            self.listening.set_exception(ConnectionError("the front process exited before it listened"))
        for request in list(self.requests.values()):
            exchange = request.exchange
            request._forget()
            if exchange is not None:
                exchange.lost()


class FrontProcesses:
    """The front processes of one node: spawned, respawned when they die, drained at the end."""

    def __init__(self, count: int, host: str, port: int, router: Router, front: Front) -> None:
        self.count = count
        self.host = host
        self.port = port
        self.router = router
        self.front = front
        self.processes: list[asyncio.subprocess.Process] = []
        self.stopping = False
        self._watchers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for _ in range(self.count):
            await self._spawn()

    async def drain(self, timeout: float) -> None:
        """SIGTERM to every front; wait for them to finish their answers (up to `timeout` s)."""
        self.stopping = True
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        waiting = [asyncio.ensure_future(process.wait()) for process in self.processes]
        if not waiting:
            return
        _, late = await asyncio.wait(waiting, timeout=timeout)
        for process in self.processes:
            if process.returncode is None:
                log.warning("front process %d still busy after %g s of draining: killed", process.pid, timeout)
                process.kill()
        if late:
            await asyncio.wait(late)

    async def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        core_end, front_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        settings = dataclasses.asdict(self.front.settings)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "apinode.node.relay_front",
                json.dumps({"core": front_end.fileno(), "host": self.host, "port": self.port, "settings": settings}),
                pass_fds=(front_end.fileno(),),
            )
        finally:
            front_end.close()
        _, link = await loop.create_unix_connection(lambda: CoreLink(self.router, self.front), sock=core_end)
        self.processes.append(process)
        watcher = asyncio.ensure_future(self._watch(process))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        try:  # so that a node said ready accepts in every process
            await asyncio.wait_for(link.listening, FRONT_START_TIMEOUT)
        except (ConnectionError, asyncio.TimeoutError):
            if process.returncode is None:
                process.kill()  # hung: its watcher starts another
            raise FrontStartFailed(f"front process {process.pid} did not listen on port {self.port}") from None

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if self.stopping:
            return
        self.processes.remove(process)
        log.error("front process %d exited (code %s) while the node serves: starting another", process.pid, code)
        await asyncio.sleep(RESPAWN_PAUSE)
        if not self.stopping:
            try:
                await self._spawn()
            except FrontStartFailed as failed:
                log.error("%s", failed)  # its own watcher tries again
