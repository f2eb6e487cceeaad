"""HTTP handlers: parse the URL, check the key, hand off, write JSON.

Handlers take their collaborators in `initialize` and raise ApiError; one `write_error` shapes
every error body, so a client never sees HTML or a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import tornado.httputil
import tornado.web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..runtime.errors import error_body
from .errors import ApiError, BodyTooLarge, NotFound
from .keys import AdminKeys
from .metrics import PrometheusMetrics
from .services import basic_auth_user

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
            body = exc.body()
        elif isinstance(exc, tornado.web.HTTPError) and status_code < 500:
            body = orjson.dumps(error_body(self._reason.replace(" ", ""), exc.log_message or self._reason))
        else:
            body = INTERNAL_ERROR.body()
        self.set_header("Content-Type", "application/json")
        self.finish(body)

    def log_exception(self, typ, value, tb) -> None:  # type: ignore[no-untyped-def]
        if isinstance(value, ApiError):
            if value.status >= 500:
                log.warning("%s %s: %s", self.request.method, self.request.path, value.message)
        else:
            super().log_exception(typ, value, tb)

    def limit_body(self, max_bytes: int, how_to_raise: str) -> None:
        limit_body(self.request, max_bytes, how_to_raise)

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        super().send_error(exc.status if isinstance(exc, ApiError) else status_code, **kwargs)


BODY_LIMIT_OPTION = "--max-body-mb"  # how an operator raises the node's body limit
INTERNAL_ERROR = ApiError("the node failed to handle the request; see its log")


def limit_body(request: tornado.httputil.HTTPServerRequest, max_bytes: int, how_to_raise: str) -> None:
    """Accept a streamed body up to `max_bytes`; refuse a larger declared one at once (413)."""
    refuse_declared_body(request.headers.get("Content-Length"), max_bytes, how_to_raise)
    connection = request.connection
    assert connection is not None and hasattr(connection, "set_max_body_size")
    connection.set_max_body_size(max_bytes)


def refuse_declared_body(declared: str | None, max_bytes: int, how_to_raise: str) -> None:
    """BodyTooLarge (413) when the declared Content-Length is over `max_bytes`."""
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise body_too_large(declared, max_bytes, how_to_raise)


def body_too_large(size: int | str | None, max_bytes: int, how_to_raise: str) -> BodyTooLarge:
    """413; `size` is the declared size, None for a body found too large as it came in."""
    what = "the request body is" if size is None else f"the request body is {size} bytes,"
    return BodyTooLarge(f"{what} over this node's limit of {max_bytes} bytes ({how_to_raise})")


class NotFoundHandler(JsonHandler):
    def prepare(self) -> None:
        raise NotFound(f"no such URL: {self.request.path}")


class OtherEndpointKindHandler(JsonHandler):
    """The URLs dataikuapi's APINodeClient calls for the kinds of endpoint a DSS API node has
    and this one does not (`predict_record` posts to `.../<endpoint>/predict`): a 404 that says
    so, and what to call instead, rather than "no such URL"."""

    KINDS = {
        "predict": "prediction",
        "predict-multi": "prediction",
        "predict-effect": "prediction",
        "predict-effect-multi": "prediction",
        "forecast": "forecasting",
        "query": "SQL query",
        "lookup": "dataset lookup",
        "lookup-multi": "dataset lookup",
    }
    PATH = rf"/public/api/v1/([^/]+)/([^/]+)/({'|'.join(KINDS)})"

    def prepare(self) -> None:
        service, endpoint, action = self.path_args
        raise NotFound(
            f"{self.KINDS[action]} endpoints do not exist on this node ({action} of {service}/{endpoint}): "
            "it serves python-function endpoints only; call one with run_function "
            f"(APINodeClient(url, {service!r}).run_function({endpoint!r}, **params), "
            f"that is POST /public/api/v1/{service}/{endpoint}/run with the parameters as a JSON object)"
        )


class IsAliveHandler(JsonHandler):
    def get(self) -> None:
        self.write_json({"alive": True})


class PrometheusHandler(JsonHandler):
    """GET /metrics: the node's metrics in Prometheus' text format. No key is needed (scrapers
    rarely have one) for public services' series; private services' need an admin key, sent
    like the admin API's (Prometheus' `basic_auth` with the key as user name)."""

    def initialize(self, metrics: PrometheusMetrics, keys: AdminKeys) -> None:
        self.metrics = metrics
        self.keys = keys

    def get(self) -> None:
        authorization = basic_auth_user(self.request.headers.get("Authorization"))
        admin = self.keys.problem() is None and self.keys.check(authorization)  # damaged keys: nobody
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.metrics.text(include_private=admin))
