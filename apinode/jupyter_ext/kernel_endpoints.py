"""The endpoints a kernel has registered, and the services they make.

The magics own one registry per kernel; plain Python can make its own. It keeps, per endpoint,
the `%%api_endpoint` arguments, the code and the test queries, in the order endpoints were first
registered: re-running a cell replaces its registration in place, as a later cell replaces an
earlier one when a notebook is read without a kernel. `stage` goes through the same
`stage_registrations` as `apinode build notebook.ipynb`, so both give the same bundle bytes.

Folders are relative to `base_dir`, the notebook's directory: Jupyter starts a notebook's
kernel there, so it defaults to the working directory when the registry is made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..packaging.bundles import write_bundle
from ..packaging.definitions import TestQuery, parse_json, parse_test_queries
from ..packaging.magic_syntax import ENDPOINT_MAGIC, TEST_QUERIES_MAGIC, EndpointMagic
from ..packaging.notebooks import EndpointRegistration, stage_registrations
from ..packaging.staging import StagedService
from .globals_check import standalone_source
from .overview import ServicesOverview


class NotRegistered(ValueError):
    """Asked for an endpoint or service the kernel has not registered; says what to run."""


@dataclass(frozen=True)
class Shipped:
    """A service's bundle written (`%api_export`) or deployed (`%api_deploy`)."""

    service: str
    generation: str
    action: str  # what happened, in words that lead to `destination`
    destination: str  # the file, or the node's URL

    def __repr__(self) -> str:
        return f"service {self.service!r}, generation {self.generation}: {self.action} {self.destination}"


class KernelEndpoints:
    def __init__(self, base_dir: Path | None = None) -> None:
        self.base_dir = (base_dir or Path.cwd()).absolute()
        self._endpoints: dict[tuple[str, str], EndpointRegistration] = {}

    def register(self, magic: EndpointMagic, code: str) -> EndpointRegistration:
        """Register (or replace) an endpoint's code; test queries saved for it are kept."""
        previous = self._endpoints.get((magic.service, magic.endpoint))
        registration = EndpointRegistration(magic, code, previous.test_queries if previous else ())
        self._endpoints[(magic.service, magic.endpoint)] = registration
        return registration

    def register_function(self, service: str, endpoint: str, function: Callable[..., Any]) -> EndpointRegistration:
        """Register a kernel function from its own source, refused if it needs notebook globals."""
        code, name = standalone_source(function)
        return self.register(EndpointMagic(service, endpoint, name), code)

    def set_test_queries(self, service: str, endpoint: str, text: str) -> tuple[TestQuery, ...]:
        """Save an endpoint's test queries from the JSON text of a `%%api_test_queries` cell."""
        registration = self.registration(service, endpoint)
        where = f"{TEST_QUERIES_MAGIC} {service}/{endpoint}"
        queries = parse_test_queries(parse_json(text, where), f"{where}: testQueries")
        self._endpoints[(service, endpoint)] = replace(registration, test_queries=queries)
        return queries

    def registration(self, service: str, endpoint: str) -> EndpointRegistration:
        try:
            return self._endpoints[(service, endpoint)]
        except KeyError:
            known = ", ".join(f"{s}/{e}" for s, e in self._endpoints) or "none yet"
            raise NotRegistered(
                f"no endpoint {service}/{endpoint} in this kernel (registered: "
                f"{known}); run its {ENDPOINT_MAGIC} cell first"
            ) from None

    def registrations(self) -> list[EndpointRegistration]:
        """Every registered endpoint, services and endpoints in order of first registration."""
        services = list(dict.fromkeys(service for service, _ in self._endpoints))
        return sorted(self._endpoints.values(), key=lambda r: services.index(r.magic.service))

    def folder_paths(self, registration: EndpointRegistration) -> list[Path]:
        """An endpoint's folders as absolute paths, in declared order."""
        return [(self.base_dir / folder).resolve() for folder in registration.magic.folders]

    def stage(self, service: str) -> StagedService:
        """The service as `apinode build` stages it from the notebook."""
        endpoints = [r for r in self.registrations() if r.magic.service == service]
        if not endpoints:
            known = ", ".join(dict.fromkeys(s for s, _ in self._endpoints)) or "none yet"
            raise NotRegistered(
                f"no service {service!r} in this kernel (registered: {known}); run its {ENDPOINT_MAGIC} cells first"
            )
        return stage_registrations(service, endpoints, self.base_dir, f"service {service}")

    def export(self, service: str, path: Path) -> Shipped:
        """Write the service's bundle to `path` (relative to `base_dir`)."""
        path = self.base_dir / path
        return Shipped(service, write_bundle(self.stage(service), path), "exported to", str(path))

    def overview(self) -> ServicesOverview:
        return ServicesOverview(tuple(self.registrations()))
