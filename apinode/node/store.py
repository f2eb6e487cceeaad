"""The node's data directory: services, their generations and state, operator config, logs.

    DIR/services/<service>/service-state.json      {"enabled", "active", "mapping", "imported"}
    DIR/services/<service>/generations/<gen>/      an extracted bundle (service.json, code, folders)
    DIR/config/admin-keys.json                     admin keys, hashed (apinode.node.keys)
    DIR/config/services/<service>/<endpoint>.json  an operator's override: {"pool": {...}}
    DIR/logs/queries/<service>.log                 the query log (apinode.node.querylog)
    DIR/tmp/                                       imports under way; emptied at start
    DIR/node.lock                                  held by the node serving DIR

`imported` maps each generation to the time it was imported: the newest generation is the one
imported last. Every state change is one atomic file write (apinode.node.jsonfile). An import
extracts into DIR/tmp, and renames the generation into place only once the whole bundle passed
every check; its state entry is written after. A crash in between leaves a generation
directory that the state does not list, which the next import of that generation replaces.

Concurrency: plain synchronous file operations. The service manager serializes the changes to one
service and runs the slow ones (imports, deletions) in a worker thread.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..packaging.bundles import BundleError, extract_bundle
from ..packaging.definitions import ID_PATTERN, DefinitionError, EndpointDef, PoolSettings, ServiceDef
from ..packaging.filelock import locked
from .errors import BadRequest, Conflict
from .jsonfile import DataDirError, fsync_directory, read_json, write_json
from .traffic import GenerationMapping

STATE_FILE = "service-state.json"


@dataclass(frozen=True)
class ServiceState:
    """What an operator decided for a service: on or off, and which generations serve."""

    enabled: bool = True
    active: str | None = None
    mapping: GenerationMapping | None = None
    imported: dict[str, float] = field(default_factory=dict)  # generation -> when it was imported (epoch s)

    def selected(self) -> tuple[str, ...]:
        """The generations that take traffic when the service is enabled."""
        if self.mapping is not None:
            return self.mapping.generations
        return () if self.active is None else (self.active,)

    def newest(self) -> str | None:
        return max(self.imported, key=self.imported.__getitem__, default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "active": self.active,
            "imported": self.imported,
            "mapping": None if self.mapping is None else self.mapping.to_json(),
        }

    @classmethod
    def from_json(cls, obj: object) -> ServiceState:
        """The state a file holds; ValueError saying which field is wrong and what was expected."""
        if not isinstance(obj, dict) or not {"enabled", "active", "imported"} <= obj.keys() <= _STATE_FIELDS:
            raise ValueError(f"expected an object with fields {', '.join(sorted(_STATE_FIELDS))}")
        enabled, active, imported = obj["enabled"], obj["active"], obj["imported"]
        if not isinstance(enabled, bool):
            raise ValueError(f"enabled: expected true or false, got {enabled!r}")
        if not isinstance(imported, dict) or not all(
            isinstance(generation, str) and ID_PATTERN.fullmatch(generation) and _is_time(at)
            for generation, at in imported.items()
        ):
            raise ValueError("imported: expected an object mapping each generation id to its import time (a number)")
        if active is not None and active not in imported:
            raise ValueError(f"active: expected null or one of the imported generations, got {active!r}")
        mapping = obj.get("mapping")
        try:
            parsed = None if mapping is None else GenerationMapping.from_json(mapping)
        except BadRequest as error:
            raise ValueError(error.message) from None
        missing = [generation for generation in parsed.generations if generation not in imported] if parsed else []
        if missing:
            raise ValueError(f"mapping: generation {missing[0]!r} is not among the imported ones")
        return cls(enabled=enabled, active=active, imported=imported, mapping=parsed)


_STATE_FIELDS = frozenset({"enabled", "active", "mapping", "imported"})


def _is_time(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class DataDir:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()  # pipelines run in generation directories: paths must not be relative
        self.services = self.root / "services"
        self.config = self.root / "config"
        self.admin_keys = self.config / "admin-keys.json"
        self.query_logs = self.root / "logs" / "queries"
        self.tmp = self.root / "tmp"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory for one node: a second node on it would corrupt its state."""
        self.root.mkdir(parents=True, exist_ok=True)
        with locked(self.root / "node.lock", wait=False) as held:
            if not held:
                raise OSError(f"{self.root}: another node is serving this data directory")
            yield

    def prepare(self) -> None:
        """Create the layout, and drop what interrupted imports and uploads left in tmp."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        for directory in (self.services, self.config, self.query_logs, self.tmp):
            directory.mkdir(parents=True, exist_ok=True)

    # -- services and their state -------------------------------------------------------------
    def service_ids(self) -> list[str]:
        return sorted(path.parent.name for path in self.services.glob(f"*/{STATE_FILE}"))

    def create_service(self, service_id: str) -> ServiceState:
        if not ID_PATTERN.fullmatch(service_id):
            raise BadRequest(f"serviceId: expected an id made of letters, digits, '_' or '-', got {service_id!r}")
        if (self.services / service_id / STATE_FILE).exists():
            raise Conflict(f"service {service_id!r} already exists on this node")
        state = ServiceState()
        self.write_state(service_id, state)
        return state

    def delete_service(self, service_id: str) -> None:
        """Remove the service's directory: state first, so a half-deleted one is not restored."""
        (self.services / service_id / STATE_FILE).unlink(missing_ok=True)
        shutil.rmtree(self.services / service_id, ignore_errors=True)

    def read_state(self, service_id: str) -> ServiceState:
        path = self.services / service_id / STATE_FILE
        try:
            return ServiceState.from_json(read_json(path))
        except ValueError as error:
            raise DataDirError(f"{path}: not a service state: {error}; repair or remove the file") from None

    def write_state(self, service_id: str, state: ServiceState) -> None:
        write_json(self.services / service_id / STATE_FILE, state.to_json())

    # -- generations --------------------------------------------------------------------------
    def generation_dir(self, service_id: str, generation: str) -> Path:
        return self.services / service_id / "generations" / generation

    def import_bundle(self, service_id: str, source: Path | bytes, imported: Collection[str]) -> ServiceDef:
        """Extract a bundle as a new generation of the service; its definition.

        Refused (BadRequest, Conflict) before anything lands in the service's directory: a bundle
        that fails any check, one of another service, a generation imported already.
        """
        staging = Path(tempfile.mkdtemp(dir=self.tmp, prefix=f"import-{service_id}-"))
        try:
            try:
                definition = extract_bundle(source, staging / "generation")
            except (BundleError, DefinitionError) as error:
                raise BadRequest(f"bundle refused, nothing was imported: {error}") from None
            generation = definition.generation
            assert generation is not None  # reading a bundle always sets it
            if definition.id != service_id:
                raise BadRequest(
                    f"bundle refused: it holds service {definition.id!r}, not {service_id!r}; import it "
                    f"into service {definition.id!r}, or build it from {service_id!r}'s source"
                )
            if generation in imported:
                raise Conflict(
                    f"service {service_id!r} already has generation {generation!r}; switch to "
                    "it, or build the bundle with another --generation"
                )
            target = self.generation_dir(service_id, generation)
            shutil.rmtree(target, ignore_errors=True)  # left by an import interrupted before its state
            target.parent.mkdir(parents=True, exist_ok=True)
            (staging / "generation").rename(target)
            fsync_directory(target.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return definition

    def install(self, service_id: str, bundle: Path | bytes) -> ServiceDef:
        """A new service serving `bundle` from the start (`apinode run`'s one-service directory)."""
        self.prepare()
        self.create_service(service_id)
        definition = self.import_bundle(service_id, bundle, ())
        generation = definition.generation
        assert generation is not None
        self.write_state(service_id, ServiceState(active=generation, imported={generation: time.time()}))
        return definition

    def pool_settings(self, service_id: str, endpoint: EndpointDef) -> PoolSettings:
        """The endpoint's pool with the operator's override applied, if there is one."""
        path = self.config / "services" / service_id / f"{endpoint.id}.json"
        try:
            override = read_json(path)
            if override is None:
                return endpoint.pool
            if not isinstance(override, dict) or override.keys() != {"pool"}:
                raise DefinitionError(f'{path}: expected {{"pool": {{"floor": ..., "ceil": ...}}}}')
            return endpoint.pool.overridden(override["pool"], f"{path}: pool")
        except (DefinitionError, DataDirError) as error:
            raise BadRequest(f"pool override refused: {error}") from None
