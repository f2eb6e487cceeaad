"""The services of a node, and every change to them: create, import, preload, switch, enable,
disable, delete, and the restore of the data directory's state when the node starts.

A switch loses no request. The generations it needs are loaded and their floor pipelines
started first; only then is the new state written and the service's traffic split replaced, so new
requests go to the new generations; the generations it leaves out are closed last, which lets
their queued and running requests finish (Pool.close drains) before their pipelines stop. A
generation that does not load refuses the switch: what was started for it is stopped, and the
old routing serves on. At start-up the same path is tolerant instead: an endpoint whose code
does not load is marked failed and the others serve (what `apinode run` has always done), and a
service whose files cannot be used is logged and quarantined (served by nobody, shown failed in
the admin API, deletable) while the others serve.

Concurrency: everything runs on the event loop. The admin changes to one service are
serialized by its lock, held across the awaits of loading and draining; requests take no lock,
they read `service.traffic` once. File-heavy work (imports, deletions, code env builds) runs in
a worker thread so that requests keep flowing meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

from ..packaging.codeenvs import CodeEnvCache, CodeEnvError
from ..packaging.definitions import DefinitionError, ServiceDef, load_service_file
from . import ray as ray_cluster
from .errors import ApiError, BadRequest, Conflict, EndpointLoadFailed, NotFound, listing
from .interpreters import Interpreter, Interpreters, codeenv_python
from .jsonfile import DataDirError
from .services import LoadedGeneration, Service
from .store import DataDir, ServiceState
from .traffic import GenerationMapping

log = logging.getLogger("apinode.service_manager")

DRAIN_TIMEOUT = 30.0  # seconds a retired generation's requests get to finish


class ServiceManager:
    def __init__(
        self, store: DataDir, code_envs: CodeEnvCache, on_delete: Callable[[str], None] = lambda service_id: None
    ) -> None:
        """`on_delete(service_id)`: what else a deleted service leaves (its query log)."""
        self.store = store
        self.code_envs = code_envs
        self.on_delete = on_delete
        self.services: dict[str, Service] = {}

    # -- what requests see --------------------------------------------------------------------
    def get(self, service_id: str) -> Service:
        """The service to call; NotFound if there is none or it is disabled."""
        service = self.services.get(service_id)
        if service is None or not service.state.enabled:
            raise NotFound(
                f"no service {service_id!r} on this node" if service is None else f"service {service_id!r} is disabled"
            )
        return service

    # -- start and stop -----------------------------------------------------------------------
    async def restore(self) -> None:
        """Serve what the data directory says, as it was when the node last stopped."""
        self.store.prepare()
        for service_id in self.store.service_ids():
            try:
                self.services[service_id] = Service(service_id, self.store.read_state(service_id))
            except DataDirError as error:
                log.error("service %s quarantined: %s", service_id, error)
                self.services[service_id] = Service.quarantined(service_id, str(error))
        await asyncio.gather(*(self._restore(service) for service in self.services.values() if service.damaged is None))

    async def _restore(self, service: Service) -> None:
        try:
            await self._apply(service, service.state, strict=False)
        except (ApiError, DefinitionError, DataDirError, OSError) as error:
            log.error(
                "service %s: cannot serve generation(s) %s: %s", service.id, ", ".join(service.state.selected()), error
            )
            service.problem = EndpointLoadFailed(
                f"service {service.id!r} did not load when the node started: {error}; fix that, then "
                "switch generations again"
            )

    async def close(self, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        await asyncio.gather(
            *(
                generation.close(drain_timeout)
                for service in self.services.values()
                for generation in service.loaded.values()
            )
        )

    # -- admin: services ----------------------------------------------------------------------
    def admin_get(self, service_id: str) -> Service:
        """The service, enabled or not; NotFound naming the ones there are."""
        service = self.services.get(service_id)
        if service is None:
            raise NotFound(f"no service {service_id!r} on this node (its services: {listing(self.services)})")
        return service

    def create(self, service_id: str) -> Service:
        """A new service, enabled, with no generation (BadRequest, Conflict)."""
        service = self.services[service_id] = Service(service_id, self.store.create_service(service_id))
        log.info("service %s created", service_id)
        return service

    async def delete(self, service_id: str) -> None:
        async with self._changing(service_id, quarantined_too=True) as service:
            del self.services[service_id]  # requests get 404 from now on
            await self._apply(service, replace(service.state, enabled=False))  # drains, then stops
            await asyncio.to_thread(self.store.delete_service, service_id)
            self.on_delete(service_id)
        log.info("service %s deleted", service_id)

    # -- admin: generations -------------------------------------------------------------------
    def generations(self, service_id: str) -> list[str]:
        """The ids of the service's generations, oldest import first (details: `describe`)."""
        return [generation["id"] for generation in self.admin_get(service_id).generation_details()]

    async def import_generation(self, service_id: str, source: Path | bytes) -> str:
        """Import a bundle (file or bytes) as a new generation; its id. Nothing changes if it is refused."""
        async with self._changing(service_id) as service:
            definition: ServiceDef = await asyncio.to_thread(
                self.store.import_bundle, service_id, source, service.state.imported
            )
            generation = definition.generation
            assert generation is not None
            await self._save(
                service, replace(service.state, imported={**service.state.imported, generation: time.time()})
            )
        log.info("service %s: generation %s imported", service_id, generation)
        return generation

    async def preload(self, service_id: str, generation: str) -> None:
        """Load a generation and start its floor pipelines, without routing traffic to it."""
        async with self._changing(service_id) as service:
            self.check_imported(service, generation)
            if generation not in service.loaded:
                loaded = await self.load(service, generation, strict=True)
                service.serve({**service.loaded, generation: loaded})

    # -- admin: what serves -------------------------------------------------------------------
    async def switch_to(self, service_id: str, generation: str | None) -> str:
        """Serve one generation (None: the newest, chosen under the lock, so an import that
        lands meanwhile is not skipped); its id."""
        async with self._changing(service_id) as service:
            if generation is None:
                generation = service.state.newest()
                if generation is None:
                    raise NotFound(f"service {service_id!r} has no generation yet: import a bundle first")
            self.check_imported(service, generation)
            await self._apply(service, replace(service.state, enabled=True, active=generation, mapping=None))
        return generation

    async def switch_to_newest(self, service_id: str) -> str:
        return await self.switch_to(service_id, None)

    async def set_mapping(self, service_id: str, body: object) -> None:
        mapping = GenerationMapping.from_json(body)
        async with self._changing(service_id) as service:
            unknown = [generation for generation in mapping.generations if generation not in service.state.imported]
            if unknown:
                raise BadRequest(
                    f"mapping: service {service_id!r} has no generation {unknown[0]!r} "
                    f"(its generations: {listing(service.state.imported)})"
                )
            await self._apply(service, replace(service.state, enabled=True, active=None, mapping=mapping))

    async def enable(self, service_id: str) -> None:
        """Serve again; a service that selects no generation yet takes its newest one."""
        async with self._changing(service_id) as service:
            state = service.state
            if not state.selected() and state.imported:
                state = replace(state, active=state.newest())
            await self._apply(service, replace(state, enabled=True))

    async def disable(self, service_id: str) -> None:
        """Answer 404 from now on; the requests under way finish, then the pipelines stop."""
        async with self._changing(service_id) as service:
            await self._apply(service, replace(service.state, enabled=False))

    # -- the mechanics ------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _changing(self, service_id: str, quarantined_too: bool = False) -> AsyncIterator[Service]:
        """The service, locked against other changes (and still there once the lock is held);
        a quarantined one only when `quarantined_too` (its deletion)."""
        service = self.admin_get(service_id)
        if service.damaged is not None and not quarantined_too:
            raise Conflict(
                f"service {service_id!r} is quarantined: {service.damaged}; repair the file and restart "
                "the node, or delete the service"
            )
        async with service.lock:
            if self.services.get(service_id) is not service:
                raise NotFound(f"service {service_id!r} was deleted meanwhile")
            yield service

    @staticmethod
    def check_imported(service: Service, generation: str) -> None:
        if generation not in service.state.imported:
            raise NotFound(
                f"service {service.id!r} has no generation {generation!r} "
                f"(its generations: {listing(service.state.imported)})"
            )

    async def _save(self, service: Service, state: ServiceState) -> None:
        """Write the state (in a thread: it waits for the disk), then make it the service's."""
        await asyncio.to_thread(self.store.write_state, service.id, state)
        service.state = state

    async def _apply(self, service: Service, state: ServiceState, strict: bool = True) -> None:
        """Make `state` what serves: load what it selects, save it, route, retire the rest."""
        wanted = state.selected() if state.enabled else ()
        fresh: dict[str, LoadedGeneration] = {}
        try:
            for generation in wanted:
                if generation not in service.loaded:
                    fresh[generation] = await self.load(service, generation, strict)
            await self._save(service, state)
        except BaseException:
            await asyncio.gather(*(loaded.close(0) for loaded in fresh.values()))
            raise
        kept = {generation: loaded for generation, loaded in service.loaded.items() if generation in wanted}
        retired = [loaded for generation, loaded in service.loaded.items() if generation not in wanted]
        service.serve({**kept, **fresh})  # from here on, requests go to what `state` selects
        log.info("service %s: %s", service.id, f"serving {', '.join(wanted)}" if wanted else "serving nothing")
        await asyncio.gather(*(loaded.close(DRAIN_TIMEOUT) for loaded in retired))

    async def load(self, service: Service, generation: str, strict: bool) -> LoadedGeneration:
        """Load a generation and start its floor pipelines.

        Strict: any endpoint that does not load refuses the whole generation (EndpointLoadFailed).
        Otherwise such an endpoint stays failed and answers 500 with its error.
        """
        directory = self.store.generation_dir(service.id, generation)
        definition = load_service_file(directory / "service.json")
        pools = {endpoint.id: self.store.pool_settings(service.id, endpoint) for endpoint in definition.endpoints}
        interpreters = await asyncio.to_thread(self._interpreters, definition, directory)
        loaded = LoadedGeneration(definition, directory, interpreters, pools)
        failures = await loaded.start()
        if failures and strict:
            await loaded.close(0)
            failure = next(iter(failures.values()))
            raise EndpointLoadFailed(
                f"generation {generation!r} of service {service.id!r} did not load, so nothing was "
                f"switched: {failure.message} (the traceback is in the node's log)",
                failure.traceback,
            )
        return loaded

    def _interpreters(self, definition: ServiceDef, directory: Path) -> Interpreters:
        """Each endpoint's interpreter, or why its code env could not be built (that endpoint
        then fails to load, like one whose code raises). None on a Ray cluster: each Ray node
        builds the envs of the pipelines it runs (apinode.node.ray.host)."""
        interpreters: dict[str, Interpreter | EndpointLoadFailed] = {}
        if ray_cluster.connected():
            return interpreters
        for endpoint in definition.endpoints:
            try:
                interpreters[endpoint.id] = codeenv_python(self.code_envs, endpoint, directory)
            except CodeEnvError as error:
                interpreters[endpoint.id] = EndpointLoadFailed(f"{definition.id}/{endpoint.id}: {error}")
        return interpreters
