"""The run URL, `POST /public/api/v1/<service>/<endpoint>/run`: the node's hot path.

The node's throughput is its event loop's CPU, and a tornado RequestHandler costs about a third
of a bare Tornado app's CPU per request (building the handler and its default headers, the
_execute coroutine, flush and finish bookkeeping). So this one URL talks to the HTTP connection
directly, as an `HTTPMessageDelegate`: it collects the body as it streams in, hands it to the
endpoint unparsed, and writes back a status, a few headers and the endpoint's bytes. Every other
URL goes on to the tornado Application behind the same router, with its handlers.

Errors have the shape of every other error (`ApiError.body`), and a request that is answered
counts in its endpoint's metrics and its service's query log.

Concurrency: one `RunCall` per request, on the event loop; tornado calls `headers_received`,
`data_received` and `finish` in order, and `finish` starts the call as a task. A client that
goes away does not cancel its request: the pipeline finishes it and the answer is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from http import HTTPStatus
from urllib.parse import unquote

import tornado.httputil
import tornado.iostream
import tornado.routing
import tornado.web
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine, ResponseStartLine

from .errors import ApiError, MethodNotAllowed
from .handlers import INTERNAL_ERROR, body_too_large, limit_body
from .querylog import QueryLog
from .service_manager import ServiceManager

RUN_PATH = re.compile(r"/public/api/v1/([^/]+)/([^/]+)/run")
SLASHES = re.compile(r"//+")
BODY_LIMIT_OPTION = "--max-body-mb"
log = logging.getLogger("apinode.http")
access_log = logging.getLogger("tornado.access")
_KNOWN_STATUSES = {status.value for status in HTTPStatus}


class NodeRouter(tornado.routing.Router):
    """Run URLs to a `RunCall`; everything else to the application."""

    def __init__(
        self, app: tornado.web.Application, services: ServiceManager, query_log: QueryLog, max_body_bytes: int
    ) -> None:
        self.app = app
        self.services = services
        self.query_log = query_log
        self.max_body_bytes = max_body_bytes
        self.running: set[asyncio.Task[None]] = set()

    def find_handler(self, request: HTTPServerRequest, **kwargs: object) -> tornado.httputil.HTTPMessageDelegate:
        if "//" in request.path:  # a client given a base URL ending in "/" asks for "//public/..."
            request.path = SLASHES.sub("/", request.path)
        match = RUN_PATH.fullmatch(request.path)
        if match is None:
            return self.app.find_handler(request, **kwargs)
        return RunCall(self, request, unquote(match.group(1)), unquote(match.group(2)))


class RunCall(tornado.httputil.HTTPMessageDelegate):
    def __init__(self, router: NodeRouter, request: HTTPServerRequest, service_id: str, endpoint_id: str) -> None:
        self.router = router
        self.request = request
        self.service_id = service_id
        self.endpoint_id = endpoint_id
        self.chunks: list[bytes] | None = []  # None once refused for its size
        self.size = 0
        self.received = time.perf_counter()

    def headers_received(self, start_line: RequestStartLine | ResponseStartLine, headers: HTTPHeaders) -> None:
        try:
            if self.request.method != "POST":
                raise MethodNotAllowed(f"{self.request.method} is not allowed here: call an endpoint with POST")
            limit_body(
                self.request,
                self.router.max_body_bytes,
                BODY_LIMIT_OPTION,
                connection_limit=2 * self.router.max_body_bytes,
            )
        except ApiError as refused:  # answered before the body is read
            self._answer(refused.status, refused.body(), refused.headers)

    def data_received(self, chunk: bytes) -> None:
        """Collect the body; a chunked one (its size not declared) is counted as it comes."""
        self.size += len(chunk)
        if self.chunks is not None and self.size <= self.router.max_body_bytes:
            self.chunks.append(chunk)
        elif self.chunks is not None:
            self.chunks = None  # the rest is read and dropped by the connection
            refused = body_too_large(
                f"over {self.router.max_body_bytes}", self.router.max_body_bytes, BODY_LIMIT_OPTION
            )
            self._answer(refused.status, refused.body(), refused.headers)

    def finish(self) -> None:
        if self.chunks is not None:  # else already answered 413
            task = asyncio.ensure_future(self._run())
            self.router.running.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self.router.running.discard)

    async def _run(self) -> None:
        assert self.chunks is not None
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        service = generation = endpoint = None
        try:
            service = self.router.services.get(self.service_id)
            generation = service.pick(body, self.request.headers.get("Authorization"))
            endpoint = generation.endpoint(self.endpoint_id)
            status, answer = await endpoint.run(body, self.received)
            self._answer(status, answer)
        except ApiError as refused:
            if refused.status >= 500:
                log.warning("%s: %s", self.request.path, refused.message)
            status = refused.status
            self._answer(status, refused.body(), refused.headers)
        except Exception:
            log.exception("%s failed", self.request.path)
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

    def _answer(self, status: int, body: bytes, extra_headers: dict[str, str] | None = None) -> None:
        headers = HTTPHeaders(
            {
                "Content-Type": "application/json",
                "Content-Length": str(len(body)),
                "Date": tornado.httputil.format_timestamp(time.time()),
                "Server": "apinode",
            }
        )
        if extra_headers:
            headers.update(extra_headers)
        connection = self.request.connection
        assert connection is not None
        if self.request.method == "HEAD":
            body = b""  # the headers say what a GET would get; HTTP forbids the body itself
        try:
            connection.write_headers(
                ResponseStartLine("HTTP/1.1", status, HTTPStatus(status).phrase if status in _KNOWN_STATUSES else ""),
                headers,
                body,
            )
            connection.finish()
        except tornado.iostream.StreamClosedError:
            return  # the client went away
        log_access(
            status,
            self.request.method,
            self.request.uri,
            self.request.remote_ip,
            1000 * (time.perf_counter() - self.received),
        )


def log_access(status: int, method: str | None, uri: str | None, remote_ip: str | None, ms: float) -> None:
    """Tornado's access log line, built only when it will be written (not on every call)."""
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if access_log.isEnabledFor(level):
        access_log.log(level, "%d %s %s (%s) %.2fms", status, method, uri, remote_ip, ms)
