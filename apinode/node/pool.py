"""The pool of one endpoint: a small state machine over a pipeline factory.

Semantics (DESIGN.md, "The pool" and "Pipelines in production"):
- `floor` pipelines are started by `start()`, and the pool never runs fewer;
- a request takes an idle pipeline (the one used last, so that the others stay idle and can
  be stopped); if none is idle and fewer than `ceil` exist, one more is started for it;
  otherwise it waits in a FIFO queue;
- at most `queue` requests wait beyond the pipelines being started; one more is refused at once
  (QueueFull), and a request waiting longer than `timeout` ms is refused then (QueueTimeout);
- a call running longer than `executionTimeout` ms is answered ExecutionTimeout (504); its
  pipeline is killed and another started in its place;
- at ceil, with every pipeline busy, a plain call (neither streamed nor batched) is sent ahead:
  it waits in the socket of a busy pipeline, behind the call running there, instead of in the
  queue, so that the pipeline starts it without waiting for the node to read the answer before
  it and send the next (a round trip through the scheduler, which on a busy machine is a large
  part of a short call). Only while none of the endpoint's calls has taken `sendAheadMs` or
  more for QUIET_FOR seconds (as the node sees them, send to answer: one slow call among short
  ones would hold up the call behind it), and only behind a call that has run for less than
  that (a longer one may be stuck); queued requests go first, in order. A call sent ahead still
  counts as waiting (the queue's bound, `queued`), but it can no longer be refused at its queue
  deadline, so only pools whose queue timeout is AHEAD_MIN_TIMEOUT_MS or more send any; its
  executionTimeout runs from its own start; if its pipeline dies, is killed or stopped before
  its turn, it goes back to the head of the queue with the deadline it had;
- a pipeline that has served `maxRequests` requests (plus up to 10% jitter, so that pipelines
  started together do not retire together), or whose memory exceeds `maxMemoryMb` after a
  request, is recycled: its replacement is started, and it stops without serving again;
- a pipeline above `cruise` that has been idle for `scaleDownDelay` ms is stopped;
- a pipeline that dies fails its request (PipelineDied) and is replaced up to the floor;
- a batched endpoint's request that holds a pipeline takes along requests queued behind it
  (`claim`, apinode.node.batcher): batches form from the FIFO queue, so every rule above
  holds per request;
- the first start decides whether the endpoint loads: code that fails then marks the whole
  pool failed with that error (requests fail with it, nothing is respawned in a loop). A start
  that fails later (a transient error in the initialization, no file descriptors left) is
  retried with backoff while the live pipelines serve.

Concurrency model: every method runs on the event loop's thread, so the state needs no locks;
state changes happen only between awaits. Pipelines are handed to waiters through futures.
Timers (queue expiry, execution deadlines, scale-down, retries) are loop callbacks. The pool
never sees HTTP and never sees a process: anything with the `Pipeline` methods is a pipeline.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple, Protocol

from ..packaging.definitions import PoolSettings
from .errors import EndpointLoadFailed, ExecutionTimeout, PipelineDied, PoolClosed, QueueFull, QueueTimeout
from .pipeline import ItemSink
from .process import Reply
from .stats import PipelineCounts

log = logging.getLogger("apinode.pool")

RETRY_FIRST = 0.5  # seconds before a failed start is retried; doubled at each failure
RETRY_MAX = 30.0
JITTER = 0.1  # maxRequests is stretched by up to this fraction, per pipeline


class Pipeline(Protocol):
    """What the pool needs of a pipeline, wherever its process runs."""

    async def call(self, body: bytes, on_item: ItemSink | None = None) -> Reply:
        """One call's reply; a plain call made while another runs is answered after it."""

    async def stop(self) -> None: ...
    async def kill(self) -> None: ...
    def memory_mb(self) -> float: ...
    def set_exit_callback(self, callback: Callable[[Pipeline], None]) -> None:
        """`callback(pipeline)` once it has ended; at once if it has ended already."""


class _Waiter(NamedTuple):
    deadline: float  # loop time
    future: asyncio.Future[Pipeline | None]
    rider: object  # what a batch takes along when it claims this request (Pool.claim)
    plain: bool  # a plain call, which may be sent ahead (Pool.run)


