"""The node's Tornado application: its routes, and the server's lifecycle around it.

Shutdown (SIGTERM, Ctrl-C): stop accepting connections, let every queued and running request
finish (bounded by the drain timeout), stop every pipeline, then return.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Callable

import tornado.httpserver
import tornado.netutil
import tornado.web

from .handlers import IsAliveHandler, NotFoundHandler, RunHandler
from .services import ServiceRegistry

log = logging.getLogger("apinode.node")
access_log = logging.getLogger("tornado.access")

DEFAULT_MAX_BODY_MB = 16


def make_app(services: ServiceRegistry, max_body_bytes: int = DEFAULT_MAX_BODY_MB << 20) -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/isAlive", IsAliveHandler),
            (r"/public/api/v1/([^/]+)/([^/]+)/run", RunHandler,
             {"services": services, "max_body_bytes": max_body_bytes}),
        ],
        default_handler_class=NotFoundHandler,
        log_function=log_request,
    )


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log line, built only when it will be written (not on every call)."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if access_log.isEnabledFor(level):
        access_log.log(level, "%d %s %.2fms", status, handler._request_summary(),
                       1000.0 * handler.request.request_time())


async def serve(services: ServiceRegistry, host: str, port: int, *, max_body_bytes: int,
                on_listening: Callable[[int], None], drain_timeout: float = 30.0) -> None:
    """Serve until SIGTERM or SIGINT, then drain and stop. `on_listening(port)` once bound."""
    server = tornado.httpserver.HTTPServer(make_app(services, max_body_bytes), max_body_size=max_body_bytes)
    sockets = tornado.netutil.bind_sockets(port, host)
    server.add_sockets(sockets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        on_listening(sockets[0].getsockname()[1])
        await stop.wait()
        log.info("stopping: draining requests in flight")
        server.stop()
        await services.close(drain_timeout)
        await server.close_all_connections()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped")
