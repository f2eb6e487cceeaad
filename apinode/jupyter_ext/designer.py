"""What the API designer does with a notebook: list its endpoints, deploy, play, bundle.

The manager behind the extension's REST handlers (apinode.jupyter_ext.handlers), which only
parse the request and write the answer. Notebooks are read from disk with nbformat
(apinode.packaging.notebooks), never through a kernel: the designer shows what the notebook's
cells say, as `apinode build notebook.ipynb` would bundle them. It reads only what Jupyter
would serve: the notebook, then the folders its cells name, pass the contents manager's rules
(apinode.jupyter_ext.served_files) before anything under them is read.

Concurrency: methods are coroutines on the Jupyter server's event loop; what blocks (file
reads, bundling, HTTP to the dev server) runs in worker threads. The dev server serializes its
own start and stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..packaging.bundles import bundle_bytes
from ..packaging.definitions import NO_EXPECTED, TestQuery
from ..packaging.notebooks import read_notebook_registrations, stage_notebook_services
from ..packaging.staging import StagedService
from ..results import RESULT_HEADERS, QueryResult, result_cells
from .devclient import deploy_to_dev, play_on_dev
from .devserver import DevServer
from .served_files import ServedFiles


class DesignerError(Exception):
    """A request the designer cannot serve as asked; `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Designer:
    def __init__(self, files: ServedFiles, dev_server: DevServer) -> None:
        self.files = files
        self.dev_server = dev_server

    async def services(self, path: str) -> dict[str, StagedService]:
        """The services of the notebook at `path` (relative to the root), staged once the
        notebook and every folder its cells name have passed the contents manager's rules."""
        notebook = await self.files.notebook(path)
        registrations = await asyncio.to_thread(read_notebook_registrations, notebook)
        folders = dict.fromkeys(folder for rs in registrations.values() for r in rs for folder in r.magic.folders)
        for folder in folders:
            await self.files.folder(path, notebook, folder)
        services = await asyncio.to_thread(stage_notebook_services, notebook, registrations)
        for staged in services.values():
            await self.files.folder_files(path, staged)
        return services

    async def service(self, path: str, service_id: str) -> StagedService:
        services = await self.services(path)
        if service_id not in services:
            raise DesignerError(
                404, f"{path} defines no service {service_id!r} (it defines: {', '.join(services) or 'none'})"
            )
        return services[service_id]

    async def endpoints(self, path: str) -> dict[str, Any]:
        """The notebook's services as service.json has them: endpoints, test queries and all."""
        services = await self.services(path)
        return {"path": path, "services": [staged.definition.to_json() for staged in services.values()]}

    async def deploy(self, path: str) -> dict[str, Any]:
        """Deploy every service of the notebook to the dev server; whether each function loads."""
        services = await self.services(path)
        if not services:
            raise DesignerError(400, f"{path} defines no service: no cell starts with %%api_endpoint")
        return await asyncio.to_thread(self._deploy, list(services.values()))

    def _deploy(self, services: list[StagedService]) -> dict[str, Any]:
        info = self.dev_server.ensure()
        return {"devServer": info.url, "services": [deploy_to_dev(info, staged).to_json() for staged in services]}

    async def play(
        self, path: str, service_id: str, endpoint_id: str, on_item: Callable[[str, Any], None] | None = None
    ) -> dict[str, Any]:
        """Play an endpoint's test queries (as the notebook has them) on the dev server. With
        `on_item`, a generator's items stream: `on_item(query name, item)` as each arrives, from
        the worker thread that plays."""
        definition = (await self.service(path, service_id)).definition
        try:
            endpoint = definition.endpoint(endpoint_id)
        except KeyError as error:
            raise DesignerError(404, f"{path}: {error.args[0]}") from None
        if not endpoint.test_queries:
            raise DesignerError(
                400,
                f"{path}: {service_id}/{endpoint_id} has no test queries; add a "
                f"%%api_test_queries {service_id}/{endpoint_id} cell",
            )
        return await asyncio.to_thread(self._play, service_id, endpoint_id, endpoint.test_queries, on_item)

    def _play(
        self,
        service_id: str,
        endpoint_id: str,
        queries: tuple[TestQuery, ...],
        on_item: Callable[[str, Any], None] | None,
    ) -> dict[str, Any]:
        info = self.dev_server.ensure()
        report = play_on_dev(info, service_id, endpoint_id, queries, on_item=on_item)
        return {
            "service": service_id,
            "endpoint": endpoint_id,
            "devServer": info.url,
            "summary": report.summary,
            "passed": report.passed,
            "headers": list(RESULT_HEADERS),
            "results": [_result_json(result) for result in report.results],
        }

    async def bundle(self, path: str, service_id: str) -> tuple[str, bytes]:
        """(file name, bytes) of the service's bundle, as `apinode build` makes it."""
        content, generation = await asyncio.to_thread(bundle_bytes, await self.service(path, service_id))
        return f"{service_id}-{generation}.zip", content


def _result_json(result: QueryResult) -> dict[str, Any]:
    out = {
        "name": result.name,
        "status": result.status,
        "timeMs": result.time_ms,
        "response": result.answer,
        "verdict": result.verdict,
        "passed": result.passed,
        "cells": list(result_cells(result)),
    }
    if result.expected is not NO_EXPECTED:
        out["expected"] = result.expected
    return out
