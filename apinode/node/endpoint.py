"""One endpoint of one loaded generation: its pool, and the answer it builds around a result.

The success body is assembled from bytes: the pipeline's result JSON is spliced in as it came,
so the node never parses a request or a result (the pipeline does, on its own core).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import orjson

from ..packaging.definitions import EndpointDef, PoolSettings
from ..runtime import framing
from .errors import EndpointLoadFailed
from .pipeline import PipelineSpec, ProcessPipeline
from .pool import Pool
from .stats import EndpointStats


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
        environment, or a code env's (see apinode.node.interpreters)."""
        self.service_id = service_id
        self.generation = generation
        self.definition = definition
        self.name = f"{service_id}/{definition.id}"
        spec = PipelineSpec(
            name=self.name,
            code=directory / definition.code,
            function=definition.function,
            folders=tuple(directory / folder for folder in definition.folders),
            python=python,
            cwd=directory,
            env=env,
        )
        self.description: dict[str, Any] | None = None
        """The function as its first started pipeline described it (runtime.schema), for OpenAPI."""

        async def start_pipeline() -> ProcessPipeline:
            pipeline = await ProcessPipeline.start(spec)
            if self.description is None:
                self.description = pipeline.description
            return pipeline

        self.pool = Pool(self.name, pool_settings or definition.pool, start_pipeline)
        self.stats = EndpointStats()
        self._context = orjson.dumps(
            {"serviceId": service_id, "endpointId": definition.id, "serviceGeneration": generation}
        )

    @property
    def failure(self) -> EndpointLoadFailed | None:
        """Why the endpoint's code did not load (its pool then refuses every call); None if it did."""
        return self.pool.failure

    async def run(self, body: bytes, received: float) -> tuple[int, bytes]:
        """(status, body) of the answer; raises ApiError subclasses for what the pool refuses.

        `received` is the `time.perf_counter()` at which the request arrived.
        """
        reply, waited_ms = await self.pool.run(body)
        if reply.kind != framing.RESULT:
            return reply.status, reply.payload
        total_ms = (time.perf_counter() - received) * 1000
        return 200, b'{"response":%b,"timing":{"wait":%.3f,"execution":%.3f,"total":%.3f},"apiContext":%b}' % (
            reply.payload,
            waited_ms,
            reply.execution_ms,
            total_ms,
            self._context,
        )
