"""The extension's HTTP handlers, behind Jupyter's own authentication and authorization.

Each method parses the request and awaits the designer (apinode.jupyter_ext.designer), which
runs what blocks in worker threads; `call` turns the errors a user can act on into HTTP errors
with their message (400 for a bad notebook or request, 404, 403, 409 for playing a service not
deployed yet, 502 when the dev server fails), so the page and the panel show one line, not a
traceback. The authorization resource is "apinode", so an Authorizer can grant or refuse the dev loop as a whole.

The proxy passes `/apinode/dev/<path>` on to the dev server's own URL (so the browser reaches
the node through Jupyter's origin and login), status and body untouched.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.httpclient import AsyncHTTPClient
from tornado.iostream import StreamClosedError

from ..client import NodeError
from ..packaging.bundles import BundleError
from ..packaging.definitions import DefinitionError
from ..packaging.magic_syntax import MagicUsageError
from .designer import Designer, DesignerError
from .devclient import NotDeployed

AUTH_RESOURCE = "apinode"
PROXY_TIMEOUT = 300.0
"""Seconds the proxy waits for the dev server. A pool bounds only a request's wait in its queue
(its `timeout`), not how long a call runs, so this bounds a call that never returns."""
STATIC = Path(__file__).parent / "static"
SSE = "text/event-stream"
_PASSED_HEADERS = ("Retry-After", "WWW-Authenticate", "Allow")
_T = TypeVar("_T")


class ApiNodeHandler(ExtensionHandlerMixin, APIHandler):
    """JSON in, JSON out; the designer's errors as HTTP errors with their message."""

    auth_resource = AUTH_RESOURCE

    @property
    def designer(self) -> Designer:
        return self.extensionapp.designer  # type: ignore[attr-defined,no-any-return]

    async def call(self, work: Awaitable[_T]) -> _T:
        """The result of `work`; the errors a user can act on become HTTP errors."""
        try:
            return await work
        except DesignerError as error:
            raise web.HTTPError(error.status, error.message) from None
        except (DefinitionError, MagicUsageError, BundleError) as error:
            raise web.HTTPError(400, str(error)) from None
        except NotDeployed as error:  # the service's state, not the dev server's failure
            raise web.HTTPError(409, str(error)) from None
        except NodeError as error:  # a DevServerError too
            raise web.HTTPError(502, f"dev server: {error}") from None

    def body(self, *names: str) -> list[str]:
        """The named string fields of the JSON body, in order (400 when one is missing)."""
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the request body is not JSON") from None
        values = [body.get(name) if isinstance(body, dict) else None for name in names]
        strings = [value for value in values if isinstance(value, str) and value]
        if len(strings) != len(names):
            raise web.HTTPError(400, f"expected a JSON body with {', '.join(names)} (strings)")
        return strings


class EndpointsHandler(ApiNodeHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish(await self.call(self.designer.endpoints(self.get_query_argument("path", ""))))


class DeployHandler(ApiNodeHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        self.finish(await self.call(self.designer.deploy(*self.body("path"))))


class PlayHandler(ApiNodeHandler):
    """The results of an endpoint's test queries, played on the dev server: JSON; or, asked with
    `Accept: text/event-stream`, server-sent events as the play goes: `item` ({"query", "item"})
    for each item of a generator as the dev server streams it, then `played` (the same JSON)
    or `error` ({"message"}). The page shows a streamed result as it arrives."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        path, service, endpoint = self.body("path", "service", "endpoint")
        if SSE not in self.request.headers.get("Accept", ""):
            self.finish(await self.call(self.designer.play(path, service, endpoint)))
            return
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()

        def on_item(query: str, item: Any) -> None:  # on the thread that plays
            loop.call_soon_threadsafe(items.put_nowait, (query, item))

        playing = asyncio.ensure_future(self.call(self.designer.play(path, service, endpoint, on_item)))
        playing.add_done_callback(lambda _: items.put_nowait(None))  # after every item: FIFO
        self.set_header("Content-Type", SSE)
        self.set_header("Cache-Control", "no-cache")
        try:
            while (next_item := await items.get()) is not None:
                query, item = next_item
                await self.event("item", {"query": query, "item": item})
            try:
                await self.event("played", playing.result())
            except web.HTTPError as error:
                await self.event("error", {"message": error.log_message})
        except StreamClosedError:  # the page went away; the play ends in its thread
            return
        self.finish(set_content_type=SSE)

    async def event(self, name: str, data: Any) -> None:
        self.write(f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n")
        await self.flush()


class StartHandler(ApiNodeHandler):
    """POST /apinode/api/dev/start: start the dev server if needed (kernels ask this)."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        info = await self.call(asyncio.to_thread(self.designer.dev_server.ensure))
        self.finish({"url": info.url, "pid": info.pid})


class BundleHandler(ApiNodeHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        name, content = await self.call(
            self.designer.bundle(self.get_query_argument("path", ""), self.get_query_argument("service", ""))
        )
        self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        self.finish(content, set_content_type="application/zip")


class DevProxyHandler(ApiNodeHandler):
    """/apinode/dev/<path> -> <dev server>/<path>: method, query, body and status passed through."""

    @web.authenticated
    @authorized
    async def get(self, path: str) -> None:
        await self.forward(path)

    @web.authenticated
    @authorized
    async def post(self, path: str) -> None:
        await self.forward(path)

    async def forward(self, path: str) -> None:
        info = await self.call(asyncio.to_thread(self.designer.dev_server.ensure))
        query = f"?{self.request.query}" if self.request.query else ""
        response = await AsyncHTTPClient().fetch(
            f"{info.url}/{urllib.parse.quote(path)}{query}",
            method=self.request.method,
            body=self.request.body if self.request.method == "POST" else None,
            headers={"Content-Type": self.request.headers.get("Content-Type", "application/json")},
            request_timeout=PROXY_TIMEOUT,
            raise_error=False,
            follow_redirects=False,
        )
        if response.code == 599:  # tornado's "no HTTP answer at all"
            raise web.HTTPError(502, f"dev server: no answer from {info.url}: {response.error}")
        self.set_status(response.code, response.reason)
        for name in _PASSED_HEADERS:
            if name in response.headers:
                self.set_header(name, response.headers[name])
        self.finish(response.body, set_content_type=response.headers.get("Content-Type", "application/json"))


class DesignerPageHandler(ExtensionHandlerMixin, JupyterHandler):
    """GET /apinode/designer: the API designer, a static page that calls the handlers above."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    def get(self) -> None:
        self.xsrf_token  # noqa: B018 -- sets the _xsrf cookie that the page's POSTs send back
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish((STATIC / "designer.html").read_bytes())


default_handlers = [
    (r"/apinode/api/endpoints", EndpointsHandler),
    (r"/apinode/api/dev/deploy", DeployHandler),
    (r"/apinode/api/dev/play", PlayHandler),
    (r"/apinode/api/dev/start", StartHandler),
    (r"/apinode/api/bundle", BundleHandler),
    (r"/apinode/dev/(.*)", DevProxyHandler),
    (r"/apinode/designer", DesignerPageHandler),
]
