"""The admin API under /admin/api/, as `dataikuapi.APINodeAdminClient` and `apinode admin` call it.

Every call needs an admin key (HTTP Basic user name, empty password), checked in `prepare`
before anything else, a request body included. Handlers are thin: they read the URL and the
JSON body, call the service manager or the keys, and answer JSON; errors are ApiErrors, shaped by
JsonHandler.write_error like every other error of the node.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import orjson
import tornado.web

from ..packaging.bundles import DEFAULT_LIMITS
from .errors import AdminUnavailable, BadRequest, NotFound, Unauthorized
from .handlers import JsonHandler
from .jsonfile import DataDirError
from .keys import AdminKeys
from .metrics import metrics_json
from .service_manager import ServiceManager
from .services import basic_auth_user

MAX_BUNDLE_BYTES = DEFAULT_LIMITS.max_archive_bytes  # the largest bundle the upload route accepts


class AdminHandler(JsonHandler):
    """Checks the admin key; the base of every admin route (and the admin API's 404)."""

    def initialize(self, services: ServiceManager, keys: AdminKeys) -> None:
        self.services = services
        self.keys = keys

    def prepare(self) -> None:
        try:
            valid = self.keys.check(basic_auth_user(self.request.headers.get("Authorization")))
        except DataDirError:
            raise AdminUnavailable(
                "the admin API is unavailable: the node's admin key file is damaged; the operator must "
                "repair or remove it (the node's log names it), then make a key with `apinode admin-key-create`"
            ) from None
        if not valid:
            raise Unauthorized(
                "the admin API needs a valid admin key, sent as the HTTP Basic user name with an empty "
                "password; make one on the node's machine with `apinode admin-key-create --data-dir DIR`"
            )

    def json_body(self) -> dict[str, Any]:
        """The body as a JSON object; no body is `{}` (dataikuapi sends none for an empty dict)."""
        if not self.request.body.strip():
            return {}
        try:
            value = orjson.loads(self.request.body)
        except orjson.JSONDecodeError as error:
            raise BadRequest(f"the request body is not JSON: {error}") from None
        if not isinstance(value, dict):
            raise BadRequest("the request body must be a JSON object")
        return value

    def write_service(self, service_id: str) -> None:
        self.write_json(self.services.admin_get(service_id).describe())


class AdminNotFoundHandler(AdminHandler):
    def prepare(self) -> None:
        super().prepare()  # a caller without a key learns nothing, not even which URLs exist
        raise NotFound(f"no such admin URL: {self.request.path}")


class ServicesHandler(AdminHandler):
    def get(self) -> None:
        self.write_json(
            [self.services.services[service_id].describe() for service_id in sorted(self.services.services)]
        )

    def post(self) -> None:
        service_id = self.json_body().get("serviceId")
        if not isinstance(service_id, str):
            raise BadRequest('expected a body {"serviceId": "<id>"}')
        self.write_json(self.services.create(service_id).describe())


class ServiceHandler(AdminHandler):
    def get(self, service_id: str) -> None:
        self.write_service(service_id)

    async def delete(self, service_id: str) -> None:
        await self.services.delete(service_id)
        self.write_json({"ok": True, "deleted": service_id})


class GenerationsHandler(AdminHandler):
    def get(self, service_id: str) -> None:
        self.write_json({"generations": self.services.generations(service_id)})


class ImportHandler(AdminHandler):
    """POST .../generations/actions/importFromArchive?filePath=: a bundle on the node's machine."""

    async def post(self, service_id: str) -> None:
        path = self.get_query_argument("filePath", "")
        if not path:
            raise BadRequest(
                "importFromArchive needs ?filePath=<path of a bundle on the node's machine>; "
                "to send the bundle itself, POST it to .../generations/actions/upload"
            )
        self.write_json({"generation": await self.services.import_generation(service_id, Path(path))})


@tornado.web.stream_request_body
class UploadHandler(AdminHandler):
    """POST .../generations/actions/upload, the bundle zip as the body: streamed to a temporary
    file (the request body is never whole in memory), then imported like importFromArchive,
    which holds the bundle's checked entries in memory while it extracts them."""

    upload: Any = None

    def prepare(self) -> None:
        super().prepare()
        self.services.admin_get(self.path_args[0])  # refuse before a byte is received
        self.limit_body(MAX_BUNDLE_BYTES, "a bundle may be 1 GiB at most")
        self.upload = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in on_finish / on_connection_close)
            dir=self.services.store.tmp, prefix="upload-", suffix=".zip", delete=False
        )

    def data_received(self, chunk: bytes) -> None:
        self.upload.write(chunk)

    async def post(self, service_id: str) -> None:
        try:
            self.upload.close()
            generation = await self.services.import_generation(service_id, Path(self.upload.name))
        finally:
            self._discard()  # before answering, so that the caller finds the directory as it left it
        self.write_json({"generation": generation})

    def on_finish(self) -> None:  # answered without reaching post (another method, a refusal)
        self._discard()

    def on_connection_close(self) -> None:  # the client went away mid-upload
        self._discard()

    def _discard(self) -> None:
        if self.upload is not None:
            self.upload.close()
            Path(self.upload.name).unlink(missing_ok=True)
            self.upload = None


