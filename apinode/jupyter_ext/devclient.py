"""Using the dev server: deploy a service and see whether each function loads; play test queries.

Shared by the API designer (in the Jupyter server) and by kernels (`%api_dev`, the panel), so a
deployment and a played query read the same everywhere. A kernel finds its Jupyter server's
dev server by asking the server to start it unless it runs, every time (a dead node's pid may
still look alive): `POST <server>/apinode/api/dev/start` with the token of the server's own
runtime file (`jpserver-<pid>.json`), the way `jupyter server list` finds servers; then it reads
the URL and admin key from the dev server's runtime file (apinode.jupyter_ext.devserver).

A deployment uploads the bundle as a new generation and switches to it (the `%api_deploy`
calls). The switch refuses a generation whose code does not load, and then the previous one
serves on; the node's `generations/<gen>/check` route says, per endpoint, whether its code
loads, with the error and traceback when it does not. Each deployment is a generation of its
own (`dev-<time>-<random>`), so redeploying an unchanged service reloads it too. What the dev
server serves of a service (the admin API's `activeGeneration`) tells a refused first deploy
from a refused redeploy, and a play before any deploy from a play of a bad query.

Everything here blocks (apinode.client).
"""

from __future__ import annotations

import datetime
import html
import json
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir

from ..client import NodeClient, NodeError, request
from ..packaging.bundles import bundle_bytes
from ..packaging.definitions import TestQuery
from ..packaging.staging import StagedService
from ..results import QueryResult, describe_error, text_table
from .deploy import deploy_bundle, no_step
from .devserver import DevServerError, DevServerInfo, find_dev_server, runtime_file
from .html_tables import RichReport, html_table

_START_TIMEOUT = 120.0  # a start asked by a kernel: the admin key, then the node's start-up
LOAD_HEADERS = ("endpoint", "loads", "error")


class NotDeployed(NodeError):
    """Test queries played on the dev server before a deploy of their service has loaded."""


@dataclass(frozen=True)
class EndpointLoad:
    """Whether one endpoint's code loads on the dev server; why not when it does not."""

    endpoint: str
    loaded: bool
    error: str | None = None
    traceback: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"loaded": self.loaded, "error": self.error, "traceback": self.traceback}


@dataclass(frozen=True, repr=False)
class DevDeployment:
    """A service deployed to the dev server: does each function load, and is it now served.

    When an endpoint does not load, the switch is refused (`switched` is false) and the dev
    server serves on the generation it served before, `serving` (None: it serves nothing of
    the service yet).
    """

    service: str
    generation: str
    url: str
    switched: bool
    endpoints: tuple[EndpointLoad, ...]
    serving: str | None

    @property
    def docs(self) -> str:
        """The service's interactive documentation on the dev server (its OpenAPI, in Swagger UI)."""
        return f"{self.url}/public/api/v1/{self.service}/docs"

    @property
    def summary(self) -> str:
        if self.switched:
            return (
                f"service {self.service} deployed to the dev server at {self.url} (generation "
                f"{self.generation}); its documentation: {self.docs}"
            )
        failed = ", ".join(load.endpoint for load in self.endpoints if not load.loaded)
        served = (
            "serves nothing of it yet (no deploy of it has loaded)"
            if self.serving is None
            else f"still serves its generation {self.serving}"
        )
        return f"service {self.service} NOT switched: {failed} did not load; the dev server at {self.url} {served}"

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "generation": self.generation,
            "url": self.url,
            "switched": self.switched,
            "serving": self.serving,
            "summary": self.summary,
            "docs": self.docs,
            "endpoints": {load.endpoint: load.to_json() for load in self.endpoints},
        }

    def _cells(self) -> list[tuple[str, str, str]]:
        return [(load.endpoint, "yes" if load.loaded else "NO", load.error or "") for load in self.endpoints]

    def __repr__(self) -> str:
        tracebacks = [
            f"traceback of {load.endpoint}:\n{load.traceback.rstrip()}" for load in self.endpoints if load.traceback
        ]
        return "\n\n".join([text_table(LOAD_HEADERS, self._cells()), *tracebacks, self.summary])

    def _repr_html_(self) -> str:
        colors = ["#1a7f37" if load.loaded else "#cf222e" for load in self.endpoints]
        rows = [(endpoint, error, loads) for endpoint, loads, error in self._cells()]  # verdict last
        table = html_table(("endpoint", "error", "loads"), rows, row_colors=colors)
        return (
            f"<p>{html.escape(self.summary)}</p>"
            + table
            + "".join(
                f"<details><summary>traceback of {html.escape(load.endpoint)}</summary>"
                f"<pre>{html.escape(load.traceback)}</pre></details>"
                for load in self.endpoints
                if load.traceback
            )
        )


DEPLOY_STEPS = 3
"""The steps of `deploy_to_dev` that `on_step` hears of: bundling, uploading, switching."""


