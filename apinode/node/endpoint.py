"""One endpoint of one loaded generation: its pool, and the answer it builds around a result.

The success body is assembled from bytes: the pipeline's result JSON is spliced in as it came,
so the node never parses a request or a result (the pipeline does, on its own core).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from ..packaging.definitions import EndpointDef, PoolSettings
from ..runtime import framing
from . import ray as ray_cluster
from .batcher import Batcher
from .errors import EndpointLoadFailed
from .factory import PipelineFactory
from .pipeline import ItemSink
from .pool import Pool
from .process import PipelineSpec
from .stats import EndpointStats, PipelineCounts

if TYPE_CHECKING:
    from .ray.factory import RayPipelineFactory


class Endpoint:
    def __init__(
        self,
        service_id: str,
        generation: str,
        definition: EndpointDef,
        directory: Path,
        pool_settings: PoolSettings | None = None,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
    ) -> None:
        """`python` and `env` are what its pipelines run with: the node's own interpreter and
        environment, or a code env's (see apinode.node.interpreters); on a Ray cluster each Ray
        node chooses them (apinode.node.ray.host)."""
        self.service_id = service_id
        self.generation = generation
        self.definition = definition
        self.name = f"{service_id}/{definition.id}"
        settings = pool_settings or definition.pool
        spec = PipelineSpec(
            name=self.name,
            code=directory / definition.code,
            function=definition.function,
            folders=tuple(directory / folder for folder in definition.folders),
            python=python,
            cwd=directory,
            env=env,
            max_result_bytes=settings.max_result_mb << 20,
            batch=definition.batch is not None,
        )
        self.counts = PipelineCounts()
        self.factory: PipelineFactory | RayPipelineFactory
        if ray_cluster.connected():  # --ray: its pipelines go to the cluster (apinode.node.ray)
            from .ray.factory import RayPipelineFactory

            self.factory = RayPipelineFactory(spec, self.counts, definition)
        else:
            self.factory = PipelineFactory(spec, settings.start, self.counts)
        self.pool = Pool(self.name, settings, self.factory, self.counts)
        self.batcher = None if definition.batch is None else Batcher(self.pool, definition.batch)
        self.stats = EndpointStats()
        self._description: dict[str, Any] | None = None
        self._context = orjson.dumps(
            {"serviceId": service_id, "endpointId": definition.id, "serviceGeneration": generation}
        )

    @property
    def failure(self) -> EndpointLoadFailed | None:
        """Why the endpoint's code did not load (its pool then refuses every call); None if it did."""
        return self.pool.failure

    @property
    def description(self) -> dict[str, Any] | None:
        """The function as its load described it (runtime.schema, READY's payload), for OpenAPI;
        None before it loaded, or when the runtime could not describe it."""
        payload = self.factory.ready_payload
        if not payload:
            return None
        if self._description is None:
            self._description = orjson.loads(payload)
        return self._description

    async def close(self, drain_timeout: float) -> None:
        """Let the requests under way finish (bounded), stop the pipelines, then the template."""
        await self.pool.close(drain_timeout)
        await self.factory.close()

    def describe(self) -> dict[str, Any]:
        """How its pipelines start, as the admin API shows it."""
        described: dict[str, Any] = {"start": self.factory.start, "loadFailed": self.failure is not None}
        if self.factory.fallback is not None:
            described["startFallback"] = self.factory.fallback
        if ray_cluster.connected():
            described["waitingForResources"] = self.counts.waiting_for_resources
        return described

    async def start(self) -> None:
        """Start the pool's floor (EndpointLoadFailed). On a Ray cluster, floor pipelines still
        waiting for resources do not hold it: the pool serves with those it has, and the others
        join as the cluster makes room."""
        if isinstance(self.factory, PipelineFactory):
            await self.pool.start()
        else:
            await self.factory.until_placed(self.pool.start())

    async def run(
        self,
        body: bytes,
        received: float,
        on_item: ItemSink | None = None,
        on_acquired: Callable[[], None] | None = None,
    ) -> Answer:
        """The answer; raises ApiError subclasses for what the pool refuses.

        `received` is the `time.perf_counter()` at which the request arrived. With `on_item` the
        caller takes a stream (ProcessPipeline.call): a generator's answer then ends with the
        stream's end data, `{"timing", "apiContext"}`; any other function's is the usual one.
        """
        if self.batcher is not None:  # a batched endpoint answers whole (its function returns lists)
            reply, waited_ms = await self.batcher.run(body, on_acquired)
        else:
            reply, waited_ms = await self.pool.run(body, on_item, on_acquired)
        if reply.kind not in (framing.RESULT, framing.END):
            return Answer(reply.status, bytes(reply.payload))
        total_ms = (time.perf_counter() - received) * 1000
        timing = b'"timing":{"wait":%.3f,"execution":%.3f,"total":%.3f},"apiContext":%b}' % (
            waited_ms,
            reply.execution_ms,
            total_ms,
            self._context,
        )
        if reply.kind == framing.END:
            return Answer(200, b"{" + timing, ends_stream=True)
        return Answer(200, b"".join((b'{"response":', reply.payload, b",", timing)))


class Answer(NamedTuple):
    status: int
    body: bytes
    ends_stream: bool = False  # the body is a stream's end data, its items already handed over
