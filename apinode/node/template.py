"""The node's side of a template (apinode.runtime.template): an endpoint's code loaded once,
and pipelines forked from it.

`Template.start` starts the process and loads the endpoint, like a spawned pipeline. `fork`
sends FORK with two descriptors (SCM_RIGHTS): the new pipeline's end of a fresh socketpair and
the write end of a fresh output pipe; the template answers with the pid, and the pipeline
says READY on its own channel. The node keeps the other ends, so a forked pipeline is, from
here on, like any other: its channel, its relayed output, its end watched through a pidfd.

Concurrency model: on the event loop; forks go one at a time (a lock), each a few milliseconds.
A template that ends stays ended (`alive` turns false); the factory starts another.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

import orjson

from ..runtime import framing
from .errors import EndpointLoadFailed
from .output import OutputSource
from .pipeline import ProcessPipeline
from .process import Channel, PipelineSpec, ProcessDied, RuntimeProcess, connect, output_pipe

FORK_READY_TIMEOUT = 30.0  # seconds a forked pipeline may take to say READY (it runs no user code)


class ForkRefused(Exception):
    """The template cannot fork safely; str() says why."""


class TemplateGone(EndpointLoadFailed):
    """The template ended before it could fork; another must be started."""


class Template(RuntimeProcess):
    role = "template"

    def __init__(
        self, spec: PipelineSpec, pid: int, ended: asyncio.Future[int | None], channel: Channel, output: OutputSource
    ) -> None:
        super().__init__(spec.name, pid, ended, channel, output)
        self.alive = True
        self.ready_payload: bytes | bytearray = b""
        self._lock = asyncio.Lock()
        # A second handle on the control socket, to send descriptors along with a frame (the
        # transport cannot); one exchange at a time, so its writes never interleave.
        self._sender = socket.socket(fileno=os.dup(channel.fileno()))

    @classmethod
    async def start(cls, spec: PipelineSpec) -> Template:
        """Start a template and run the endpoint's initialization in it (EndpointLoadFailed)."""
        template = cls(spec, *await cls.start_process(spec, template=True))
        template.ready_payload = await template.load(spec)
        return template

    async def fork(self) -> ProcessPipeline:
        """A new pipeline, forked (ForkRefused, TemplateGone, EndpointLoadFailed)."""
        ours, theirs = socket.socketpair()
        output_fd, output = output_pipe(self.name)
        try:
            pid = await self.fork_onto(theirs.fileno(), output_fd)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
            os.close(output_fd)
        pipeline = ProcessPipeline(self.name, pid, self.watch_pid(pid), await connect(ours), output)
        pipeline.ready_payload = self.ready_payload
        try:
            await asyncio.wait_for(pipeline.channel.expect(), FORK_READY_TIMEOUT)
        except (ProcessDied, asyncio.TimeoutError):
            await pipeline.kill()
            raise EndpointLoadFailed(
                f"{self.name}: a pipeline forked from its template did not start", pipeline.recent_output()
            ) from None
        return pipeline

    async def stop(self, grace: float = 5.0) -> None:
        """As any runtime process, once the second handle on its control socket is closed too:
        the template sees the end of its channel only when both are."""
        self._sender.close()
        await super().stop(grace)

    async def fork_onto(self, channel_fd: int, output_fd: int, environment: Mapping[str, str] | None = None) -> int:
        """Fork a pipeline whose channel and output are these descriptors (the caller closes its
        copies), with these environment variables set in it: its pid (ForkRefused,
        TemplateGone). A pipeline on a Ray node gets a TCP connection as its channel, and its
        reservation's GPU ids as variables (apinode.node.ray)."""
        frame = framing.pack(framing.FORK, orjson.dumps(environment) if environment else b"")
        async with self._lock:
            try:
                answer = self.channel.expect()
                if not answer.done():
                    socket.send_fds(self._sender, [frame], [channel_fd, output_fd])
                reply = await answer
            except (ProcessDied, OSError) as exc:
                raise TemplateGone(f"{self.label} is gone") from exc
        if reply.kind == framing.FORK_REFUSED:
            raise ForkRefused(bytes(reply.payload).decode("utf-8", "replace"))
        return int(reply.payload)

    def exited(self) -> None:
        self.alive = False
        self._sender.close()