def deploy_to_dev(
    info: DevServerInfo, staged: StagedService, on_step: Callable[[str], None] = no_step
) -> DevDeployment:
    """Deploy `staged` as a new generation; whether each endpoint loads (NodeError if unusable).
    `on_step` (called on this thread) hears of each step as it starts."""
    service = staged.definition.id
    moment = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    generation = f"dev-{moment}-{secrets.token_hex(3)}"
    on_step(f"bundling {service}")
    bundle, _ = bundle_bytes(staged, generation)
    try:
        deploy_bundle(info.url, info.admin_key, service, bundle, generation, on_step)
    except NodeError as refused:
        loads = _check(info, service, generation)  # why, when it is that some code did not load
        if loads is None or all(load.loaded for load in loads):
            raise refused from None
        serving = served_generation(NodeClient(info.url, info.admin_key), service)
        return DevDeployment(service, generation, info.url, False, loads, serving)
    loads = tuple(EndpointLoad(endpoint.id, True) for endpoint in staged.definition.endpoints)
    return DevDeployment(service, generation, info.url, True, loads, generation)


def served_generation(node: NodeClient, service: str) -> str | None:
    """The generation of `service` the node serves; None if it serves none or has no such service."""
    try:
        described = node.service(service)
    except NodeError as error:
        if error.status == 404:
            return None
        raise
    active = described.get("activeGeneration") if isinstance(described, dict) else None
    return active if isinstance(active, str) else None


def _check(info: DevServerInfo, service: str, generation: str) -> tuple[EndpointLoad, ...] | None:
    """Per endpoint, whether the generation's code loads; None if the node cannot say."""
    try:
        answer = NodeClient(info.url, info.admin_key).check(service, generation)
    except NodeError:
        return None
    if not isinstance(answer, dict):
        return None
    return tuple(
        EndpointLoad(endpoint, bool(load["loaded"]), load["error"], load["traceback"])
        for endpoint, load in answer["endpoints"].items()
    )


def play_on_dev(
    info: DevServerInfo,
    service: str,
    endpoint: str,
    queries: Sequence[TestQuery],
    on_result: Callable[[QueryResult], None] | None = None,
    on_item: Callable[[str, Any], None] | None = None,
) -> RichReport:
    """Play test queries on the dev server, one after the other; `on_result` after each. With
    `on_item`, a generator's items stream: `on_item(query name, item)` as each arrives.
    NotDeployed, before any query, when the dev server serves nothing of the service."""
    if served_generation(NodeClient(info.url, info.admin_key), service) is None:
        raise NotDeployed(f"the dev server serves nothing of service {service!r} yet: deploy it first")
    node = NodeClient(info.url)
    results = []
    for query in queries:
        results.append(node.play(service, endpoint, query, None if on_item is None else partial(on_item, query.name)))
        if on_result is not None:
            on_result(results[-1])
    return RichReport(f"{service}/{endpoint} on the dev server", tuple(results))


def jupyter_server_pid() -> int:
    """The pid of the Jupyter server that started this kernel (jupyter_client says so in
    JPY_PARENT_PID; the parent process otherwise)."""
    return int(os.environ.get("JPY_PARENT_PID") or os.getppid())


def kernel_dev_server(server_pid: int | None = None) -> DevServerInfo:
    """The dev server of this kernel's Jupyter server, which is asked to start it if needed.

    The server is asked every time (cheap: it only polls its child when the node runs): the
    runtime file's pid cannot tell a live node from one that died (a zombie answers kill -0)."""
    server_pid = jupyter_server_pid() if server_pid is None else server_pid
    started_pid = _ask_to_start(server_pid)
    info = find_dev_server(server_pid)
    if info is None or info.pid != started_pid:
        raise DevServerError(
            f"the Jupyter server (pid {server_pid}) said its dev server started, "
            f"but {runtime_file(server_pid)} does not describe a running one"
        )
    return info


def jupyter_server_info(server_pid: int) -> dict[str, Any]:
    """What the Jupyter server `server_pid` says of itself in the runtime dir (jpserver-<pid>.json,
    the file `jupyter server list` reads): its url, token, base_url, root_dir..."""
    server_file = _jupyter_server_file(server_pid)
    try:
        server = json.loads(server_file.read_text())
        server["url"] = str(server["url"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DevServerError(
            f"no dev server: this kernel's Jupyter server (pid {server_pid}) has no {server_file.name} "
            "in the runtime dir; run the kernel from a Jupyter server with the apinode extension "
            "(jupyter server extension list)"
        ) from None
    return server  # type: ignore[no-any-return]


def _jupyter_server_file(server_pid: int) -> Path:
    return Path(jupyter_runtime_dir()) / f"jpserver-{server_pid}.json"


def _ask_to_start(server_pid: int) -> int:
    """Ask the Jupyter server to start its dev server unless it runs; the node's pid."""
    server = jupyter_server_info(server_pid)
    url, token = server["url"], str(server.get("token", ""))
    server_file = _jupyter_server_file(server_pid)
    headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    try:
        answer = request(f"{url.rstrip('/')}/apinode/api/dev/start", "POST", b"{}", headers, _START_TIMEOUT)
    except NodeError as error:
        raise DevServerError(f"{server_file}: {error}") from None  # not a URL, or nothing answers
    if not answer.ok:
        hint = (
            f" (it has no token to give kernels: start the dev server from the API designer, {url}apinode/designer)"
            if answer.status in (401, 403)
            else ""
        )
        detail = describe_error(answer.json())
        raise DevServerError(f"the Jupyter server did not start its dev server: HTTP {answer.status} {detail}{hint}")
    try:
        return int(answer.json()["pid"])
    except (ValueError, KeyError, TypeError):  # no JSON (NotJson), no pid, or not a number
        raise DevServerError(
            f"the Jupyter server at {url} did not say which dev server runs (is "
            "its apinode extension the same version as the kernel's?)"
        ) from None
