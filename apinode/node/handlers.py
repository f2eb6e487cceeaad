"""HTTP handlers: parse the URL, check the key, hand off, write JSON.

Handlers take their collaborators in `initialize` and raise ApiError; one `write_error` shapes
every error body, so a client never sees HTML or a traceback.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import tornado.web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..runtime.errors import error_body
from .errors import ApiError, BodyTooLarge, MethodNotAllowed, NotFound
from .endpoint import Endpoint
from .metrics import PrometheusMetrics
from .querylog import QueryLog
from .registry import ServiceRegistry
from .services import LoadedGeneration, Service

log = logging.getLogger("apinode.http")


class JsonHandler(tornado.web.RequestHandler):
    """Every error as `{"errorType", "message", "detailedMessage"}`."""

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            for name, value in exc.headers.items():
                self.set_header(name, value)
            body = error_body(exc.error_type, exc.message, exc.detailed_message)
        elif isinstance(exc, tornado.web.HTTPError) and status_code < 500:
            body = error_body(self._reason.replace(" ", ""), exc.log_message or self._reason)
        else:
            body = error_body("InternalError", "the node failed to handle the request; see its log")
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps(body))

    def log_exception(self, typ, value, tb) -> None:  # type: ignore[no-untyped-def]
        if isinstance(value, ApiError):
            if value.status >= 500:
                log.warning("%s %s: %s", self.request.method, self.request.path, value.message)
        else:
            super().log_exception(typ, value, tb)

    def limit_body(self, max_bytes: int, how_to_raise: str) -> None:
        """Accept a streamed body up to `max_bytes`; refuse a larger declared one at once (413)."""
        declared = self.request.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise BodyTooLarge(
                f"the request body is {declared} bytes, over this node's limit of {max_bytes} bytes ({how_to_raise})")
        self.request.connection.set_max_body_size(max_bytes)

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        super().send_error(exc.status if isinstance(exc, ApiError) else status_code, **kwargs)


class NotFoundHandler(JsonHandler):
    def prepare(self) -> None:
        raise NotFound(f"no such URL: {self.request.path}")


class IsAliveHandler(JsonHandler):
    def get(self) -> None:
        self.write_json({"alive": True})


@tornado.web.stream_request_body
class RunHandler(JsonHandler):
    """POST /public/api/v1/<service>/<endpoint>/run: the body goes to a pipeline unparsed.

    Once answered, the request counts in its endpoint's metrics and in its service's query log.
    """

    def initialize(self, services: ServiceRegistry, query_log: QueryLog, max_body_bytes: int) -> None:
        self.services = services
        self.query_log = query_log
        self.max_body_bytes = max_body_bytes
        self.chunks: list[bytes] = []
        self.service: Service | None = None
        self.generation: LoadedGeneration | None = None
        self.endpoint: Endpoint | None = None

    def prepare(self) -> None:
        self.received = time.perf_counter()
        if self.request.method != "POST":
            raise MethodNotAllowed(f"{self.request.method} is not allowed here: call an endpoint with POST")
        self.limit_body(self.max_body_bytes, "apinode serve --max-body-mb")

    def data_received(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    async def post(self, service_id: str, endpoint_id: str) -> None:
        self.service = service = self.services.get(service_id)
        self.body = body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.generation = generation = service.pick(body)
        generation.authorize(self.request.headers.get("Authorization"))
        self.endpoint = endpoint = generation.endpoint(endpoint_id)
        status, answer = await endpoint.run(body, self.received)
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(answer)

    def on_finish(self) -> None:
        service, generation, endpoint = self.service, self.generation, self.endpoint
        if service is None:
            return
        seconds = time.perf_counter() - self.received
        status = self.get_status()
        logs_body = endpoint is not None and generation is not None and generation.definition.log_query_parameters
        if endpoint is not None:
            endpoint.stats.record(status, seconds)
        self.query_log.record(service.id, self.path_args[1], generation.id if generation else None, status,
                              seconds * 1000, self.body if logs_body else None)


class PrometheusHandler(JsonHandler):
    """GET /metrics: the node's metrics in Prometheus' text format (no key: scrapers rarely have one)."""

    def initialize(self, metrics: PrometheusMetrics) -> None:
        self.metrics = metrics

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.metrics.text())
