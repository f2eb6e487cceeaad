"""Which loaded generation of a service answers a request: the active one, or a mapping's pick.

A mapping splits traffic between generations,
`{"entries": [{"generation": "g1", "proba": 0.7}, {"generation": "g2", "proba": 0.3}],
"hashBased": false}`: each request draws a generation with those probabilities, or, when
`hashBased` is true, a stable hash of the request's dispatch key chooses, so that one key
always lands on the same generation. A body may carry `"dispatch": {"forcedGeneration": "g2"}`
(any loaded generation, preloaded ones included) or `"dispatch": {"dispatchKey": "customer-42"}`,
as dataikuapi's clients send them; the pipeline drops that attribute before binding.

Cost: the node does not parse bodies on the hot path. A split whose only loaded generation is
the active one returns it without looking at the body; otherwise it looks for the bytes
`"dispatch"` and parses the body only when they are there.

Concurrency: a TrafficSplit is immutable. A switch builds a new one and replaces the service's
reference to it, so every request sees either the old routing or the new one, never a mix.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ..packaging.definitions import ID_PATTERN
from .errors import BadRequest, NotFound, listing

if TYPE_CHECKING:
    from .services import LoadedGeneration

_PROBABILITY_SLACK = 1e-6  # how far from 1 the probabilities may add up (decimal rounding)


@dataclass(frozen=True)
class GenerationMapping:
    """Traffic split between generations: (generation, probability) pairs adding up to 1."""

    entries: tuple[tuple[str, float], ...]
    hash_based: bool = False

    @property
    def generations(self) -> tuple[str, ...]:
        return tuple(generation for generation, _ in self.entries)

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": [{"generation": generation, "proba": proba} for generation, proba in self.entries],
            "hashBased": self.hash_based,
        }

    @classmethod
    def from_json(cls, value: object) -> GenerationMapping:
        """Parse a setMapping body; BadRequest saying what is wrong and what was expected."""
        expected = (
            'expected {"entries": [{"generation": "g1", "proba": 0.7}, '
            '{"generation": "g2", "proba": 0.3}], "hashBased": false}'
        )
        if not isinstance(value, dict) or not value.keys() <= {"entries", "hashBased"}:
            raise BadRequest(f"mapping: {expected}")
        items = value.get("entries")
        hash_based = value.get("hashBased", False)
        if not isinstance(items, list) or not items or not isinstance(hash_based, bool):
            raise BadRequest(f"mapping: {expected}")
        entries = tuple(_entry(item, index) for index, item in enumerate(items))
        generations = [generation for generation, _ in entries]
        if len(set(generations)) != len(generations):
            raise BadRequest("mapping: a generation appears in more than one entry; give each once")
        total = math.fsum(proba for _, proba in entries)
        if abs(total - 1) > _PROBABILITY_SLACK:
            raise BadRequest(f"mapping: the probabilities add up to {total:g}; they must add up to 1")
        return cls(entries, hash_based)


def _entry(item: object, index: int) -> tuple[str, float]:
    where = f"mapping: entries[{index}]"
    if not isinstance(item, dict) or item.keys() != {"generation", "proba"}:
        raise BadRequest(f'{where}: expected {{"generation": "<id>", "proba": <number between 0 and 1>}}')
    generation, proba = item["generation"], item["proba"]
    if not isinstance(generation, str) or not ID_PATTERN.fullmatch(generation):
        raise BadRequest(f"{where}.generation: expected a generation id, got {generation!r}")
    if isinstance(proba, bool) or not isinstance(proba, (int, float)) or not 0 <= proba <= 1:
        raise BadRequest(f"{where}.proba: expected a number between 0 and 1, got {proba!r}")
    return generation, float(proba)


def _dispatch(body: bytes) -> dict[str, Any]:
    """The body's `dispatch` object, or {} (also for a body that is not JSON: the pipeline says so)."""
    if b'"dispatch"' not in body:
        return {}
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    dispatch = request.get("dispatch") if isinstance(request, dict) else None
    return dispatch if isinstance(dispatch, dict) else {}


class TrafficSplit:
    def __init__(
        self,
        service_id: str,
        loaded: Mapping[str, LoadedGeneration],
        active: str | None = None,
        mapping: GenerationMapping | None = None,
    ) -> None:
        """`loaded` holds every loaded generation; `active` or `mapping` (all loaded) selects."""
        self._service_id = service_id
        self._loaded = dict(loaded)
        if mapping is not None:
            self._targets = tuple(self._loaded[generation] for generation in mapping.generations)
            self._bounds = tuple(itertools.accumulate(proba for _, proba in mapping.entries))
            self._hash_based = mapping.hash_based
        else:
            self._targets = () if active is None else (self._loaded[active],)
            self._bounds, self._hash_based = (), False
        self._only = self._targets[0] if len(self._targets) == 1 and len(self._loaded) == 1 else None

    def pick(self, body: bytes) -> LoadedGeneration | None:
        """The generation for this request; None when the service selects none."""
        if self._only is not None:
            return self._only
        dispatch = _dispatch(body)
        forced = dispatch.get("forcedGeneration")
        if forced is not None:
            return self._forced(forced)
        if len(self._targets) <= 1:
            return self._targets[0] if self._targets else None
        key = dispatch.get("dispatchKey")
        if self._hash_based and key is not None:
            point = zlib.crc32(str(key).encode()) / 2**32
        else:
            point = random.random()
        return self._targets[min(bisect.bisect_right(self._bounds, point), len(self._targets) - 1)]

    def _forced(self, generation: object) -> LoadedGeneration:
        loaded = self._loaded.get(generation) if isinstance(generation, str) else None
        if loaded is None:
            raise NotFound(
                f"dispatch.forcedGeneration: generation {generation!r} of service {self._service_id!r} "
                f"is not loaded on this node (loaded: {listing(self._loaded)}); "
                "switch to it, map it or preload it first"
            )
        return loaded
