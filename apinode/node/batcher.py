"""Adaptive batching of one endpoint's requests (DESIGN.md, "Function shapes").

Every request queues in the pool as any request does, so the pool's rules hold per request:
the queue bound counts requests, each has its own queue timeout, and the order is FIFO. A
request the pool hands a pipeline leads a batch: it takes along the requests queued behind it
(`Pool.claim`), up to `maxSize`, and waits for what is left of `maxWaitMs` since it arrived
for more to queue, unless the batch is already full; then the batch runs as one call whose body
packs the requests' bodies (apinode.runtime.batch). So under load a leader finds its batch
waiting in the queue and goes at once; when idle, a lone request waits at most `maxWaitMs` for
company. Each caller gets its own answer and its own wait.

Concurrency model: on the event loop. A batch runs in its own task, so that its leader's caller
going away does not stop the others' call; every member awaits its own future, shielded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..packaging.definitions import BatchSettings
from ..runtime import framing
from .errors import PipelineDied
from .pool import Pipeline, Pool
from .process import Reply


class _Member:
    """One request of a batch."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.arrived = time.perf_counter()
        self.sent_at = 0.0
        self.reply: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

    @property
    def waited_ms(self) -> float:
        return max(0.0, (self.sent_at - self.arrived) * 1000)


class Batcher:
    def __init__(self, pool: Pool, settings: BatchSettings) -> None:
        self.pool = pool
        self.settings = settings
        self._queued = asyncio.Event()  # a request joined the queue: leaders gathering look again
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, body: bytes, on_acquired: Callable[[], None] | None = None) -> tuple[Reply, float]:
        """This request's reply, and the ms it waited (in the queue and for its batch).
        `on_acquired()` once the request is in a batch: cancelling before only takes it out of
        the queue; after, its batch goes on without its caller."""
        member = _Member(body)
        self._queued.set()  # wakes a gathering leader once this request is queued (acquire's await)
        pipeline = await self.pool.acquire(member)
        if on_acquired is not None:
            on_acquired()
        if pipeline is not None:
            task = asyncio.ensure_future(self._lead(pipeline, member))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return await asyncio.shield(member.reply), member.waited_ms

    async def _lead(self, pipeline: Pipeline, leader: _Member) -> None:
        batch = [leader]
        try:
            batch += await self._gather(leader)
        except BaseException as exc:
            self.pool.release(pipeline)
            _fail(batch, exc)
            raise
        sent_at = time.perf_counter()
        for member in batch:
            member.sent_at = sent_at
        try:
            reply = await self.pool.call(pipeline, b"".join(framing.pack(framing.CALL, m.body) for m in batch))
            replies = [Reply(*frame) for frame in framing.unpack_all(reply.payload)]
            if reply.kind != framing.RESULT or len(replies) != len(batch):
                raise PipelineDied(f"{self.pool.name}: the pipeline's answer to a batch is not one per request")
        except BaseException as exc:
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for member, answer in zip(batch, replies):
            member.reply.set_result(answer)

    async def _gather(self, leader: _Member) -> list[_Member]:
        """The requests queued behind the leader, as they come, until the batch is full or
        `maxWaitMs` since the leader arrived is over."""
        gathered: list[_Member] = []
        closes = leader.arrived + self.settings.max_wait_ms / 1000
        while True:
            for rider in self.pool.claim(self.settings.max_size - 1 - len(gathered)):
                assert isinstance(rider, _Member)
                gathered.append(rider)
            left = closes - time.perf_counter()
            if len(gathered) >= self.settings.max_size - 1 or left <= 0:
                return gathered
            self._queued.clear()
            try:
                await asyncio.wait_for(self._queued.wait(), left)
            except asyncio.TimeoutError:
                pass


def _fail(batch: list[_Member], exc: BaseException) -> None:
    for member in batch:
        if not member.reply.done():
            member.reply.set_exception(exc)
            member.reply.exception()  # retrieved: a member whose caller left does not log it
