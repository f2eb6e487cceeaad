"""The pool of one endpoint: a small state machine over a pipeline factory.

Semantics (DESIGN.md, "The pool"):
- `floor` pipelines are started by `start()`, and the pool never runs fewer;
- a request takes an idle pipeline; if none is idle and fewer than `ceil` exist, one more is
  started for it; otherwise it waits in a FIFO queue;
- at most `queue` requests wait beyond the pipelines being started; one more is refused at once
  (QueueFull), and a request waiting longer than `timeout` ms is refused then (QueueTimeout);
- a pipeline that comes free with nobody waiting is stopped if there are more than `cruise`;
- a pipeline that dies fails its request (PipelineDied) and is replaced up to the floor;
- a pipeline that fails to load marks the whole pool failed with that error: requests fail
  with it and nothing is respawned in a loop.

Concurrency model: every method runs on the event loop's thread, so the state needs no locks;
state changes happen only between awaits. Pipelines are handed to waiters through futures.
The pool never sees HTTP and never sees a process: anything with `call`, `stop` and
`set_exit_callback` is a pipeline.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..packaging.definitions import PoolSettings
from .errors import EndpointLoadFailed, PipelineDied, PoolClosed, QueueFull, QueueTimeout
from .pipeline import Reply

log = logging.getLogger("apinode.pool")


class Pipeline(Protocol):
    """What the pool needs of a pipeline, wherever its process runs."""

    async def call(self, body: bytes) -> Reply: ...
    async def stop(self) -> None: ...
    def set_exit_callback(self, callback: Callable[[Pipeline], None]) -> None: ...


class Pool:
    def __init__(self, name: str, settings: PoolSettings, factory: Callable[[], Awaitable[Pipeline]]) -> None:
        self.name = name
        self.settings = settings
        self._factory = factory
        self._idle: list[Pipeline] = []
        self._busy: set[Pipeline] = set()
        self._starting = 0
        # (deadline, future) in arrival order: with one timeout per pool, deadlines are sorted
        # too, so a single timer on the head of the queue expires every waiter in time.
        self._waiters: collections.deque[tuple[float, asyncio.Future[Pipeline]]] = collections.deque()
        self._expiry: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.failure: EndpointLoadFailed | None = None
        self._closing = False
        self._drained = asyncio.Event()
        self.rejected = 0  # requests refused with QueueFull or QueueTimeout

    # -- what callers and metrics see -------------------------------------------------------
    @property
    def size(self) -> int:
        """Pipelines alive or being started."""
        return len(self._idle) + len(self._busy) + self._starting

    @property
    def busy(self) -> int:
        return len(self._busy)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def start(self) -> None:
        """Start the floor; raises EndpointLoadFailed (and stays failed) if the code does not load."""
        if self.failure is not None:
            raise self.failure
        await asyncio.gather(*(self._spawn() for _ in range(self.settings.floor)))
        if self.failure is not None:
            raise self.failure

    async def run(self, body: bytes) -> tuple[Reply, float]:
        """Run one request on a pipeline: (reply, ms spent waiting for the pipeline)."""
        queued_at = time.perf_counter()
        pipeline = await self._acquire()
        waited_ms = (time.perf_counter() - queued_at) * 1000
        try:
            reply = await pipeline.call(body)
        except PipelineDied:
            self._forget(pipeline)
            raise
        except BaseException:
            # Cancelled mid-call: the channel may hold a late reply, so this pipeline cannot
            # serve anyone else.
            self._forget(pipeline)
            self._track(pipeline.stop())
            raise
        self._offer(pipeline)
        return reply, waited_ms

    async def close(self, drain_timeout: float = 30.0) -> None:
        """Refuse new requests, let queued and running ones finish (bounded), stop every pipeline."""
        self._closing = True
        self._drained.clear()
        if self._busy or self._waiters:
            try:
                await asyncio.wait_for(self._drained.wait(), drain_timeout)
            except asyncio.TimeoutError:
                log.warning(
                    "%s: %d requests still running after %ss; stopping anyway",
                    self.name,
                    len(self._busy),
                    drain_timeout,
                )
        self._reject_waiters(PoolClosed(f"{self.name} is stopping"))
        pipelines = self._idle + list(self._busy)
        self._idle.clear()
        self._busy.clear()
        await asyncio.gather(*(pipeline.stop() for pipeline in pipelines), return_exceptions=True)
        while self._tasks:  # a pipeline that finished starting meanwhile is stopped by a new task
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the state machine -----------------------------------------------------------------
    async def _acquire(self) -> Pipeline:
        if self.failure is not None:
            raise self.failure
        if self._closing:
            raise PoolClosed(f"{self.name} is stopping")
        if self._idle and not self._waiters:
            pipeline = self._idle.pop()
            self._busy.add(pipeline)
            return pipeline
        if self.size < self.settings.ceil and len(self._waiters) >= self._starting:
            self._spawn()
        if len(self._waiters) >= self._starting + self.settings.queue:
            self.rejected += 1
            raise QueueFull(
                f"{self.name}: all {self.size} pipelines are busy and the queue is full ({self.settings.queue} waiting)"
            )
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Pipeline] = loop.create_future()
        deadline = loop.time() + self.settings.timeout_ms / 1000
        self._waiters.append((deadline, waiter))
        if self._expiry is None:
            self._expiry = loop.call_at(deadline, self._expire_waiters)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._offer(waiter.result())  # handed over just as the caller went away
            else:
                self._remove_waiter(waiter)
            raise

    def _expire_waiters(self) -> None:
        """Refuse the waiters whose deadline passed; re-arm the timer for the next one."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._waiters:
            deadline, waiter = self._waiters[0]
            if not waiter.done() and deadline > now:
                self._expiry = loop.call_at(deadline, self._expire_waiters)
                break
            self._waiters.popleft()
            if not waiter.done():
                self.rejected += 1
                waiter.set_exception(
                    QueueTimeout(f"{self.name}: waited {self.settings.timeout_ms} ms in the queue for a free pipeline")
                )
        self._check_drained()

    def _remove_waiter(self, waiter: asyncio.Future[Pipeline]) -> None:
        for entry in self._waiters:
            if entry[1] is waiter:
                self._waiters.remove(entry)
                break
        self._check_drained()

    def _offer(self, pipeline: Pipeline) -> None:
        """A pipeline is free (just started or done with a request): first waiter first."""
        self._busy.discard(pipeline)
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                self._busy.add(pipeline)
                waiter.set_result(pipeline)
                return
        if self._closing or self.size + 1 > self.settings.cruise:
            self._track(pipeline.stop())
        else:
            self._idle.append(pipeline)
        self._check_drained()

    def _forget(self, pipeline: Pipeline) -> None:
        """A pipeline is gone (died or stopped): never hand it out again; refill to the floor."""
        self._busy.discard(pipeline)
        if pipeline in self._idle:
            self._idle.remove(pipeline)
        self._replenish()
        self._check_drained()

    def _replenish(self) -> None:
        if self._closing or self.failure is not None:
            return
        while self.size < self.settings.floor or (
            self.size < self.settings.ceil and len(self._waiters) > self._starting
        ):
            self._spawn()

    def _spawn(self) -> asyncio.Task[None]:
        """Start one pipeline; counted as starting from this very moment."""
        self._starting += 1
        task = asyncio.ensure_future(self._start_one())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _start_one(self) -> None:
        try:
            pipeline = await self._factory()
        except EndpointLoadFailed as exc:
            self._starting -= 1
            self.fail(exc)
            return
        except Exception as exc:  # a bug starting processes must not hang the waiters
            self._starting -= 1
            log.exception("%s: starting a pipeline failed", self.name)
            self.fail(EndpointLoadFailed(f"{self.name}: starting a pipeline failed: {exc}"))
            return
        self._starting -= 1
        if self.failure is not None:
            self._track(pipeline.stop())
            return
        pipeline.set_exit_callback(self._forget)
        self._offer(pipeline)

    def fail(self, failure: EndpointLoadFailed) -> None:
        """Mark the endpoint failed to load: its requests fail with this, nothing is respawned."""
        if self.failure is None:
            log.error("%s failed to load: %s\n%s", self.name, failure.message, failure.traceback)
            self.failure = failure
        self._reject_waiters(failure)
        idle, self._idle = self._idle, []
        for pipeline in idle:
            self._track(pipeline.stop())
        self._check_drained()

    def _reject_waiters(self, error: Exception) -> None:
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def _check_drained(self) -> None:
        if not self._busy and not self._waiters:
            self._drained.set()

    def _track(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
