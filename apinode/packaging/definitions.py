"""The service definition (service.json): its model, its validation, its canonical JSON.

Every source (a directory, a notebook, a bundle) and every consumer (the builder, the node)
goes through `parse_service`, so they all agree on what a valid service is. A bad definition is
refused with a message naming the file, the field and what was expected; unknown fields are
refused too, so that a typo never passes silently as a default.
"""

from __future__ import annotations

import enum
import json
import keyword
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
ENDPOINT_TYPE = "python-function"


class DefinitionError(ValueError):
    """A bad service definition; str() names the file, the field and what was expected, e.g.
    `service.json: endpoints[0].pool.ceil: expected an integer >= 1, got "x"`."""


class _Absent(enum.Enum):
    """Markers for a field that is not there (an enum, so copies and pickles stay identical)."""

    NO_EXPECTED = "NO_EXPECTED"
    ABSENT = "ABSENT"


NO_EXPECTED: Any = _Absent.NO_EXPECTED
"""`TestQuery.expected` when the query states no expected result (None is a valid result)."""
_ABSENT = _Absent.ABSENT


def _describe(value: object) -> str:
    """A short rendering of a rejected value, in JSON terms."""
    if value is _ABSENT:
        return "nothing (the field is missing)"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(at: str, expected: str, value: object) -> NoReturn:
    raise DefinitionError(f"{at}: expected {expected}, got {_describe(value)}")


def _object(value: object, at: str, allowed: Collection[str]) -> dict[str, Any]:
    """`value` as a JSON object holding only `allowed` keys."""
    if not isinstance(value, dict):
        _fail(at, "a JSON object", value)
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise DefinitionError(
            f"{at}: unknown field {', '.join(map(json.dumps, unknown))}; expected only {', '.join(allowed)}"
        )
    return value


