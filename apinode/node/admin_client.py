"""A client of a node's admin API with the standard library alone, and the `apinode admin` commands.

`apinode admin --url URL --key KEY COMMAND [ARGS]` mirrors DSS's apinode-admin. Bundles travel
in the request body (the upload route), so importing works on a remote node too. The client
needs neither dataikuapi nor requests, so the node and the Jupyter side can both use it.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO


class AdminApiError(Exception):
    """The node refused a call, or could not be reached; str() is what it said, for a human."""


class AdminClient:
    def __init__(self, url: str, key: str, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._authorization = "Basic " + base64.b64encode(f"{key}:".encode()).decode()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Call `/admin/api/<path>` with `body` as JSON (none if None); the decoded answer."""
        data = None if body is None else json.dumps(body).encode()
        return self._send(method, path, data, "application/json", None if data is None else len(data))

    def upload(self, service_id: str, bundle: Path) -> Any:
        """Import a bundle file as a new generation of the service: {"generation": id}."""
        with bundle.open("rb") as data:
            return self._send(
                "POST",
                f"services/{quote(service_id)}/generations/actions/upload",
                data,
                "application/zip",
                bundle.stat().st_size,
            )

    def _send(
        self, method: str, path: str, data: bytes | BinaryIO | None, content_type: str, length: int | None
    ) -> Any:
        headers = {"Authorization": self._authorization, "Content-Type": content_type}
        if length is not None:
            headers["Content-Length"] = str(length)
        request = urllib.request.Request(f"{self.url}/admin/api/{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = response.read()
        except urllib.error.HTTPError as error:
            raise AdminApiError(_error_message(error.code, error.read())) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise AdminApiError(f"cannot reach the node at {self.url}: {reason}") from None
        return json.loads(answer) if answer else None


def quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _error_message(status: int, body: bytes) -> str:
    try:
        error = json.loads(body)
        return f"{error['errorType']} (HTTP {status}): {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}: {body.decode('utf-8', 'replace')[:500]}"


def _mapping(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise AdminApiError(
            f"MAPPING is not JSON ({error}); expected "
            '\'{"entries": [{"generation": "g1", "proba": 1}], "hashBased": false}\''
        ) from None


@dataclass(frozen=True)
class AdminCommand:
    help: str
    args: tuple[str, ...]  # argument names, as the command line shows them
    call: Callable[..., Any]  # (client, *args) -> the node's answer


def _action(action: str) -> Callable[[AdminClient, str], Any]:
    return lambda client, service: client.request("POST", f"services/{quote(service)}/actions/{action}")


ADMIN_COMMANDS: dict[str, AdminCommand] = {
    "services-list": AdminCommand(
        "list the services and their state", (), lambda client: client.request("GET", "services")
    ),
    "service-create": AdminCommand(
        "create a service (with no generation yet)",
        ("SERVICE",),
        lambda client, service: client.request("POST", "services", {"serviceId": service}),
    ),
    "service-delete": AdminCommand(
        "stop a service and delete it with its generations",
        ("SERVICE",),
        lambda client, service: client.request("DELETE", f"services/{quote(service)}"),
    ),
    "service-import-generation": AdminCommand(
        "send a bundle (.zip) to the node as a new generation of the service",
        ("SERVICE", "BUNDLE"),
        lambda client, service, bundle: client.upload(service, Path(bundle)),
    ),
    "service-list-generations": AdminCommand(
        "list the service's generations",
        ("SERVICE",),
        lambda client, service: client.request("GET", f"services/{quote(service)}/generations"),
    ),
    "service-switch-to-newest": AdminCommand(
        "serve the generation imported last", ("SERVICE",), _action("switchToNewest")
    ),
    "service-switch-to-generation": AdminCommand(
        "serve one generation",
        ("SERVICE", "GENERATION"),
        lambda client, service, generation: client.request(
            "POST", f"services/{quote(service)}/actions/switchTo/{quote(generation)}"
        ),
    ),
    "service-set-mapping": AdminCommand(
        "split traffic between generations, e.g. "
        '\'{"entries": [{"generation": "g1", "proba": 0.9}, {"generation": "g2", "proba": 0.1}]}\'',
        ("SERVICE", "MAPPING"),
        lambda client, service, mapping: client.request(
            "POST", f"services/{quote(service)}/actions/setMapping", _mapping(mapping)
        ),
    ),
    "service-enable": AdminCommand("serve the service again", ("SERVICE",), _action("enable")),
    "service-disable": AdminCommand(
        "stop serving the service (404), keeping it on disk", ("SERVICE",), _action("disable")
    ),
    "metrics-get": AdminCommand("the node's metrics as JSON", (), lambda client: client.request("GET", "metrics")),
}