QUIET_FOR = 2.0
"""Seconds without a slow plain call (`sendAheadMs` or more) before an endpoint sends calls
ahead: one whose calls are sometimes slow, even a few in a thousand, sends none (in
bench_send_ahead.py, sending ahead behind 200 ms calls among 0.3 ms ones took the short calls'
p99 from 10 ms to 115 ms)."""
AHEAD_MIN_TIMEOUT_MS = 5000
"""The shortest queue timeout of a pool that sends calls ahead: a call waiting in a pipeline's
socket goes when the call before it answers, and cannot be refused at its queue deadline; an
operator who sets a shorter timeout wants that prompt refusal."""


class Pool:
    def __init__(
        self,
        name: str,
        settings: PoolSettings,
        factory: Callable[[], Awaitable[Pipeline]],
        counts: PipelineCounts | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.counts = counts or PipelineCounts()
        self._factory = factory
        self._idle: dict[Pipeline, float] = {}  # idle pipelines, by when they came free, oldest first
        self._busy: set[Pipeline] = set()
        self._served: dict[Pipeline, tuple[int, int]] = {}  # requests served, and the limit drawn
        self._timed_out: set[Pipeline] = set()
        # Calls sent ahead (see the module's docstring). A pipeline is running a call when it is
        # in _running; a plain call's start (perf_counter) is in _since, in the order they
        # started. _promised: handed to a request as its call ahead, not yet sent; _behind: the
        # call sent ahead (its token), waiting for the one before it to answer.
        self._running: set[Pipeline] = set()
        self._since: dict[Pipeline, float] = {}
        self._promised: set[Pipeline] = set()
        self._behind: dict[Pipeline, object] = {}
        self._quiet_since: float | None = None  # no plain call answered since then was slow
        self.quiet_for = QUIET_FOR
        # calls running under an executionTimeout: when each runs out (loop time), by pipeline;
        # one timer for them all, at the earliest (a timer per call costs more than the call's
        # whole bookkeeping)
        self._deadlines: dict[Pipeline, float] = {}
        self._execution_timer: asyncio.TimerHandle | None = None
        self._starting = 0
        # In arrival order: with one timeout per pool, deadlines are sorted too, so a single
        # timer on the head of the queue expires every waiter in time.
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._expiry: asyncio.TimerHandle | None = None
        self._scale_down: asyncio.TimerHandle | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._retry_delay = RETRY_FIRST
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.failure: EndpointLoadFailed | None = None
        self._loaded = False  # a pipeline started once: later start failures are retried
        self._closing = False
        self._drained = asyncio.Event()
        self.rejected = 0  # requests refused with QueueFull or QueueTimeout

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, looked up once: on Python 3.11 each lookup is a getpid() system
        call, and a call arms its executionTimeout and frees its pipeline on it."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

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
        """Requests waiting: in the queue, and sent ahead to a busy pipeline (or about to be)."""
        return len(self._waiters) + len(self._behind) + len(self._promised)

    async def start(self) -> None:
        """Start the floor; raises EndpointLoadFailed (and stays failed) if the code does not load."""
        if self.failure is not None:
            raise self.failure
        await asyncio.gather(*(self._spawn() for _ in range(self.settings.floor)))
        if self.failure is not None:
            raise self.failure

    async def run(
        self, body: bytes, on_item: ItemSink | None = None, on_acquired: Callable[[], None] | None = None
    ) -> tuple[Reply, float]:
        """Run one request on a pipeline: (reply, ms spent waiting for the pipeline). A streamed
        call (`on_item`, see ProcessPipeline.call) holds its pipeline, and its executionTimeout
        runs, until the stream ends. `on_acquired()` is called once a pipeline is the request's:
        cancelling before that only takes the request out of the queue; cancelling after it
        stops the pipeline."""
        queued_at = time.perf_counter()
        plain = on_item is None
        pipeline = self._take_idle() or (self._take_ahead() if plain else None)
        if pipeline is None:
            pipeline = await self.acquire(plain=plain)
        assert pipeline is not None  # only a request that can ride in a batch is claimed
        if on_acquired is not None:
            on_acquired()
        reply, started = await self._call(pipeline, body, on_item, plain, queued_at)
        return reply, (started - queued_at) * 1000

    async def acquire(self, rider: object = None, plain: bool = False) -> Pipeline | None:
        """A pipeline for one request, by the pool's rules (idle, started up to ceil, or queued,
        refused past the queue bound or the queue timeout); the caller then `call`s it or
        `release`s it. A request queued with a `rider` (apinode.node.batcher) may instead be
        claimed by a request that holds a pipeline (`claim`): then None. A `plain` call
        waiting at the head of the queue may be handed a busy pipeline, to send it ahead."""
        if self.failure is not None:
            raise self.failure
        if self._closing:
            raise PoolClosed(f"{self.name} is stopping")
        pipeline = self._take_idle()
        if pipeline is not None:
            return pipeline
        self._spawn_for_waiter()
        if self.queued >= self._starting + self.settings.queue:
            self.rejected += 1
            raise QueueFull(
                f"{self.name}: all {self.size} pipelines are busy and the queue is full ({self.settings.queue} waiting)"
            )
        loop = self._event_loop()
        return await self._wait(
            _Waiter(loop.time() + self.settings.timeout_ms / 1000, loop.create_future(), rider, plain)
        )

    async def _put_back(self, queued_at: float) -> Pipeline:
        """A pipeline for a call sent ahead whose pipeline ended before its turn: the call goes
        back to the head of the queue, with the deadline it had (it came before everyone there)."""
        pipeline = self._take_idle()
        if pipeline is not None:
            return pipeline
        self._spawn_for_waiter()
        loop = self._event_loop()
        deadline = loop.time() + self.settings.timeout_ms / 1000 - (time.perf_counter() - queued_at)
        pipeline = await self._wait(_Waiter(deadline, loop.create_future(), None, True), first=True)
        assert pipeline is not None  # a plain call is never claimed by a batch
        return pipeline

    def _spawn_for_waiter(self) -> None:
        """A request is about to wait: start one more pipeline for it if the pool may grow."""
        if self.size < self.settings.ceil and len(self._waiters) >= self._starting and self._retry is None:
            self._spawn()

    async def _wait(self, entry: _Waiter, first: bool = False) -> Pipeline | None:
        """Wait in the queue (at its head if `first`) for a pipeline; see `acquire`."""
        waiter = entry.future
        if first:
            self._waiters.appendleft(entry)
            if self._expiry is not None and self._expiry.when() > entry.deadline:
                self._expiry.cancel()
                self._expiry = None
        else:
            self._waiters.append(entry)
        if self._expiry is None:
            self._expiry = self._event_loop().call_at(entry.deadline, self._expire_waiters)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()
                if handed is not None:
                    self._give_back(handed)  # handed over just as the caller went away
            else:
                self._remove_waiter(waiter)
            raise

    def _take_idle(self) -> Pipeline | None:
        """The idle pipeline used last, now busy, when no request waits before this one."""
        if not self._idle or self._waiters or self._closing or self.failure is not None:
            return None
        pipeline, _ = self._idle.popitem()
        self._busy.add(pipeline)
        return pipeline

    def _sends_ahead(self) -> bool:
        """Whether a plain call may now be sent ahead to a busy pipeline: none of the endpoint's
        calls has been slow for a while, and the pool is at ceil (below it, a new pipeline is
        started instead) with a queue timeout long enough."""
        return (
            self._quiet_since is not None
            and self.size >= self.settings.ceil
            and self.settings.timeout_ms >= AHEAD_MIN_TIMEOUT_MS
            and not self._closing
            and time.perf_counter() - self._quiet_since >= self.quiet_for
        )

    def _take_ahead(self) -> Pipeline | None:
        """A busy pipeline to send a plain call ahead to, when no request waits before it: the
        one whose call started first, among those whose call has run less than sendAheadMs (a
        longer one may be stuck) and that have room before recycling. It still waits, so the
        queue's bound must have room for it."""
        if self._waiters or self.queued >= self._starting + self.settings.queue or not self._sends_ahead():
            return None
        recent = time.perf_counter() - self.settings.send_ahead_ms / 1000
        for pipeline, since in self._since.items():
            if since >= recent and self._can_take_ahead(pipeline):
                self._promised.add(pipeline)
                return pipeline
        return None

    def _can_take_ahead(self, pipeline: Pipeline) -> bool:
        if pipeline in self._behind or pipeline in self._promised or pipeline not in self._busy:
            return False
        if not self.settings.max_requests:
            return True
        served, limit = self._served.get(pipeline, (0, 0))
        return served + 2 <= limit  # the running call and the one sent ahead

    def claim(self, count: int) -> list[object]:
        """The riders of up to `count` requests at the head of the queue, in order, taken out of
        it (their `acquire` returns None): a batch formed from the FIFO queue. Stops at a request
        without a rider, so that no request is overtaken."""
        riders: list[object] = []
        while self._waiters and len(riders) < count:
            head = self._waiters[0]
            if not head.future.done():
                if head.rider is None:
                    break
                head.future.set_result(None)
                riders.append(head.rider)
            self._waiters.popleft()
        return riders

    def release(self, pipeline: Pipeline) -> None:
        """Give back a pipeline that `acquire` handed out, without calling it."""
        self._give_back(pipeline)

    def _give_back(self, pipeline: Pipeline) -> None:
        """A pipeline handed out goes unused: one promised for a call ahead runs on; else offer it."""
        if pipeline in self._promised:
            self._promised.discard(pipeline)
            if pipeline in self._running or pipeline not in self._busy:
                return
        self._offer(pipeline)

    async def call(self, pipeline: Pipeline, body: bytes, on_item: ItemSink | None = None) -> Reply:
        """Call a pipeline `acquire` handed out, under the executionTimeout; then it is offered
        to the next request, recycled, or replaced if it died."""
        reply, _ = await self._call(pipeline, body, on_item)
        return reply

    async def _call(
        self,
        pipeline: Pipeline,
        body: bytes,
        on_item: ItemSink | None = None,
        plain: bool = False,
        queued_at: float = 0,
    ) -> tuple[Reply, float]:
        """`call`, and when the call started to run (perf_counter): for a call sent ahead, when
        the one before it answered."""
        if self._promised and pipeline in self._promised:
            self._promised.discard(pipeline)
            if pipeline not in self._busy:  # it ended before this call was sent
                return await self._call(await self._put_back(queued_at), body, on_item, plain, queued_at)
        token = None
        started = time.perf_counter()
        if pipeline in self._running:
            token = self._behind[pipeline] = object()  # sent ahead: it runs once the call before it answers
            self.counts.sent_ahead += 1
        else:
            self._begin(pipeline, plain, started)
        try:
            reply = await pipeline.call(body, on_item)
        except PipelineDied:
            if token is not None and self._behind.get(pipeline) is token:  # it never ran: back to the queue
                del self._behind[pipeline]
                return await self._call(await self._put_back(queued_at), body, on_item, plain, queued_at)
            self._running.discard(pipeline)
            self._since.pop(pipeline, None)
            if pipeline in self._timed_out:
                self._timed_out.discard(pipeline)
                raise ExecutionTimeout(
                    f"{self.name}: the call ran longer than the endpoint's executionTimeout of "
                    f"{self.settings.execution_timeout_ms} ms; its pipeline was stopped and replaced"
                ) from None
            self._forget(pipeline)
            raise
        except BaseException:
            # Cancelled mid-call: the channel may hold a late reply, so this pipeline cannot
            # serve anyone else.
            self._forget(pipeline)
            self._track(pipeline.stop())
            raise
        finally:
            if token is None or self._behind.get(pipeline) is not token:  # it ran: its deadline is over
                self._deadlines.pop(pipeline, None)
        if plain:
            started = self._since.pop(pipeline, started)
            now = time.perf_counter()
            if (now - started) * 1000 >= self.settings.send_ahead_ms:
                self._quiet_since = None
            elif self._quiet_since is None:
                self._quiet_since = now
        self._running.discard(pipeline)
        self._timed_out.discard(pipeline)
        if pipeline in self._busy:  # else it timed out just as it answered, and is gone
            self._done(pipeline)
        return reply, started

    def _begin(self, pipeline: Pipeline, plain: bool, now: float) -> None:
        """A call starts to run on a pipeline: its executionTimeout starts; a plain one may take a
        call ahead, which the request at the head of the queue gets if it is plain too."""
        self._running.add(pipeline)
        self._arm_deadline(pipeline)
        if not plain:
            return
        self._since[pipeline] = now
        while self._waiters and self._sends_ahead() and self._can_take_ahead(pipeline):
            head = self._waiters[0]
            if head.future.done():  # refused or claimed already
                self._waiters.popleft()
                continue
            if head.plain:
                self._waiters.popleft()
                self._promised.add(pipeline)
                head.future.set_result(pipeline)
            return

    async def close(self, drain_timeout: float = 30.0) -> None:
        """Refuse new requests, let queued and running ones finish (bounded), stop every pipeline."""
        self._closing = True
        self._drained.clear()
        for timer in (self._scale_down, self._retry):
            if timer is not None:
                timer.cancel()
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
        if self._execution_timer is not None:  # the calls still running end with their pipelines
            self._execution_timer.cancel()
            self._execution_timer = None
        pipelines = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        await asyncio.gather(*(pipeline.stop() for pipeline in pipelines), return_exceptions=True)
        while self._tasks:  # a pipeline that finished starting meanwhile is stopped by a new task
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the state machine -----------------------------------------------------------------
    def _expire_waiters(self) -> None:
        """Refuse the waiters whose deadline passed; re-arm the timer for the next one."""
        self._expiry = None
        loop = self._event_loop()
        now = loop.time()
        while self._waiters:
            deadline, waiter, *_ = self._waiters[0]
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

    def _remove_waiter(self, waiter: asyncio.Future[Pipeline | None]) -> None:
        for entry in self._waiters:
            if entry.future is waiter:
                self._waiters.remove(entry)
                break
        self._check_drained()

    def _arm_deadline(self, pipeline: Pipeline) -> None:
        timeout_ms = self.settings.execution_timeout_ms
        if not timeout_ms:
            return
        loop = self._event_loop()
        deadline = self._deadlines[pipeline] = loop.time() + timeout_ms / 1000
        if self._execution_timer is None:
            self._execution_timer = loop.call_at(deadline, self._expire_calls)

    def _expire_calls(self) -> None:
        """Time out the calls past their deadline; re-arm the timer for the earliest left."""
        self._execution_timer = None
        loop = self._event_loop()
        now = loop.time()
        for pipeline, deadline in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[pipeline]
                self._time_out(pipeline)
        if self._deadlines:
            self._execution_timer = loop.call_at(min(self._deadlines.values()), self._expire_calls)

    def _time_out(self, pipeline: Pipeline) -> None:
        """A call ran past its deadline: kill its pipeline (its caller then gets the 504)."""
        if pipeline not in self._busy:
            return
        self.counts.timeouts += 1
        log.warning(
            "%s: a call ran longer than %d ms; killing its pipeline", self.name, self.settings.execution_timeout_ms
        )
        self._timed_out.add(pipeline)
        self._retire(pipeline, pipeline.kill())

    def _done(self, pipeline: Pipeline) -> None:
        """A request was answered: the call sent ahead runs now, or the one promised is on its
        way; else recycle the pipeline if it is due, or offer it."""
        settings = self.settings
        served, limit = self._served.get(pipeline, (0, 0))
        served += 1
        self._served[pipeline] = (served, limit)
        if pipeline in self._behind:  # (room for it was checked when it was sent)
            del self._behind[pipeline]
            self._begin(pipeline, True, time.perf_counter())
            return
        if pipeline in self._promised:
            return
        reason = None
        if settings.max_requests and served >= limit:
            reason = "requests"
        elif settings.max_memory_mb and pipeline.memory_mb() > settings.max_memory_mb:
            reason = "memory"
        if reason is None:
            self._offer(pipeline)
            return
        self.counts.recycled[reason] += 1
        log.info(
            "%s: recycling a pipeline (%s)",
            self.name,
            f"{served} requests served" if reason == "requests" else f"memory over {settings.max_memory_mb} MiB",
        )
        self._retire(pipeline, pipeline.stop())

    def _retire(self, pipeline: Pipeline, ending: Awaitable[None]) -> None:
        """Take a pipeline out of service: start its replacement first, then end it."""
        self._out_of_service(pipeline)
        if not self._closing and self.failure is None:
            self._spawn()
        self._track(ending)
        self._check_drained()

    def _offer(self, pipeline: Pipeline) -> None:
        """A pipeline is free (just started or done with a request): first waiter first."""
        self._busy.discard(pipeline)
        while self._waiters:
            waiter = self._waiters.popleft().future
            if not waiter.done():
                self._busy.add(pipeline)
                waiter.set_result(pipeline)
                return
        if self._closing or (self.size + 1 > self.settings.cruise and not self.settings.scale_down_delay_ms):
            self._served.pop(pipeline, None)
            self._track(pipeline.stop())
        else:
            self._idle[pipeline] = self._event_loop().time()
            self._arm_scale_down()
        self._check_drained()

    def _arm_scale_down(self) -> None:
        if self._scale_down is not None or self.size <= self.settings.cruise or not self._idle:
            return
        oldest = next(iter(self._idle.values()))
        when = oldest + self.settings.scale_down_delay_ms / 1000
        self._scale_down = self._event_loop().call_at(when, self._shrink)

    def _shrink(self) -> None:
        """Stop the pipelines above cruise that have been idle for scaleDownDelay."""
        self._scale_down = None
        now = self._event_loop().time()
        delay = self.settings.scale_down_delay_ms / 1000
        while self.size > self.settings.cruise and self._idle:
            pipeline, since = next(iter(self._idle.items()))
            if now - since < delay:
                break
            del self._idle[pipeline]
            self._served.pop(pipeline, None)
            self._track(pipeline.stop())
        self._arm_scale_down()

    def _forget(self, pipeline: Pipeline) -> None:
        """A pipeline is gone (died or stopped): never hand it out again; refill to the floor."""
        self._out_of_service(pipeline)
        self._replenish()
        self._check_drained()

    def _out_of_service(self, pipeline: Pipeline) -> None:
        """Forget a pipeline's state, except what a call sent ahead to it (or promised) checks:
        that it ended before that call's turn."""
        self._busy.discard(pipeline)
        self._idle.pop(pipeline, None)
        self._served.pop(pipeline, None)
        self._running.discard(pipeline)
        self._since.pop(pipeline, None)

    def _replenish(self) -> None:
        if self._closing or self.failure is not None or self._retry is not None:
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
            self._start_failed(exc)
            return
        except Exception as exc:  # a bug starting processes must not hang the waiters
            self._starting -= 1
            log.exception("%s: starting a pipeline failed", self.name)
            self._start_failed(EndpointLoadFailed(f"{self.name}: starting a pipeline failed: {exc}"))
            return
        self._starting -= 1
        self._loaded = True
        self._retry_delay = RETRY_FIRST
        if self.failure is not None:
            self._track(pipeline.stop())
            return
        limit = self.settings.max_requests
        self._served[pipeline] = (0, limit + random.randint(0, int(limit * JITTER)))
        pipeline.set_exit_callback(self._forget)  # at once if it ended already, which forgets it
        if pipeline in self._served:
            self._offer(pipeline)

    def _start_failed(self, failure: EndpointLoadFailed) -> None:
        if not self._loaded:
            self.fail(failure)
            return
        self.counts.start_failures += 1
        if self._closing or self._retry is not None:
            return
        log.warning(
            "%s: a pipeline failed to start; the others serve on, retrying in %g s: %s\n%s",
            self.name,
            self._retry_delay,
            failure.message,
            failure.traceback,
        )
        self._retry = self._event_loop().call_later(self._retry_delay, self._retry_start)
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)

    def _retry_start(self) -> None:
        self._retry = None
        self._replenish()

    def fail(self, failure: EndpointLoadFailed) -> None:
        """Mark the endpoint failed to load: its requests fail with this, nothing is respawned."""
        if self.failure is None:
            log.error("%s failed to load: %s\n%s", self.name, failure.message, failure.traceback)
            self.failure = failure
        self._reject_waiters(failure)
        idle, self._idle = self._idle, {}
        for pipeline in idle:
            self._track(pipeline.stop())
        self._check_drained()

    def _reject_waiters(self, error: Exception) -> None:
        while self._waiters:
            waiter = self._waiters.popleft().future
            if not waiter.done():
                waiter.set_exception(error)

    def _check_drained(self) -> None:
        if not self._busy and not self._waiters:
            self._drained.set()

    def _track(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
