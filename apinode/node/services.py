"""The services a node serves, each with the generation that answers its calls.

A `Service` owns its loaded generations; `route` picks the endpoint a request goes to. Access
control is the service's: public, or API keys sent as HTTP Basic user names.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from pathlib import Path

from ..packaging.definitions import ServiceDef
from .endpoint import Endpoint
from .errors import EndpointLoadFailed, NotFound, Unauthorized

log = logging.getLogger("apinode.services")


def basic_auth_user(header: str | None) -> str | None:
    """The user name of an HTTP Basic `Authorization` header (where clients put the key)."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
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
    """One generation of a service with a pool per endpoint."""

    def __init__(self, definition: ServiceDef, directory: Path) -> None:
        self.definition = definition
        self.directory = directory
        self.id = definition.generation or "unversioned"
        self.endpoints = {
            endpoint.id: Endpoint(definition.id, self.id, endpoint, directory)
            for endpoint in definition.endpoints
        }

    async def start(self) -> dict[str, EndpointLoadFailed]:
        """Start every endpoint's floor; the endpoints whose code failed to load, with why."""
        failures: dict[str, EndpointLoadFailed] = {}
        for endpoint in self.endpoints.values():
            try:
                await endpoint.pool.start()
            except EndpointLoadFailed as exc:
                failures[endpoint.definition.id] = exc
        return failures

    async def close(self, drain_timeout: float = 30.0) -> None:
        for endpoint in self.endpoints.values():
            await endpoint.pool.close(drain_timeout)


class Service:
    def __init__(self, generation: LoadedGeneration) -> None:
        self.active = generation
        self.enabled = True

    @property
    def id(self) -> str:
        return self.active.definition.id

    def authorize(self, authorization: str | None) -> None:
        definition = self.active.definition
        if definition.public_access:
            return
        if not key_matches(basic_auth_user(authorization), definition.api_keys):
            raise Unauthorized(
                f"service {definition.id!r} requires an API key: send it as the HTTP Basic user name "
                "with an empty password (APINodeClient(url, service, api_key=...))")

    def route(self, endpoint_id: str, body: bytes) -> Endpoint:
        endpoint = self.active.endpoints.get(endpoint_id)
        if endpoint is None:
            known = ", ".join(sorted(self.active.endpoints)) or "none"
            raise NotFound(f"service {self.id!r} has no endpoint {endpoint_id!r} (its endpoints: {known})")
        return endpoint


class ServiceRegistry:
    def __init__(self) -> None:
        self.services: dict[str, Service] = {}

    def get(self, service_id: str) -> Service:
        service = self.services.get(service_id)
        if service is None or not service.enabled:
            raise NotFound(f"no service {service_id!r} on this node" if service is None
                           else f"service {service_id!r} is disabled")
        return service

    async def add(self, definition: ServiceDef, directory: Path) -> dict[str, EndpointLoadFailed]:
        """Load a generation and serve it; the endpoints that failed to load, with why."""
        generation = LoadedGeneration(definition, directory)
        failures = await generation.start()
        self.services[definition.id] = Service(generation)
        return failures

    async def close(self, drain_timeout: float = 30.0) -> None:
        for service in self.services.values():
            await service.active.close(drain_timeout)
