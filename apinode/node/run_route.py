"""The run URL, `POST /public/api/v1/<service>/<endpoint>/run`: the node's hot path.

The node's throughput is its event loop's CPU, and tornado's HTTP/1 connection and
RequestHandler cost far more per request than the work of this URL (parsing in Python, a
timer per request, building a handler and its headers). So the run URL is served by the front's
own connection (http_connection.py, a C parser) as a `RunCall`: it collects the body as it
streams in, hands it to the endpoint unparsed, and writes back a status, a few headers and the
endpoint's bytes in one write. Every other URL goes to the tornado Application, through a
`TornadoExchange`, with its handlers.

Errors have the shape of every other error (`ApiError.body`), and a request that is answered
counts in its endpoint's metrics and its service's query log.

Concurrency: one `RunCall` per request, on the event loop; the connection calls `body` and
`complete` in order, and `complete` starts the call as a task. A refusal that needs no body
(405) waits for the request's end, so that the connection can stay open. A client that goes
away while its request waits in the queue takes it out of the queue; once a pipeline runs it,
the pipeline finishes it and the answer is dropped (stopping the pipeline would cost a new one,
and with `"start": "spawn"` an initialization, to save work already under way).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from urllib.parse import unquote

import tornado.web

from .errors import ApiError, MethodNotAllowed
from .handlers import BODY_LIMIT_OPTION, INTERNAL_ERROR, refuse_declared_body
from .http_connection import Exchange, HttpConnection, RequestHead
from .querylog import QueryLog
from .service_manager import ServiceManager
from .stream_answer import StreamAnswer, stream_format
from .tornado_exchange import SLASHES, TornadoExchange

CLIENT_GONE = 499
"""The status a request is counted with (metrics, query log) when its caller left the queue."""
RUN_PATH = re.compile(r"/public/api/v1/([^/]+)/([^/]+)/run")
log = logging.getLogger("apinode.http")
access_log = logging.getLogger("tornado.access")


class NodeRouter:
    """Run URLs to a `RunCall`; everything else to the tornado application."""

    def __init__(
        self, app: tornado.web.Application, services: ServiceManager, query_log: QueryLog, max_body_bytes: int
    ) -> None:
        self.app = app
        self.services = services
        self.query_log = query_log
        self.max_body_bytes = max_body_bytes
        self.running: set[asyncio.Task[None]] = set()

    def exchange(self, connection: HttpConnection, head: RequestHead) -> Exchange:
        path = head.url.partition("?")[0]
        if "//" in path:  # a client given a base URL ending in "/" asks for "//public/..."
            path = SLASHES.sub("/", path)
        match = RUN_PATH.fullmatch(path)
        if match is None:
            return TornadoExchange(connection, head, self.app)
        return RunCall(self, connection, head, unquote(match.group(1)), unquote(match.group(2)))


class RunCall:
    __slots__ = (
        "chunks",
        "connection",
        "endpoint_id",
        "head",
        "received",
        "refusal",
        "router",
        "running",
        "service_id",
        "size",
        "stream",
        "task",
    )

    def __init__(
        self, router: NodeRouter, connection: HttpConnection, head: RequestHead, service_id: str, endpoint_id: str
    ) -> None:
        self.router = router
        self.connection = connection
        self.head = head
        self.service_id = service_id
        self.endpoint_id = endpoint_id
        self.chunks: list[bytes] | None = []  # None once answered before the body was read
        self.size = 0
        self.received = time.perf_counter()
        self.refusal: ApiError | None = None  # answered once the request is read
        self.task: asyncio.Task[None] | None = None
        self.running = False  # a pipeline runs it: past the point where leaving costs nothing
        self.stream: StreamAnswer | None = None  # when the caller accepts a streamed answer

    def start(self) -> None:
        head, max_bytes = self.head, self.router.max_body_bytes
        # the connection reads on past the limit, so that this call sees the overflow and answers 413
        self.connection.set_max_body_size(2 * max_bytes)
        if head.method != "POST":
            self.refusal = MethodNotAllowed(f"{head.method} is not allowed here: call an endpoint with POST")
            return
        try:
            declared = head.header(b"content-length")
            refuse_declared_body(declared.decode() if declared else None, max_bytes, BODY_LIMIT_OPTION)
        except ApiError as refused:  # answered before the body is read
            self._refuse(refused)

    def body(self, chunk: bytes) -> None:
        """Collect the body; a chunked one (its size not declared) is counted as it comes."""
        if self.chunks is None or self.refusal is not None:
            return
        self.size += len(chunk)
        if self.size <= self.router.max_body_bytes:
            self.chunks.append(chunk)
        else:
            self._refuse(self.connection.front.body_too_large(self.router.max_body_bytes))

    def complete(self) -> None:
        if self.refusal is not None:
            self._refuse(self.refusal)
        elif self.chunks is not None:
            task = self.task = self.connection.front.loop.create_task(self._run())
            self.router.running.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self.router.running.discard)

    def lost(self) -> None:
        """The client went away: a request still queued leaves the queue; a running call goes on
        (the pipeline finishes it) and its answer is dropped; a stream stops at its next item
        (the pipeline closes the generator)."""
        if self.stream is not None:
            self.stream.gone = True
        if self.task is not None and not self.running:
            self.task.cancel()

    def eof(self) -> None:
        """As nginx does, a client that closed its side after its request is taken as gone: its
        request leaves the queue. Checked once the call had its first step, so that a request
        a free pipeline took at once is answered (`printf ... | nc` reads its answer)."""
        asyncio.get_running_loop().call_soon(self.lost)

    def _acquired(self) -> None:
        self.running = True

    def _refuse(self, refused: ApiError) -> None:
        self.chunks = None
        self._answer(refused.status, refused.body(), refused.headers)

    async def _run(self) -> None:
        assert self.chunks is not None
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        service = generation = endpoint = None
        try:
            service = self.router.services.get(self.service_id)
            authorization = self.head.header(b"authorization")
            generation = service.pick(body, authorization.decode("latin-1") if authorization else None)
            endpoint = generation.endpoint(self.endpoint_id)
            stream = stream_format(self.head)
            if stream is not None:
                self.stream = StreamAnswer(self.connection, self, stream)
            status, answer, ends_stream = await endpoint.run(body, self.received, self.stream, self._acquired)
            self._answer(status, answer, ends_stream=ends_stream)
        except asyncio.CancelledError:  # its caller went away while it was queued
            self.connection.lose(self)
            status = CLIENT_GONE  # counted, as nginx logs it: a storm of callers giving up shows
        except ApiError as refused:
            if refused.status >= 500:
                log.warning("%s: %s", self.head.url, refused.message)
            status = refused.status
            self._answer(status, refused.body(), refused.headers)
        except Exception:
            log.exception("%s failed", self.head.url)
            status = INTERNAL_ERROR.status
            self._answer(status, INTERNAL_ERROR.body())
        if service is None:
            return
        seconds = time.perf_counter() - self.received
        if endpoint is not None:
            endpoint.stats.record(status, seconds)
        logs_parameters = endpoint is not None and generation is not None and generation.definition.log_query_parameters
        self.router.query_log.record(
            service.id,
            self.endpoint_id,
            generation.id if generation else None,
            status,
            seconds * 1000,
            body if logs_parameters else None,
        )

    def _answer(
        self, status: int, body: bytes, extra_headers: dict[str, str] | None = None, ends_stream: bool = False
    ) -> None:
        head = self.head
        if self.stream is not None and self.stream.end(body, ends_stream):
            answered = not self.stream.gone
        else:
            answered = self.connection.respond(self, status, body, extra_headers, head.method == "HEAD")
        if answered:
            log_access(
                status, head.method, head.url, self.connection.remote_ip, 1000 * (time.perf_counter() - self.received)
            )


def log_access(status: int, method: str | None, uri: str | None, remote_ip: str | None, ms: float) -> None:
    """Tornado's access log line, built only when it will be written (not on every call)."""
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if access_log.isEnabledFor(level):
        access_log.log(level, "%d %s %s (%s) %.2fms", status, method, uri, remote_ip, ms)
