"""POST /admin/api/services/<id>/generations/<gen>/check: does each endpoint's code load?

The dev loop asks this (the API designer, `%api_dev`). A switch refuses a generation whose code
does not load and names the first endpoint that failed, with the traceback in the node's log
only. This route loads the generation apart from traffic and tolerantly, as a node does at
start-up, so that every endpoint is tried; it answers, per endpoint, whether its code loaded,
with the error and traceback when it did not, then stops what it started. Nothing changes on
the node: no state is written, no request is routed to what it loads.

The traceback is the author's own code's (they hold an admin key); callers of the public API
never see one.

Concurrency: on the event loop, like the service manager; it takes no service lock, since the
generation it loads is its own, never shared with traffic or with a switch.
"""

from __future__ import annotations

from typing import Any

from .admin_handlers import AdminHandler
from .errors import EndpointLoadFailed
from .keys import AdminKeys
from .service_manager import ServiceManager


class CheckHandler(AdminHandler):
    async def post(self, service_id: str, generation: str) -> None:
        endpoints = await check_generation(self.services, service_id, generation)
        self.write_json({"serviceId": service_id, "generation": generation, "endpoints": endpoints})


def check_route(services: ServiceManager, keys: AdminKeys) -> tuple[str, type, dict[str, Any]]:
    """The route, for the node's list (ahead of the admin API's catch-all)."""
    return (
        r"/admin/api/services/([^/]+)/generations/([^/]+)/check",
        CheckHandler,
        {"services": services, "keys": keys},
    )


async def check_generation(services: ServiceManager, service_id: str, generation: str) -> dict[str, Any]:
    """{endpoint id: {"loaded", "error", "traceback"}} for an imported generation of the service."""
    service = services.admin_get(service_id)
    services.check_imported(service, generation)
    loaded = await services.load(service, generation, strict=False)
    try:
        return {endpoint_id: _status(endpoint.failure) for endpoint_id, endpoint in loaded.endpoints.items()}
    finally:
        await loaded.close(0)


def _status(failure: EndpointLoadFailed | None) -> dict[str, Any]:
    if failure is None:
        return {"loaded": True, "error": None, "traceback": None}
    return {"loaded": False, "error": failure.message, "traceback": failure.traceback or None}
