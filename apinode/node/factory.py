"""How an endpoint's pipelines come to be: forked from its template, or spawned.

With `"start": "fork"` (the default) the first pipeline asked for starts the endpoint's
template, which runs the initialization once; every pipeline after that, for the floor, a
scale-up or a replacement, is a fork of it. A template that has ended (killed, out of memory)
is started again at the next fork; the pipelines already forked serve on meanwhile. A template
that cannot fork safely (threads alive after the initialization) makes the endpoint fall back
to spawn, for good, with the reason in the log and in `fallback` (shown in the admin API).
With `"start": "spawn"` every pipeline is a fresh process that runs the initialization itself.

Concurrency model: on the event loop. Concurrent calls share one template start.
"""

from __future__ import annotations

import asyncio
import logging
import os

from .pipeline import PipelineSpec, ProcessPipeline
from .stats import PipelineCounts
from .template import ForkRefused, Template, TemplateGone

log = logging.getLogger("apinode.pool")


class PipelineFactory:
    def __init__(self, spec: PipelineSpec, start: str, counts: PipelineCounts) -> None:
        self.spec = spec
        self.start = start
        self.counts = counts
        self.fallback: str | None = None  # why this endpoint spawns although it asked to fork
        self.ready_payload: bytes | bytearray | None = None
        """What the endpoint's load said of it (READY's payload): from its template, or from
        its first spawned pipeline; None until one has loaded."""
        self._template: Template | None = None
        self._template_start: asyncio.Future[Template] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        if start == "fork" and not hasattr(os, "pidfd_open"):
            self._fall_back("this system cannot watch forked processes (pidfds need Linux 5.3 or newer)")

    async def __call__(self) -> ProcessPipeline:
        if self.start == "fork":
            try:
                pipeline = await self._fork()
            except ForkRefused as refused:
                self._fall_back(str(refused))
            else:
                self.counts.forks += 1
                return pipeline
        pipeline = await ProcessPipeline.spawn(self.spec)
        self.counts.spawns += 1
        if self.ready_payload is None:
            self.ready_payload = pipeline.ready_payload
        return pipeline

    async def _fork(self) -> ProcessPipeline:
        template = await self._live_template()
        try:
            return await template.fork()
        except TemplateGone:  # it ended just now: start another (TemplateGone again is a failed start)
            return await (await self._live_template()).fork()

    async def _live_template(self) -> Template:
        if self._template is not None and self._template.alive:
            return self._template
        if self._template_start is None:
            self._template_start = asyncio.ensure_future(self._start_template())
            self._template_start.add_done_callback(self._template_started)
        return await asyncio.shield(self._template_start)

    async def _start_template(self) -> Template:
        if self._template is not None:
            log.warning(
                "%s: its template pid %s has ended; starting another (the initialization runs again)",
                self.spec.name,
                self._template.pid,
            )
        self._template = await Template.start(self.spec)
        self.ready_payload = self._template.ready_payload
        return self._template

    def _template_started(self, future: asyncio.Future[Template]) -> None:
        self._template_start = None
        if not future.cancelled():
            future.exception()  # retrieved: each waiter gets it raised

    def _fall_back(self, reason: str) -> None:
        if self.fallback is not None:  # a concurrent fork was refused too
            return
        self.start = "spawn"
        self.fallback = reason
        log.warning(
            '%s: falling back to "start": "spawn" (each pipeline runs the initialization itself): %s. '
            'Start no thread at initialization, or set the endpoint\'s pool "start" to "spawn" to say so.',
            self.spec.name,
            reason,
        )
        template, self._template = self._template, None
        if template is not None:
            task = asyncio.ensure_future(template.stop())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Stop the template, once the pool has stopped the pipelines."""
        if self._template_start is not None:
            await asyncio.gather(self._template_start, return_exceptions=True)
        if self._template is not None:
            await self._template.stop()
        await asyncio.gather(*self._closing, return_exceptions=True)
