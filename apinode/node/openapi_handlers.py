"""`GET /public/api/v1/<service>/openapi.json` and `/docs`: a service describes itself.

Both follow the service's key rules, as its run URLs do (a private service answers 401 without
a key). The document is assembled from the generation that would answer a call and its
endpoints' descriptions (apinode.node.openapi). The docs page is Swagger UI, served from the
`swagger-ui-bundle` package: a node may have no internet, so nothing comes from a CDN. Its
assets are the same for every service and need no key.
"""

from __future__ import annotations

import html
from typing import Any

import swagger_ui_bundle
import tornado.web

from .handlers import JsonHandler
from .openapi import service_document
from .service_manager import ServiceManager

SERVICE = r"/public/api/v1/([^/]+)"
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png")

DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="stylesheet" href="docs/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true}});
</script>
</body>
</html>
"""


class _ServiceHandler(JsonHandler):
    def initialize(self, services: ServiceManager) -> None:
        self.services = services

    def document(self, service_id: str) -> dict[str, Any]:
        """The service's document, if the caller may call it (401, 404 as its run URLs)."""
        service = self.services.get(service_id)
        generation = service.pick(b"", self.request.headers.get("Authorization"))
        descriptions = {endpoint_id: endpoint.description for endpoint_id, endpoint in generation.endpoints.items()}
        return service_document(generation.definition, descriptions, generation.id)


class OpenApiHandler(_ServiceHandler):
    def get(self, service_id: str) -> None:
        self.write_json(self.document(service_id))


class DocsHandler(_ServiceHandler):
    def get(self, service_id: str) -> None:
        self.document(service_id)  # the key rules, and a 404 for a service the node does not serve
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(DOCS_PAGE.format(title=html.escape(f"{service_id}: API documentation")))


def openapi_routes(services: ServiceManager) -> list[tuple[Any, ...]]:
    assets = "|".join(asset.replace(".", r"\.") for asset in ASSETS)
    return [
        (rf"{SERVICE}/openapi\.json", OpenApiHandler, {"services": services}),
        (rf"{SERVICE}/docs", DocsHandler, {"services": services}),
        (rf"{SERVICE}/docs/({assets})", _AssetHandler, {"path": swagger_ui_bundle.swagger_ui_path}),
    ]


class _AssetHandler(tornado.web.StaticFileHandler):
    """Swagger UI's files; the URL's first group (the service) does not matter."""

    def get(self, service_id: str, asset: str, include_body: bool = True) -> Any:  # type: ignore[override]
        return super().get(asset, include_body)