def _id(value: object, at: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        _fail(at, "an id made of letters, digits, '_' or '-'", value)
    return value


def _text(value: object, at: str) -> str:
    if not isinstance(value, str) or not value:
        _fail(at, "a non-empty string", value)
    return value


def _texts(value: object, at: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        _fail(at, "a list of strings", value)
    return tuple(_text(item, f"{at}[{index}]") for index, item in enumerate(value))


def _boolean(value: object, at: str) -> bool:
    if not isinstance(value, bool):
        _fail(at, "true or false", value)
    return value


def _integer(value: object, at: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(at, f"an integer >= {minimum}", value)
    return value


def _items(value: object, at: str) -> list[Any]:
    if not isinstance(value, list):
        _fail(at, "a list", value)
    return value


_POOL_MINIMUMS = {
    "floor": 1,
    "ceil": 1,
    "cruise": 1,
    "queue": 0,
    "timeout": 1,
    "executionTimeout": 0,
    "maxRequests": 0,
    "maxMemoryMb": 0,
    "scaleDownDelay": 0,
    "maxResultMb": 1,
    "sendAheadMs": 0,
}
"""Integer pool fields as spelled in JSON, with their smallest valid value."""
START_METHODS = ("fork", "spawn")
_POOL_FIELDS = (*_POOL_MINIMUMS, "start")
_ORIGINAL_POOL_FIELDS = ("floor", "ceil", "cruise", "queue", "timeout")
"""DSS's five: always written; the others only when they differ from their defaults, so that
the canonical JSON of a service that does not use them keeps its bytes."""


@dataclass(frozen=True)
class PoolSettings:
    """How many pipelines serve an endpoint, how long requests may queue and run, and when
    pipelines are started, recycled and stopped (see DESIGN, "The pool" and "Pipelines in
    production"). Durations are milliseconds; 0 turns a limit off where the minimum is 0."""

    floor: int = 1
    ceil: int = 8
    cruise: int = 2
    queue: int = 16
    timeout_ms: int = 10000
    start: str = "fork"
    execution_timeout_ms: int = 60000
    max_requests: int = 0
    max_memory_mb: int = 0
    scale_down_delay_ms: int = 10000
    """How long a pipeline above cruise stays idle before it stops: long enough that steady
    load does not stop and restart pipelines between bursts (see README, "Pipelines")."""
    max_result_mb: int = 64
    send_ahead_ms: int = 50
    """Calls are sent ahead to busy pipelines (see README, "Calls sent ahead") while none of the
    endpoint's calls has taken this long for 2 s: above the few milliseconds a short call
    sometimes takes on a busy machine, and bounding what a call behind a slow one waits."""

    def to_json(self, complete: bool = False) -> dict[str, int | str]:
        """The "pool" object; `complete` includes the fields left at their defaults."""
        values: dict[str, int | str] = {
            "floor": self.floor,
            "ceil": self.ceil,
            "cruise": self.cruise,
            "queue": self.queue,
            "timeout": self.timeout_ms,
            "start": self.start,
            "executionTimeout": self.execution_timeout_ms,
            "maxRequests": self.max_requests,
            "maxMemoryMb": self.max_memory_mb,
            "scaleDownDelay": self.scale_down_delay_ms,
            "maxResultMb": self.max_result_mb,
            "sendAheadMs": self.send_ahead_ms,
        }
        if complete:
            return values
        defaults = _DEFAULT_POOL_JSON
        return {key: value for key, value in values.items() if key in _ORIGINAL_POOL_FIELDS or value != defaults[key]}

    @classmethod
    def from_json(cls, obj: object, where: str) -> PoolSettings:
        """Parse a "pool" object named `where` (e.g. `svc.json: endpoints[0].pool`).

        Missing fields take their defaults, moved as little as needed to fit the given ones
        (`{"ceil": 1}` alone means floor = cruise = 1); given fields that contradict each other
        are refused.
        """
        fields = _object(obj, where, _POOL_FIELDS)
        given = {
            key: _integer(value, f"{where}.{key}", _POOL_MINIMUMS[key])
            for key, value in fields.items()
            if key != "start"
        }
        start = fields.get("start", "fork")
        if start not in START_METHODS:
            _fail(f"{where}.start", " or ".join(json.dumps(method) for method in START_METHODS), start)
        default = cls()
        floor_given = given.get("floor", 0)
        ceil = given.get("ceil", max(default.ceil, floor_given, given.get("cruise", 0)))
        cruise = given.get("cruise", min(max(default.cruise, floor_given), ceil))
        floor = given.get("floor", min(default.floor, cruise))
        if not floor <= cruise <= ceil:
            raise DefinitionError(
                f"{where}: expected floor <= cruise <= ceil, got floor {floor}, cruise {cruise}, ceil {ceil}"
            )
        return cls(
            floor,
            ceil,
            cruise,
            given.get("queue", default.queue),
            given.get("timeout", default.timeout_ms),
            start,
            given.get("executionTimeout", default.execution_timeout_ms),
            given.get("maxRequests", default.max_requests),
            given.get("maxMemoryMb", default.max_memory_mb),
            given.get("scaleDownDelay", default.scale_down_delay_ms),
            given.get("maxResultMb", default.max_result_mb),
            given.get("sendAheadMs", default.send_ahead_ms),
        )

    def overridden(self, obj: object, where: str) -> PoolSettings:
        """These settings with an operator's override applied (the merged result is validated)."""
        override = _object(obj, where, _POOL_FIELDS)
        return PoolSettings.from_json({**self.to_json(complete=True), **override}, where)


_DEFAULT_POOL_JSON = PoolSettings().to_json(complete=True)


@dataclass(frozen=True)
class TestQuery:
    """A named example call of an endpoint, optionally with the result it must give."""

    __test__ = False  # not a pytest test class, despite the name

    name: str
    query: dict[str, Any]
    expected: Any = NO_EXPECTED

    @property
    def has_expected(self) -> bool:
        return self.expected is not NO_EXPECTED

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "query": self.query}
        if self.has_expected:
            out["expected"] = self.expected
        return out

    @classmethod
    def from_json(cls, obj: object, where: str) -> TestQuery:
        obj = _object(obj, where, ("name", "query", "expected"))
        query = obj.get("query", _ABSENT)
        if not isinstance(query, dict):
            _fail(f"{where}.query", "a JSON object (the function's arguments)", query)
        return cls(_text(obj.get("name", _ABSENT), f"{where}.name"), query, obj.get("expected", NO_EXPECTED))


def parse_test_queries(obj: object, where: str) -> tuple[TestQuery, ...]:
    """Parse a list of test queries (service.json's `testQueries`, a notebook cell's body)."""
    return tuple(TestQuery.from_json(item, f"{where}[{index}]") for index, item in enumerate(_items(obj, where)))


@dataclass(frozen=True)
class CodeEnv:
    """The virtualenv an endpoint runs in, as pip requirements.

    `wheelhouse`, when set, is a folder (relative like the endpoint's folders) of wheels that
    holds every requirement: the env is then built from it alone, without a package index.
    """

    requirements: tuple[str, ...]
    wheelhouse: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"requirements": list(self.requirements)}
        if self.wheelhouse is not None:
            out["wheelhouse"] = self.wheelhouse
        return out

    @classmethod
    def from_json(cls, obj: object, where: str) -> CodeEnv:
        obj = _object(obj, where, ("requirements", "wheelhouse"))
        requirements = _texts(obj.get("requirements", _ABSENT), f"{where}.requirements")
        for index, requirement in enumerate(requirements):
            # Requirements become installer arguments, where an option ("--index-url ...",
            # "-r file") would change how everything is installed.
            if requirement.lstrip().startswith("-"):
                _fail(
                    f"{where}.requirements[{index}]",
                    "a requirement (a name with optional version, or a URL), not an option",
                    requirement,
                )
        wheelhouse = obj.get("wheelhouse")
        return cls(requirements, None if wheelhouse is None else _text(wheelhouse, f"{where}.wheelhouse"))


_BATCH_KEYS = ("maxSize", "maxWaitMs")


@dataclass(frozen=True)
class BatchSettings:
    """An endpoint called with lists (DESIGN.md, "Function shapes"): up to `max_size` queued
    requests gathered within `max_wait_ms` make one call."""

    max_size: int
    max_wait_ms: int

    @classmethod
    def from_json(cls, obj: object, where: str) -> BatchSettings:
        obj = _object(obj, where, _BATCH_KEYS)
        return cls(
            _integer(obj.get("maxSize", _ABSENT), f"{where}.maxSize", 1),
            _integer(obj.get("maxWaitMs", _ABSENT), f"{where}.maxWaitMs", 0),
        )

    def to_json(self) -> dict[str, Any]:
        return {"maxSize": self.max_size, "maxWaitMs": self.max_wait_ms}


_RESOURCE_FIELDS = ("cpus", "gpus", "memoryMb", "custom")


def _amount(value: object, at: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        _fail(at, "a number >= 0", value)
    return float(value)


@dataclass(frozen=True)
class Resources:
    """What each pipeline of an endpoint reserves on a Ray cluster (`--ray`; see DESIGN, "Past
    one machine"); a local node ignores it. `custom` names Ray custom resources."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_mb: int = 0
    custom: tuple[tuple[str, float], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "gpus": self.gpus, "memoryMb": self.memory_mb, "custom": dict(self.custom)}

    @classmethod
    def from_json(cls, obj: object, where: str) -> Resources:
        fields = _object(obj, where, _RESOURCE_FIELDS)
        custom = fields.get("custom", {})
        if not isinstance(custom, dict) or not all(name and isinstance(name, str) for name in custom):
            _fail(f"{where}.custom", 'a JSON object of Ray custom resources, e.g. {"w1": 1}', custom)
        return cls(
            cpus=_amount(fields.get("cpus", 1), f"{where}.cpus"),
            gpus=_amount(fields.get("gpus", 0), f"{where}.gpus"),
            memory_mb=_integer(fields.get("memoryMb", 0), f"{where}.memoryMb", 0),
            custom=tuple((name, _amount(amount, f"{where}.custom.{name}")) for name, amount in sorted(custom.items())),
        )


_ENDPOINT_KEYS = ("id", "type", "code", "function", "folders", "codeEnv", "pool", "resources", "testQueries", "batch")


@dataclass(frozen=True)
class EndpointDef:
    """One exposed function; `code` and `folders` are paths relative to the service's base."""

    id: str
    code: str
    function: str
    folders: tuple[str, ...] = ()
    code_env: CodeEnv | None = None
    pool: PoolSettings = PoolSettings()
    resources: Resources = Resources()
    test_queries: tuple[TestQuery, ...] = ()
    type: str = ENDPOINT_TYPE
    batch: BatchSettings | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "type": self.type,
            "code": self.code,
            "function": self.function,
            "folders": list(self.folders),
            "pool": self.pool.to_json(),
            "testQueries": [query.to_json() for query in self.test_queries],
        }
        if self.code_env is not None:
            out["codeEnv"] = self.code_env.to_json()
        if self.resources != Resources():  # the canonical JSON of a service without them keeps its bytes
            out["resources"] = self.resources.to_json()
        if self.batch is not None:
            out["batch"] = self.batch.to_json()
        return out

    @classmethod
    def from_json(cls, obj: object, where: str) -> EndpointDef:
        obj = _object(obj, where, _ENDPOINT_KEYS)
        endpoint_id = _id(obj.get("id", _ABSENT), f"{where}.id")
        kind = obj.get("type", ENDPOINT_TYPE)
        if kind != ENDPOINT_TYPE:
            _fail(f"{where}.type", json.dumps(ENDPOINT_TYPE), kind)
        code = _text(obj.get("code", _ABSENT), f"{where}.code")
        function = obj.get("function", _ABSENT)
        if not isinstance(function, str) or not is_function_name(function):
            _fail(f"{where}.function", "the name of a Python function", function)
        code_env = obj.get("codeEnv")
        batch = obj.get("batch")
        return cls(
            id=endpoint_id,
            code=code,
            function=function,
            folders=_texts(obj.get("folders", []), f"{where}.folders"),
            code_env=None if code_env is None else CodeEnv.from_json(code_env, f"{where}.codeEnv"),
            pool=PoolSettings.from_json(obj.get("pool", {}), f"{where}.pool"),
            resources=Resources.from_json(obj.get("resources", {}), f"{where}.resources"),
            test_queries=parse_test_queries(obj.get("testQueries", []), f"{where}.testQueries"),
            type=kind,
            batch=None if batch is None else BatchSettings.from_json(batch, f"{where}.batch"),
        )


def is_function_name(name: str) -> bool:
    """Whether `name` can name a Python function (`def name(...)`)."""
    return name.isidentifier() and not keyword.iskeyword(name)


@dataclass(frozen=True)
class ServiceDef:
    """A service: its endpoints, who may call it, and (once built) its generation id."""

    id: str
    endpoints: tuple[EndpointDef, ...]
    public_access: bool = True
    api_keys: tuple[str, ...] = ()
    generation: str | None = None
    log_query_parameters: bool = False  # whether the node's query log keeps request bodies

    def endpoint(self, endpoint_id: str) -> EndpointDef:
        for endpoint in self.endpoints:
            if endpoint.id == endpoint_id:
                return endpoint
        raise KeyError(f"service {self.id!r} has no endpoint {endpoint_id!r}")

    def to_json(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "publicAccess": self.public_access,
            "apiKeys": list(self.api_keys),
            "endpoints": [endpoint.to_json() for endpoint in self.endpoints],
        }
        if self.generation is not None:
            out["generation"] = self.generation
        if self.log_query_parameters:  # written only when set, so older bundles keep their bytes
            out["logQueryParameters"] = True
        return out


_SERVICE_KEYS = ("id", "publicAccess", "apiKeys", "endpoints", "generation", "logQueryParameters")


def parse_service(obj: object, source: str) -> ServiceDef:
    """Validate a decoded service.json; `source` names the file in error messages."""
    obj = _object(obj, source, _SERVICE_KEYS)
    service_id = _id(obj.get("id", _ABSENT), f"{source}: id")
    public = _boolean(obj.get("publicAccess", True), f"{source}: publicAccess")
    keys = _texts(obj.get("apiKeys", []), f"{source}: apiKeys")
    for index, key in enumerate(keys):
        if ":" in key:  # HTTP Basic cannot carry it as a user name
            _fail(f"{source}: apiKeys[{index}]", "a key without ':'", key)
    items = _items(obj.get("endpoints", _ABSENT), f"{source}: endpoints")
    if not items:
        _fail(f"{source}: endpoints", "at least one endpoint", items)
    endpoints = tuple(EndpointDef.from_json(item, f"{source}: endpoints[{index}]") for index, item in enumerate(items))
    seen: set[str] = set()
    for index, endpoint in enumerate(endpoints):
        if endpoint.id in seen:
            _fail(f"{source}: endpoints[{index}].id", "an id unique in the service", endpoint.id)
        seen.add(endpoint.id)
    generation = obj.get("generation")
    return ServiceDef(
        id=service_id,
        endpoints=endpoints,
        public_access=public,
        api_keys=keys,
        generation=None if generation is None else _id(generation, f"{source}: generation"),
        log_query_parameters=_boolean(obj.get("logQueryParameters", False), f"{source}: logQueryParameters"),
    )


def parse_json(data: str | bytes, where: str) -> object:
    """Decode JSON text, refusing bad input with its position."""
    try:
        return json.loads(data)
    except json.JSONDecodeError as error:
        raise DefinitionError(
            f"{where}: not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    except UnicodeDecodeError:
        raise DefinitionError(f"{where}: not UTF-8 text") from None


def load_service_file(path: Path) -> ServiceDef:
    """Read and validate a service.json file."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DefinitionError(f"{path}: cannot read: {error.strerror}") from error
    return parse_service(parse_json(data, str(path)), str(path))


def dump_service(definition: ServiceDef) -> bytes:
    """The canonical service.json: sorted keys, indent 2, trailing newline (same in, same out)."""
    return (json.dumps(definition.to_json(), sort_keys=True, indent=2) + "\n").encode()
