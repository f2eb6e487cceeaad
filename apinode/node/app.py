"""The node's Tornado application: its routes, and the server's lifecycle around it.

Start-up: lock the data directory (one node per directory), restore its services, listen.
Shutdown (SIGTERM, Ctrl-C): stop accepting connections, let every queued and running request
finish (bounded by the drain timeout), stop every pipeline, write the query log out, return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator

import tornado.netutil
import tornado.web

from ..packaging.codeenvs import CodeEnvCache
from .admin_check import check_route
from .admin_handlers import admin_routes
from .front import Front, FrontSettings
from .handlers import IsAliveHandler, NotFoundHandler, OtherEndpointKindHandler, PrometheusHandler
from .keys import AdminKeys
from .metrics import PrometheusMetrics
from .openapi_handlers import openapi_routes
from .querylog import QueryLog
from .relay_core import FrontProcesses
from .run_route import NodeRouter, log_access
from .service_manager import ServiceManager
from .store import DataDir

log = logging.getLogger("apinode.node")

DEFAULT_MAX_BODY_MB = 16


def make_router(
    services: ServiceManager, keys: AdminKeys, query_log: QueryLog, max_body_bytes: int = DEFAULT_MAX_BODY_MB << 20
) -> NodeRouter:
    """The run URL's fast path (run_route.py) in front of the application's handlers."""
    app = tornado.web.Application(
        [
            (r"/isAlive", IsAliveHandler),
            (OtherEndpointKindHandler.PATH, OtherEndpointKindHandler),
            (r"/metrics", PrometheusHandler, {"metrics": PrometheusMetrics(services), "keys": keys}),
            *openapi_routes(services),
            check_route(services, keys),  # before admin_routes, whose catch-all comes last
            *admin_routes(services, keys),
        ],
        default_handler_class=NotFoundHandler,
        log_function=log_request,
    )
    return NodeRouter(app, services, query_log, max_body_bytes)


def log_request(handler: tornado.web.RequestHandler) -> None:
    request = handler.request
    log_access(handler.get_status(), request.method, request.uri, request.remote_ip, 1000.0 * request.request_time())


async def serve(
    store: DataDir,
    code_envs: CodeEnvCache,
    host: str,
    port: int,
    *,
    front_settings: FrontSettings,
    query_log: bool = True,
    on_listening: Callable[[int, ServiceManager], None],
    drain_timeout: float = 30.0,
    fronts: int = 1,
) -> None:
    """Serve the data directory until SIGTERM or SIGINT, then drain and stop.

    `on_listening(port, services)` once the services are loaded and the port is bound.
    With `fronts` > 1, this process accepts too and spawns `fronts - 1` front processes on the
    same listening socket, which relay their requests here (relay_core.py).
    Draining: every front stops accepting and answers what it has with `Connection: close` while
    the pools still run; then the pools drain what is left and stop.
    """
    with store.locked(), _stop_signals() as stop:
        queries = QueryLog(store.query_logs, enabled=query_log)
        services = ServiceManager(store, code_envs, on_delete=queries.forget)
        keys = AdminKeys(store.admin_keys)
        router = make_router(services, keys, queries, front_settings.max_body_bytes)
        front = Front(router, front_settings)
        processes: FrontProcesses | None = None
        loop = asyncio.get_running_loop()
        try:
            queries.start()
            await services.restore()
            keys_problem = keys.problem()
            if keys_problem is not None:
                log.error("the admin API refuses every call until the key file is repaired: %s", keys_problem)
            # with fronts, each process listens on the port (SO_REUSEPORT): the kernel spreads connections evenly
            sockets = tornado.netutil.bind_sockets(port, host, reuse_port=fronts > 1)
            front.serve(sockets)
            if fronts > 1:
                processes = FrontProcesses(fronts - 1, host, sockets[0].getsockname()[1], router, front)
                await processes.start()
            on_listening(sockets[0].getsockname()[1], services)
            await stop.wait()
            log.info("stopping: draining requests in flight")
        finally:
            deadline = loop.time() + drain_timeout
            if processes is None:
                await front.drain(drain_timeout)
            else:
                await asyncio.gather(front.drain(drain_timeout), processes.drain(drain_timeout))
            await services.close(max(0.0, deadline - loop.time()))  # after a failure too: no pipeline outlives the node
            front.close()
            queries.close()
    log.info("stopped")


@contextlib.contextmanager
def _stop_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGTERM or SIGINT; the handlers stay until shutdown is over, so a second
    signal during the drain does not kill the node halfway."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        yield stop
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
