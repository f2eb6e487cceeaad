"""A service on the node and its loaded generations; who may call them.

A `Service` holds the generations loaded for it and the traffic split that picks one per request.
Access control is each generation's: public, or API keys sent as HTTP Basic user names, as its
service.json says. Changes (loading, switching) are the service manager's (apinode.node.service_manager).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hmac
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..packaging.definitions import PoolSettings, ServiceDef
from .endpoint import Endpoint
from .errors import ApiError, EndpointLoadFailed, NotFound, Unauthorized, listing
from .interpreters import BUILTIN, Interpreters
from .store import ServiceState
from .traffic import TrafficSplit


def basic_auth_user(header: str | None) -> str | None:
    """The user name of an HTTP Basic `Authorization` header (where clients put the key)."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except ValueError:  # not base64 (binascii.Error), not ASCII (`Basic éé`), not UTF-8 once decoded
        return None
    return decoded.partition(":")[0]


def key_matches(candidate: str | None, keys: tuple[str, ...] | list[str]) -> bool:
    """Constant-time membership: every key is compared, whatever matches."""
    if candidate is None:
        return False
    given = candidate.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key.encode())
    return found


class LoadedGeneration:
    """One generation of a service, loaded: a pool per endpoint, and who may call them."""

    def __init__(
        self,
        definition: ServiceDef,
        directory: Path,
        interpreters: Interpreters | None = None,
        pools: Mapping[str, PoolSettings] | None = None,
    ) -> None:
        """`pools`: the endpoints' pool settings with the operator's overrides (default: as defined)."""
        self.definition = definition
        self.directory = directory
        self.id = definition.generation or "unversioned"
        self.endpoints: dict[str, Endpoint] = {}
        for endpoint in definition.endpoints:  # `interpreters`: see node.interpreters
            interpreter = (interpreters or {}).get(endpoint.id, BUILTIN)
            python, env = BUILTIN if isinstance(interpreter, EndpointLoadFailed) else interpreter
            self.endpoints[endpoint.id] = Endpoint(
                definition.id, self.id, endpoint, directory, (pools or {}).get(endpoint.id), python=python, env=env
            )
            if isinstance(interpreter, EndpointLoadFailed):  # its code env could not be built
                self.endpoints[endpoint.id].pool.fail(interpreter)

    async def start(self) -> dict[str, EndpointLoadFailed]:
        """Start every endpoint's floor, all at once; the endpoints whose code failed to load, with why."""
        outcomes = await asyncio.gather(
            *(endpoint.start() for endpoint in self.endpoints.values()), return_exceptions=True
        )
        failures: dict[str, EndpointLoadFailed] = {}
        for endpoint_id, outcome in zip(self.endpoints, outcomes):
            if isinstance(outcome, EndpointLoadFailed):
                failures[endpoint_id] = outcome
            elif isinstance(outcome, BaseException):
                raise outcome
        return failures

    async def close(self, drain_timeout: float = 30.0) -> None:
        """Refuse new requests, let queued and running ones finish (bounded), stop every pipeline."""
        await asyncio.gather(*(endpoint.close(drain_timeout) for endpoint in self.endpoints.values()))

    def allows(self, authorization: str | None) -> bool:
        definition = self.definition
        return definition.public_access or key_matches(basic_auth_user(authorization), definition.api_keys)

    def authorize(self, authorization: str | None) -> None:
        definition = self.definition
        if not self.allows(authorization):
            raise Unauthorized(
                f"service {definition.id!r} requires an API key: send it as the HTTP Basic user name "
                "with an empty password (APINodeClient(url, service, api_key=...))"
            )

    def endpoint(self, endpoint_id: str) -> Endpoint:
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise NotFound(
                f"service {self.definition.id!r} has no endpoint {endpoint_id!r} "
                f"(its endpoints: {listing(self.endpoints)})"
            )
        return endpoint


class Service:
    """A service on the node: the operator's state for it, and the generations loaded for it.

    `loaded` and `traffic` are replaced together, never mutated, by `serve`; requests read
    `traffic` once. `lock` serializes the admin changes to this service (see ServiceManager).
    """

    def __init__(self, service_id: str, state: ServiceState) -> None:
        self.id = service_id
        self.state = state
        self.loaded: dict[str, LoadedGeneration] = {}
        self.traffic = TrafficSplit(service_id, {})
        self.lock = asyncio.Lock()
        self.problem: ApiError | None = None  # why it serves nothing, when loading failed at start-up
        self.damaged: str | None = None  # why its state file could not be read: it is quarantined

    @classmethod
    def quarantined(cls, service_id: str, why: str) -> Service:
        """A service whose state on disk could not be read: it serves nothing and takes no
        change but deletion until the operator repairs the file and restarts the node."""
        service = cls(service_id, ServiceState())
        service.damaged = why
        service.problem = EndpointLoadFailed(
            f"service {service_id!r} is out of service: its state on this node is damaged "
            "(the node's log and the admin API say how)"
        )
        return service

    def serve(self, loaded: dict[str, LoadedGeneration]) -> None:
        """Route requests over `loaded` as the state selects (every selected generation is in it)."""
        self.loaded = loaded
        state = self.state
        self.traffic = TrafficSplit(
            self.id, loaded, state.active if state.enabled else None, state.mapping if state.enabled else None
        )
        self.problem = None

    def pick(self, body: bytes, authorization: str | None) -> LoadedGeneration:
        """The generation that answers this request, if the caller may call it (NotFound, or the
        start-up failure, if none; Unauthorized before any detail for a caller without a key)."""
        try:
            generation = self.traffic.pick(body)
        except NotFound:
            if not any(loaded.allows(authorization) for loaded in self.loaded.values()):
                raise Unauthorized(f"service {self.id!r} requires an API key") from None
            raise
        if generation is None:
            raise self.problem or NotFound(
                f"service {self.id!r} has no active generation: import one and switch to it "
                "(apinode admin service-import-generation, service-switch-to-newest)"
            )
        generation.authorize(authorization)
        return generation

    def describe(self) -> dict[str, Any]:
        """The service as the admin API shows it."""
        state = self.state
        return {
            "id": self.id,
            "serviceId": self.id,
            "enabled": state.enabled,
            "activeGeneration": state.active,
            "mapping": None if state.mapping is None else state.mapping.to_json(),
            "loadedGenerations": sorted(self.loaded),
            "generations": self.generation_details(),
            "problem": self.damaged or (None if self.problem is None else self.problem.message),
            "endpoints": {
                generation_id: {endpoint_id: endpoint.describe() for endpoint_id, endpoint in loaded.endpoints.items()}
                for generation_id, loaded in sorted(self.loaded.items())
            },
        }

    def generation_details(self) -> list[dict[str, Any]]:
        """Every generation on disk, oldest import first: when imported, serving, loaded."""
        state = self.state
        return [
            {
                "id": generation,
                "importedAt": datetime.datetime.fromtimestamp(at, datetime.timezone.utc).isoformat(timespec="seconds"),
                "serving": state.enabled and generation in state.selected(),
                "loaded": generation in self.loaded,
            }
            for generation, at in sorted(state.imported.items(), key=lambda item: item[1])
        ]