class PreloadHandler(AdminHandler):
    async def post(self, service_id: str, generation: str) -> None:
        await self.services.preload(service_id, generation)
        self.write_service(service_id)


class ServiceActionHandler(AdminHandler):
    """POST .../actions/{enable,disable,switchToNewest,setMapping}; answers the service's new state."""

    async def post(self, service_id: str, action: str) -> None:
        services = self.services
        if action == "setMapping":
            await services.set_mapping(service_id, self.json_body())
        else:
            await {"enable": services.enable, "disable": services.disable, "switchToNewest": services.switch_to_newest}[
                action
            ](service_id)
        self.write_service(service_id)


class SwitchToHandler(AdminHandler):
    async def post(self, service_id: str, generation: str) -> None:
        await self.services.switch_to(service_id, generation)
        self.write_service(service_id)


class KeysHandler(AdminHandler):
    _FIELDS = {"label", "description", "createdBy", "expiry"}

    def get(self) -> None:
        self.write_json(self.keys.entries())

    def post(self) -> None:
        body = self.json_body()
        unknown = sorted(set(body) - self._FIELDS)
        if unknown or any(value is not None and not isinstance(value, str) for value in body.values()):
            raise BadRequest(f"expected a body with strings (or null) among {', '.join(sorted(self._FIELDS))}")
        self.write_json(
            self.keys.create(body.get("label"), body.get("description"), body.get("createdBy"), body.get("expiry"))
        )


class KeyHandler(AdminHandler):
    """DELETE keys/<key> (dataikuapi's delete_key) or keys/<id>/key (its delete_key_by_id)."""

    def delete(self, key_or_id: str) -> None:
        self.write_json({"ok": True, "deleted": self.keys.delete(key_or_id)})


class MetricsHandler(AdminHandler):
    def get(self) -> None:
        self.write_json(metrics_json(self.services))


def admin_routes(services: ServiceManager, keys: AdminKeys) -> list[tuple[str, type, dict[str, Any]]]:
    context = {"services": services, "keys": keys}
    service = r"/admin/api/services/([^/]+)"
    return [
        (pattern, handler, context)
        for pattern, handler in [
            (r"/admin/api/services/?", ServicesHandler),
            (rf"{service}/?", ServiceHandler),
            (rf"{service}/generations/?", GenerationsHandler),
            (rf"{service}/generations/actions/importFromArchive", ImportHandler),
            (rf"{service}/generations/actions/upload", UploadHandler),
            (rf"{service}/generations/([^/]+)/preload", PreloadHandler),
            (rf"{service}/actions/(enable|disable|switchToNewest|setMapping)", ServiceActionHandler),
            (rf"{service}/actions/switchTo/([^/]+)", SwitchToHandler),
            (r"/admin/api/keys/?", KeysHandler),
            (r"/admin/api/keys/([^/]+)(?:/key)?", KeyHandler),
            (r"/admin/api/metrics", MetricsHandler),
            (r"/admin/api(?:/.*)?", AdminNotFoundHandler),
        ]
    ]
