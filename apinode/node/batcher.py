"""Adaptive batching of one endpoint's requests (DESIGN.md, "Function shapes").

A batch opens with the request that finds none open (its leader) and takes a pipeline from
the pool as any request does, so the pool's FIFO order, ceil, queue bound and queue timeout
apply to it; requests that arrive meanwhile join it, up to `maxSize`. Once it holds a pipeline
it waits for what is left of `maxWaitMs` since it opened, unless it is already full, then runs
as one call whose body packs the requests' bodies (apinode.runtime.batch). So under load a
batch fills while it waits for a pipeline and goes at once; when idle, a lone request waits at
most `maxWaitMs` for company. Each caller gets its own answer and its own wait.

Concurrency model: on the event loop. A batch runs in its own task; its members await its
result (shielded: a member that goes away does not cancel the others' call).
"""

from __future__ import annotations

import asyncio
import time

from ..packaging.definitions import BatchSettings
from ..runtime import framing
from .errors import PipelineDied
from .pool import Pool
from .process import Reply


class _Batch:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.arrived: list[float] = []  # perf_counter of each member's arrival
        self.opened = time.perf_counter()
        self.full = asyncio.Event()
        self.sent_at = 0.0
        self.replies: asyncio.Future[list[Reply]] = asyncio.get_running_loop().create_future()


class Batcher:
    def __init__(self, pool: Pool, settings: BatchSettings) -> None:
        self.pool = pool
        self.settings = settings
        self._open: _Batch | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, body: bytes) -> tuple[Reply, float]:
        """This request's reply, and the ms it waited (in the queue and for its batch)."""
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
            task = asyncio.ensure_future(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        index = len(batch.bodies)
        batch.bodies.append(body)
        batch.arrived.append(time.perf_counter())
        if len(batch.bodies) >= self.settings.max_size:
            self._close(batch)
        replies = await asyncio.shield(batch.replies)
        return replies[index], max(0.0, (batch.sent_at - batch.arrived[index]) * 1000)

    def _close(self, batch: _Batch) -> None:
        """No one joins it any more; it goes as soon as it holds a pipeline."""
        if self._open is batch:
            self._open = None
        batch.full.set()

    async def _gathered(self, batch: _Batch) -> bytes:
        left = self.settings.max_wait_ms / 1000 - (time.perf_counter() - batch.opened)
        if left > 0 and not batch.full.is_set():
            try:
                await asyncio.wait_for(batch.full.wait(), left)
            except asyncio.TimeoutError:
                pass
        self._close(batch)
        batch.sent_at = time.perf_counter()
        return b"".join(framing.pack(framing.CALL, body) for body in batch.bodies)

    async def _run(self, batch: _Batch) -> None:
        try:
            reply, _ = await self.pool.run(lambda: self._gathered(batch))
            replies = [Reply(*frame) for frame in framing.unpack_all(reply.payload)]
            if reply.kind != framing.RESULT or len(replies) != len(batch.bodies):
                raise PipelineDied(f"{self.pool.name}: the pipeline's answer to a batch is not one per request")
        except BaseException as exc:
            self._close(batch)
            batch.replies.set_exception(exc)
            batch.replies.exception()  # retrieved: every member raises it
            if not isinstance(exc, Exception):
                raise
            return
        batch.replies.set_result(replies)
