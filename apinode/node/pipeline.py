"""One pipeline: a process running one endpoint's code, serving one request at a time.

Spawned (`ProcessPipeline.spawn`: a fresh process that runs the endpoint's initialization) or
forked from a template (apinode.node.template, which hands over the new process's pid, channel
and output). A pipeline knows nothing of HTTP, and the pool knows nothing of processes.

Concurrency model: all methods run on the node's event loop. A plain call may be made while
another runs (the pool sends one ahead): the process reads it once it has answered the one
before, and the replies come back in order; a streamed call is never made beside another (the
pool guarantees both). The exit callback fires once, when the process has ended.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import PipelineDied
from .process import ItemSink, PipelineSpec, ProcessDied, Reply, RuntimeProcess

__all__ = ["ItemSink", "PipelineSpec", "ProcessPipeline", "Reply"]

"""Takes one streamed item (its JSON); False when the caller is gone and wants no more."""


class ProcessPipeline(RuntimeProcess):
    ready_payload: bytes | bytearray = b""
    """What the pipeline's load said of the endpoint (READY's payload); a forked pipeline has
    its template's."""

    _on_exit: Callable[[ProcessPipeline], None] | None = None
    has_exited = False

    @classmethod
    async def spawn(cls, spec: PipelineSpec) -> ProcessPipeline:
        """Start a process that loads the endpoint; EndpointLoadFailed if it does not load."""
        pipeline = cls(spec.name, *await cls.start_process(spec, template=False))
        pipeline.ready_payload = await pipeline.load(spec)
        return pipeline

    async def call(self, body: bytes, on_item: ItemSink | None = None) -> Reply:
        """Run one request; PipelineDied if the process ends (or is killed) before answering.

        With `on_item` the caller takes a stream: a generator's items go to it as they come, and
        the reply is the END (or ERROR) that closes the stream. Once `on_item` says False (the
        caller went away) the pipeline is told to close the generator, and the rest is dropped
        until that END: the pipeline is then free for the next call."""
        try:
            return await self.channel.call(body, on_item)
        except ProcessDied as exc:
            raise PipelineDied(f"{self.name}: the pipeline died while handling the request") from exc

    def set_exit_callback(self, callback: Callable[[ProcessPipeline], None]) -> None:
        self._on_exit = callback
        if self.has_exited:  # it ended between its READY and now
            callback(self)

    def exited(self) -> None:
        self.has_exited = True
        if self._on_exit is not None:
            self._on_exit(self)
