"""What the API designer does with a notebook: list its endpoints, deploy, play, bundle.

The manager behind the extension's REST handlers (apinode.jupyter_ext.handlers), which only
parse the request and write the answer. Notebooks are read from disk with nbformat
(apinode.packaging.notebooks), never through a kernel: the designer shows what the notebook's
cells say, as `apinode build notebook.ipynb` would bundle them. Paths are relative to the
Jupyter server's root directory and may not leave it.

Concurrency: every method blocks (file reads, bundling, HTTP to the dev server); the handlers
call them in worker threads. The dev server serializes its own start and stop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..packaging.bundles import bundle_bytes
from ..packaging.definitions import NO_EXPECTED
from ..packaging.notebooks import read_notebook_services
from ..packaging.staging import StagedService, folder_on_disk
from ..results import RESULT_HEADERS, QueryResult, result_cells
from .devclient import deploy_to_dev, play_on_dev
from .devserver import DevServer


class DesignerError(Exception):
    """A request the designer cannot serve as asked; `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Designer:
    def __init__(self, root_dir: Path, dev_server: DevServer, allow_hidden: bool = False) -> None:
        self.root_dir = root_dir.resolve()
        self.dev_server = dev_server
        self.allow_hidden = allow_hidden  # the contents manager's: may hidden files be read?

    def notebook(self, path: str) -> Path:
        """The notebook at `path` under the root directory (DesignerError if absent or outside)."""
        if not path:
            raise DesignerError(400, "which notebook? pass its path, relative to the server's root")
        candidate = (self.root_dir / path.lstrip("/")).resolve()
        if not candidate.is_relative_to(self.root_dir):
            raise DesignerError(403, f"{path}: outside the server's root directory")
        if not candidate.is_file():
            raise DesignerError(404, f"{path}: no such notebook under the server's root directory")
        return candidate

    def services(self, path: str) -> dict[str, StagedService]:
        return read_notebook_services(self.notebook(path))

    def service(self, path: str, service_id: str) -> StagedService:
        services = self.services(path)
        if service_id not in services:
            raise DesignerError(
                404, f"{path} defines no service {service_id!r} (it defines: {', '.join(services) or 'none'})"
            )
        return services[service_id]

    def endpoints(self, path: str) -> dict[str, Any]:
        """The notebook's services as service.json has them: endpoints, test queries and all."""
        return {"path": path, "services": [staged.definition.to_json() for staged in self.services(path).values()]}

    def deploy(self, path: str) -> dict[str, Any]:
        """Deploy every service of the notebook to the dev server; whether each function loads."""
        services = self.services(path)
        if not services:
            raise DesignerError(400, f"{path} defines no service: no cell starts with %%api_endpoint")
        for staged in services.values():
            self._check_files(path, staged)
        info = self.dev_server.ensure()
        return {
            "devServer": info.url,
            "services": [deploy_to_dev(info, staged).to_json() for staged in services.values()],
        }

    def play(self, path: str, service_id: str, endpoint_id: str) -> dict[str, Any]:
        """Play an endpoint's test queries (as the notebook has them) on the dev server."""
        definition = self.service(path, service_id).definition
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
        info = self.dev_server.ensure()
        report = play_on_dev(info.url, service_id, endpoint_id, endpoint.test_queries)
        return {
            "service": service_id,
            "endpoint": endpoint_id,
            "devServer": info.url,
            "summary": report.summary,
            "passed": report.passed,
            "headers": list(RESULT_HEADERS),
            "results": [_result_json(result) for result in report.results],
        }

    def bundle(self, path: str, service_id: str) -> tuple[str, bytes]:
        """(file name, bytes) of the service's bundle, as `apinode build` makes it."""
        staged = self.service(path, service_id)
        self._check_files(path, staged)
        content, generation = bundle_bytes(staged)
        return f"{service_id}-{generation}.zip", content

    def _check_files(self, path: str, staged: StagedService) -> None:
        """Refuse (403) a service whose folders or wheelhouses reach outside the root directory,
        or into hidden paths the contents manager would not serve: the notebook's cells choose
        them, and the bundle would carry their files to whoever asks."""
        for archive_path, source in staged.files.items():
            if not isinstance(source, Path):
                continue
            folder = folder_on_disk(archive_path, source)
            real = source.resolve()
            if not real.is_relative_to(self.root_dir):
                raise DesignerError(
                    403,
                    f"{path}: service {staged.definition.id}: folder {folder} is outside the server's root directory",
                )
            if not self.allow_hidden and any(part.startswith(".") for part in real.relative_to(self.root_dir).parts):
                raise DesignerError(
                    403,
                    f"{path}: service {staged.definition.id}: folder {folder} "
                    f"holds a hidden path ({real.relative_to(self.root_dir)}), "
                    "which the server does not serve",
                )


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
