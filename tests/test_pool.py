"""The pool state machine (apinode.node.pool), driven with in-memory pipelines.

Each fake pipeline answers when the test releases it, so every scenario is exact: no sleeps, no
processes. Timeouts are real but short, and every test is bounded by pytest-timeout.
"""

from __future__ import annotations

import asyncio
import collections

import pytest

from apinode.node.batcher import Batcher
from apinode.node.errors import (
    EndpointLoadFailed,
    ExecutionTimeout,
    PipelineDied,
    PoolClosed,
    QueueFull,
    QueueTimeout,
)
from apinode.node.pipeline import Reply
from apinode.node.pool import Pool
from apinode.packaging.definitions import BatchSettings, PoolSettings
from apinode.runtime import framing


class FakePipeline:
    """Answers each call when the test releases its `gate`, in the order the calls came (as one
    socket does): `gate` is the oldest call's, so a call sent ahead waits its turn."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.stopped = False
        self.gates: collections.deque[asyncio.Future[None]] = collections.deque()  # one per call, oldest first
        self.on_exit = None
        self.memory = 10.0
        self.dead_on_arrival = False  # ended between its READY and the pool taking it

    @property
    def gate(self) -> asyncio.Future[None] | None:
        """The running call's gate (the oldest not released), else the last call's, else None."""
        waiting = [gate for gate in self.gates if not gate.done()]
        return waiting[0] if waiting else (self.gates[-1] if self.gates else None)

    @property
    def in_flight(self) -> int:
        """Calls sent and not answered: the running one and any sent ahead."""
        return sum(not gate.done() for gate in self.gates)

    async def call(self, body: bytes, on_item: object = None) -> Reply:
        if self.stopped:
            raise PipelineDied("stopped")
        gate = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        await gate
        return Reply(framing.RESULT, 200, 0.0, b"%d:%b" % (self.number, body))

    async def stop(self) -> None:
        self.stopped = True

    async def kill(self) -> None:
        self.stopped = True
        self._fail_calls("killed")

    def memory_mb(self) -> float:
        return self.memory

    def set_exit_callback(self, callback) -> None:
        self.on_exit = callback
        if self.dead_on_arrival:
            callback(self)

    def die(self) -> None:
        assert self.gate is not None
        self.stopped = True
        self._fail_calls("died")
        self.on_exit(self)

    def _fail_calls(self, how: str) -> None:
        for gate in self.gates:
            if not gate.done():
                gate.set_exception(PipelineDied(how))


class BatchPipeline(FakePipeline):
    """Answers a batch's call (apinode.node.batcher) with one answer per request."""

    def __init__(self, number: int) -> None:
        super().__init__(number)
        self.batches: list[list[bytes]] = []

    async def call(self, body: bytes, on_item: object = None) -> Reply:
        bodies = [payload for *_, payload in framing.unpack_all(body)]
        self.batches.append(bodies)
        await super().call(body)
        answers = (framing.pack(framing.RESULT, b"%d:%b" % (self.number, one), 200) for one in bodies)
        return Reply(framing.RESULT, 200, 0.0, b"".join(answers))


class Factory:
    def __init__(self, fail: bool = False, kind: type[FakePipeline] = FakePipeline) -> None:
        self.made: list[FakePipeline] = []
        self.fail = fail
        self.kind = kind
        self.attempts = 0

    async def __call__(self) -> FakePipeline:
        await asyncio.sleep(0)
        self.attempts += 1
        if self.fail:
            raise EndpointLoadFailed("boom", "Traceback: boom")
        pipeline = self.kind(len(self.made))
        self.made.append(pipeline)
        return pipeline

    @property
    def alive(self) -> list[FakePipeline]:
        return [p for p in self.made if not p.stopped]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def second_busy(factory: Factory) -> FakePipeline:
    """Wait (bounded) until a second pipeline exists and holds a request; that pipeline."""
    for _ in range(100):
        if len(factory.made) > 1:
            await busy_until(factory.made[1:2])
            return factory.made[1]
        await asyncio.sleep(0)
    raise AssertionError("no second pipeline was started")


async def busy_until(pipelines) -> None:
    """Wait (bounded) until every given pipeline holds a request."""
    for _ in range(100):
        if all(p.gate is not None and not p.gate.done() for p in pipelines):
            return
        await asyncio.sleep(0)
    raise AssertionError("pipelines never became busy")


def make(
    floor=1,
    ceil=8,
    cruise=2,
    queue=16,
    timeout_ms=10000,
    fail=False,
    scale_down_delay_ms=0,
    kind=FakePipeline,
    send_ahead_ms=0,
    **more,
):
    """A pool of fake pipelines; calls are sent ahead only in the tests about that (the fakes
    answer as fast as a test releases them, which would make every endpoint's calls short)."""
    factory = Factory(fail, kind)
    settings = PoolSettings(
        floor=floor,
        ceil=ceil,
        cruise=cruise,
        queue=queue,
        timeout_ms=timeout_ms,
        scale_down_delay_ms=scale_down_delay_ms,
        send_ahead_ms=send_ahead_ms,
        **more,
    )
    return Pool("svc/ep", settings, factory), factory


async def test_floor_is_started_before_any_request():
    pool, factory = make(floor=3, cruise=3)
    await pool.start()
    assert len(factory.made) == 3 and pool.size == 3


async def test_a_pipeline_that_ended_before_the_pool_took_it_is_never_handed_out():
    pool, factory = make(floor=1, cruise=1)
    original = factory.__call__

    async def first_one_dead() -> FakePipeline:
        pipeline = await original()
        pipeline.dead_on_arrival = pipeline.number == 0
        return pipeline

    pool._factory = first_one_dead
    await pool.start()
    await settle()
    call = asyncio.ensure_future(pool.run(b"x"))
    await busy_until([factory.made[1]])
    factory.made[1].gate.set_result(None)
    reply, _ = await call
    assert reply.payload == b"1:x" and len(factory.made) == 2


async def test_scales_up_to_ceil_then_queues():
    pool, factory = make(floor=1, ceil=3, cruise=1, queue=5)
    await pool.start()
    calls = [asyncio.ensure_future(pool.run(b"x")) for _ in range(5)]
    await settle()
    assert len(factory.made) == 3
    assert pool.busy == 3 and pool.queued == 2
    for pipeline in factory.made:
        pipeline.gate.set_result(None)
    await busy_until(factory.made[:2])
    for pipeline in factory.made[:2]:
        pipeline.gate.set_result(None)
    results = await asyncio.gather(*calls)
    assert all(reply.status == 200 for reply, _ in results)


async def test_scales_down_to_cruise_when_work_is_done():
    pool, factory = make(floor=1, ceil=4, cruise=2, queue=0)
    await pool.start()
    calls = [asyncio.ensure_future(pool.run(b"x")) for _ in range(4)]
    await settle()
    await busy_until(factory.made)
    assert pool.size == 4
    for pipeline in factory.made:
        pipeline.gate.set_result(None)
    await asyncio.gather(*calls)
    await settle()
    assert pool.size == 2
    assert len(factory.alive) == 2


async def one_running_one_queued(queue: int):
    """A started pool of one pipeline, busy with call b"1", call b"2" queued behind it."""
    pool, factory = make(floor=1, ceil=1, cruise=1, queue=queue)
    await pool.start()
    calls = [asyncio.ensure_future(pool.run(body)) for body in (b"1", b"2")]
    await settle()
    return pool, factory, calls


async def test_full_queue_rejects_at_once():
    pool, factory, calls = await one_running_one_queued(queue=1)
    with pytest.raises(QueueFull):
        await pool.run(b"3")
    assert pool.rejected == 1
    factory.made[0].gate.set_result(None)
    await busy_until(factory.made)
    factory.made[0].gate.set_result(None)
    assert [(await c)[0].payload for c in calls] == [b"0:1", b"0:2"]


async def test_queue_timeout_rejects_at_the_timeout():
    pool, factory = make(floor=1, ceil=1, cruise=1, queue=4, timeout_ms=50)
    await pool.start()
    running = asyncio.ensure_future(pool.run(b"1"))
    await settle()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(QueueTimeout):
        await pool.run(b"2")
    waited = loop.time() - started
    assert 0.04 <= waited < 0.5
    assert pool.queued == 0
    factory.made[0].gate.set_result(None)
    await running


async def test_queue_is_first_in_first_out():
    pool, factory = make(floor=1, ceil=1, cruise=1, queue=10)
    await pool.start()
    order = []

    async def call(n: int) -> None:
        await pool.run(b"%d" % n)
        order.append(n)

    tasks = []
    for n in range(6):
        tasks.append(asyncio.ensure_future(call(n)))
        await settle()
    for _ in range(6):
        await busy_until(factory.made)
        factory.made[0].gate.set_result(None)
        await settle()
    await asyncio.gather(*tasks)
    assert order == list(range(6))


async def test_dead_pipeline_fails_its_request_and_is_replaced():
    pool, factory = make(floor=2, ceil=2, cruise=2)
    await pool.start()
    calls = [asyncio.ensure_future(pool.run(b"x")) for _ in range(2)]
    await busy_until(factory.made)
    factory.made[0].die()
    await settle()
    assert len(factory.made) == 3 and pool.size == 2
    factory.made[1].gate.set_result(None)
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert sorted(type(outcome).__name__ for outcome in outcomes) == ["PipelineDied", "tuple"]


async def test_load_failure_marks_the_pool_failed_without_respawning():
    pool, _ = make(floor=2, fail=True)
    with pytest.raises(EndpointLoadFailed):
        await pool.start()
    with pytest.raises(EndpointLoadFailed, match="boom"):
        await pool.run(b"x")
    await settle()
    assert pool.size == 0 and pool.failure is not None


async def test_close_drains_running_and_queued_requests_then_stops_everything():
    pool, factory, calls = await one_running_one_queued(queue=2)
    closing = asyncio.ensure_future(pool.close(drain_timeout=5))
    await settle()
    with pytest.raises(PoolClosed):
        await pool.run(b"3")
    factory.made[0].gate.set_result(None)
    await busy_until(factory.made)
    factory.made[0].gate.set_result(None)
    await closing
    assert [(await c)[0].payload for c in calls] == [b"0:1", b"0:2"]
    assert factory.alive == []


async def test_pipelines_above_cruise_stop_only_after_the_scale_down_delay():
    pool, factory = make(floor=1, ceil=4, cruise=1, queue=0, scale_down_delay_ms=150)
    await pool.start()
    calls = [asyncio.ensure_future(pool.run(b"x")) for _ in range(3)]
    await settle()
    await busy_until(factory.made)
    for pipeline in factory.made:
        pipeline.gate.set_result(None)
    await asyncio.gather(*calls)
    loop = asyncio.get_running_loop()
    came_free = loop.time()
    assert pool.size == 3  # steady load coming back now finds them
    again = asyncio.ensure_future(pool.run(b"y"))
    await settle()
    [serving] = [p for p in factory.made if not p.gate.done()]
    serving.gate.set_result(None)
    await again
    while pool.size > 1:
        await asyncio.sleep(0.01)
        assert loop.time() - came_free < 2
    assert loop.time() - came_free >= 0.14
    await settle()
    assert len(factory.made) == 3 and len(factory.alive) == 1


async def test_a_call_past_the_execution_timeout_is_answered_and_its_pipeline_replaced():
    pool, factory = make(floor=2, ceil=2, cruise=2, execution_timeout_ms=50)
    await pool.start()
    hung = asyncio.ensure_future(pool.run(b"hung"))
    await settle()
    [stuck] = [p for p in factory.made if p.gate is not None]
    other = asyncio.ensure_future(pool.run(b"ok"))
    await settle()
    [answering] = [p for p in factory.made if p is not stuck]
    answering.gate.set_result(None)
    assert (await other)[0].status == 200
    with pytest.raises(ExecutionTimeout, match="executionTimeout of 50 ms"):
        await hung
    await settle()
    assert stuck.stopped and not answering.stopped and len(factory.made) == 3 and pool.size == 2
    assert pool.counts.timeouts == 1


async def test_calls_started_apart_time_out_each_at_its_own_deadline():
    """One timer serves all of a pool's calls: once it has timed out the first call, it waits
    for the second's own deadline, neither firing it early nor forgetting it."""
    pool, _ = make(floor=2, ceil=2, cruise=2, execution_timeout_ms=600)
    await pool.start()
    loop = asyncio.get_running_loop()
    first = asyncio.ensure_future(pool.run(b"first"))
    await asyncio.sleep(0.3)  # the second starts while the first runs: the timer is armed for the first
    second = asyncio.ensure_future(pool.run(b"second"))
    await settle()
    second_started = loop.time()
    with pytest.raises(ExecutionTimeout):
        await asyncio.wait_for(first, 5)
    assert not second.done()  # its deadline is 0.3 s after the first's
    with pytest.raises(ExecutionTimeout):
        await asyncio.wait_for(second, 5)
    assert loop.time() - second_started >= 0.59
    assert pool.counts.timeouts == 2


# -- calls sent ahead to busy pipelines --------------------------------------------------------
async def sending_ahead_pool(ceil=1, **settings):
    """A started pool that sends calls ahead at once (no quiet time needed), once one call was
    answered (on its first pipeline)."""
    pool, factory = make(floor=1, ceil=ceil, cruise=1, send_ahead_ms=1000, **settings)
    pool.quiet_for = 0
    await pool.start()
    warm = asyncio.ensure_future(pool.run(b"warm"))
    await busy_until(factory.made)
    factory.made[0].gate.set_result(None)
    await warm
    return pool, factory


async def short_calls_pool(**settings):
    """A sending_ahead_pool of one pipeline, running a call: `running`."""
    pool, factory = await sending_ahead_pool(**settings)
    running = asyncio.ensure_future(pool.run(b"running"))
    await busy_until(factory.made)
    return pool, factory, running


async def test_at_ceil_a_short_call_waits_in_a_busy_pipeline_s_socket():
    pool, factory, running = await short_calls_pool()
    ahead = asyncio.ensure_future(pool.run(b"ahead"))
    await settle()
    [pipeline] = factory.made
    assert pipeline.in_flight == 2 and pool.queued == 1 and pool.counts.sent_ahead == 1
    pipeline.gate.set_result(None)
    assert (await running)[0].payload == b"0:running"
    await settle()
    assert not ahead.done()  # it runs now, in turn
    pipeline.gate.set_result(None)
    reply, waited_ms = await ahead
    assert reply.payload == b"0:ahead" and waited_ms >= 0


async def test_the_request_at_the_head_of_the_queue_is_sent_ahead_when_a_call_starts():
    pool, factory, running = await short_calls_pool()
    [pipeline] = factory.made
    ahead = asyncio.ensure_future(pool.run(b"ahead"))
    queued = [asyncio.ensure_future(pool.run(b"q%d" % n)) for n in range(2)]
    await settle()
    assert pipeline.in_flight == 2 and pool.queued == 3  # one call ahead per pipeline, two in the queue
    pipeline.gate.set_result(None)
    await settle()
    assert pipeline.in_flight == 2 and pool.queued == 2  # "ahead" runs, "q0" waits behind it
    for _ in range(3):
        pipeline.gate.set_result(None)
        await settle()
    assert [(await call)[0].payload for call in (running, ahead, *queued)] == [
        b"0:running",
        b"0:ahead",
        b"0:q0",
        b"0:q1",
    ]


async def test_below_ceil_a_pipeline_is_started_rather_than_a_call_sent_ahead():
    pool, factory = await sending_ahead_pool(ceil=2)
    calls = [asyncio.ensure_future(pool.run(body)) for body in (b"a", b"b")]
    await settle()
    await busy_until(factory.made)
    assert [p.in_flight for p in factory.made] == [1, 1]
    for pipeline in factory.made:
        pipeline.gate.set_result(None)
    await asyncio.gather(*calls)


async def test_calls_are_sent_ahead_only_once_no_call_of_the_endpoint_has_been_slow_for_a_while():
    pool, factory = make(floor=1, ceil=1, cruise=1, send_ahead_ms=20)
    pool.quiet_for = 0.2
    await pool.start()
    [pipeline] = factory.made

    async def queued_behind(length: float) -> bool:
        """Run a call of `length` s, then one more while another runs: was that one queued?"""
        first = asyncio.ensure_future(pool.run(b"first"))
        await busy_until([pipeline])
        await asyncio.sleep(length)  # the call's length, not a wait for something
        pipeline.gate.set_result(None)
        await first
        running = asyncio.ensure_future(pool.run(b"running"))
        await busy_until([pipeline])
        next_call = asyncio.ensure_future(pool.run(b"next"))
        await settle()
        queued = pipeline.in_flight == 1
        for call in (running, next_call):
            pipeline.gate.set_result(None)
            await call
        return queued

    assert await queued_behind(0)  # no slow call yet, but not for 0.2 s
    await asyncio.sleep(0.2)  # no slow call meanwhile
    assert not await queued_behind(0)  # sent ahead
    assert await queued_behind(0.05)  # a call over 20 ms: no more until 0.2 s without one


async def test_no_call_is_sent_ahead_past_a_pipeline_s_max_requests():
    pool, factory, running = await short_calls_pool(max_requests=2)  # "warm" was the first of 2
    queued = asyncio.ensure_future(pool.run(b"queued"))
    await settle()
    assert factory.made[0].in_flight == 1 and pool.queued == 1
    factory.made[0].gate.set_result(None)
    await running
    (await second_busy(factory)).gate.set_result(None)  # the recycled pipeline's replacement runs it
    assert (await queued)[0].payload == b"1:queued"


async def test_a_call_sent_ahead_counts_in_the_queue_s_bound():
    pool, factory, running = await short_calls_pool(queue=1)
    ahead = asyncio.ensure_future(pool.run(b"ahead"))
    await settle()
    assert factory.made[0].in_flight == 2
    with pytest.raises(QueueFull):
        await pool.run(b"one too many")
    for call in (running, ahead):
        factory.made[0].gate.set_result(None)
        await call


async def test_a_pool_with_a_short_queue_timeout_sends_nothing_ahead():
    """A call waiting in a pipeline's socket could not be refused at its queue deadline."""
    pool, factory, running = await short_calls_pool(timeout_ms=1000)
    queued = asyncio.ensure_future(pool.run(b"queued"))
    await settle()
    assert factory.made[0].in_flight == 1 and pool.queued == 1
    for call in (running, queued):
        factory.made[0].gate.set_result(None)
        await call


@pytest.mark.parametrize("ending", ["timed out", "died"])
async def test_a_call_sent_ahead_whose_pipeline_ends_before_its_turn_runs_on_another(ending):
    pool, factory, running = await short_calls_pool(execution_timeout_ms=100 if ending == "timed out" else 0)
    [first] = factory.made
    ahead = asyncio.ensure_future(pool.run(b"ahead"))
    await settle()
    assert first.in_flight == 2
    if ending == "died":
        first.die()
    with pytest.raises(ExecutionTimeout if ending == "timed out" else PipelineDied):
        await running
    (await second_busy(factory)).gate.set_result(None)
    assert (await ahead)[0].payload == b"1:ahead"  # never ran on the first: not failed, not run twice


async def test_a_call_sent_ahead_has_its_execution_timeout_from_its_own_start():
    pool, factory, running = await short_calls_pool(execution_timeout_ms=400)
    [pipeline] = factory.made
    ahead = asyncio.ensure_future(pool.run(b"ahead"))
    await settle()
    await asyncio.sleep(0.3)  # the running call's length
    pipeline.gate.set_result(None)
    await running
    await asyncio.sleep(0.2)  # 0.5 s since it was sent, 0.2 s since it started
    pipeline.gate.set_result(None)
    assert (await ahead)[0].payload == b"0:ahead"
    assert pool.counts.timeouts == 0


async def test_a_call_sent_ahead_that_runs_too_long_times_out():
    pool, factory, running = await short_calls_pool(execution_timeout_ms=100)
    ahead = asyncio.ensure_future(pool.run(b"ahead"))
    await settle()
    factory.made[0].gate.set_result(None)
    await running
    with pytest.raises(ExecutionTimeout):
        await ahead
    assert pool.counts.timeouts == 1


async def test_pipelines_are_recycled_after_max_requests_with_jitter():
    pool, factory = make(floor=1, ceil=1, cruise=1, max_requests=10)
    await pool.start()
    for n in range(30):
        call = asyncio.ensure_future(pool.run(b"%d" % n))
        await busy_until([factory.made[-1]])
        factory.made[-1].gate.set_result(None)
        assert (await call)[0].status == 200
        await settle()
    served = [int(p.number) for p in factory.made]
    assert 3 <= len(served) <= 4  # every 10 or 11 requests (10% jitter)
    assert pool.counts.recycled["requests"] == len(factory.made) - 1
    assert len(factory.alive) == 1


async def test_a_pipeline_over_max_memory_is_recycled_after_answering():
    pool, factory = make(floor=1, ceil=1, cruise=1, max_memory_mb=100)
    await pool.start()
    factory.made[0].memory = 150.0
    call = asyncio.ensure_future(pool.run(b"x"))
    await busy_until(factory.made)
    factory.made[0].gate.set_result(None)
    assert (await call)[0].status == 200
    await settle()
    assert factory.made[0].stopped and len(factory.made) == 2
    assert pool.counts.recycled == {"requests": 0, "memory": 1}


async def test_a_start_failing_after_the_load_is_retried_while_the_others_serve():
    pool, factory = make(floor=1, ceil=2, cruise=2, timeout_ms=5000)
    await pool.start()
    factory.fail = True
    first = asyncio.ensure_future(pool.run(b"1"))
    await busy_until(factory.made)
    second = asyncio.ensure_future(pool.run(b"2"))  # asks for a second pipeline, which fails
    await settle()
    assert pool.failure is None and pool.counts.start_failures == 1
    factory.fail = False
    while len(factory.made) < 2:  # the retry, after its backoff
        await asyncio.sleep(0.02)
    await busy_until(factory.made)
    for pipeline in factory.made:
        pipeline.gate.set_result(None)
    assert [(await call)[0].status for call in (first, second)] == [200, 200]


# -- batches form from the queue, so the pool's rules hold per request (apinode.node.batcher) --


def batching(max_size: int, max_wait_ms: int, **pool):
    """A started batched endpoint's pool of one pipeline, and its batcher."""
    pool_, factory = make(floor=1, ceil=1, cruise=1, kind=BatchPipeline, **pool)
    return pool_, factory, Batcher(pool_, BatchSettings(max_size, max_wait_ms))


def answers(calls) -> list[bytes]:
    return [bytes(call.result()[0].payload) for call in calls]


async def test_the_queue_bound_counts_the_requests_waiting_to_be_batched():
    pool, factory, batcher = batching(8, 0, queue=3)
    await pool.start()
    running = asyncio.ensure_future(batcher.run(b"a"))
    await busy_until(factory.made)
    queued = [asyncio.ensure_future(batcher.run(body)) for body in (b"b", b"c", b"d")]
    await settle()
    assert pool.queued == 3
    with pytest.raises(QueueFull):
        await batcher.run(b"e")
    factory.made[0].gate.set_result(None)
    await running
    await busy_until(factory.made)  # the next batch: the queue, in order
    factory.made[0].gate.set_result(None)
    await asyncio.gather(*queued)
    assert factory.made[0].batches == [[b"a"], [b"b", b"c", b"d"]]
    assert answers(queued) == [b"0:b", b"0:c", b"0:d"]


async def test_each_request_waiting_for_a_batch_has_its_own_queue_timeout():
    pool, factory, batcher = batching(8, 0, queue=8, timeout_ms=400)
    await pool.start()
    running = asyncio.ensure_future(batcher.run(b"a"))
    await busy_until(factory.made)
    first = asyncio.ensure_future(batcher.run(b"b"))
    await asyncio.sleep(0.3)  # the second request arrives 300 ms after the first
    second = asyncio.ensure_future(batcher.run(b"c"))
    with pytest.raises(QueueTimeout):
        await first
    assert not second.done() and pool.queued == 1  # its own 400 ms are not over
    factory.made[0].gate.set_result(None)
    await running
    await busy_until(factory.made)
    factory.made[0].gate.set_result(None)
    assert (await second)[0].payload == b"0:c"
    assert factory.made[0].batches == [[b"a"], [b"c"]]


async def test_a_request_whose_caller_leaves_the_queue_is_not_batched():
    pool, factory, batcher = batching(8, 0)
    await pool.start()
    running = asyncio.ensure_future(batcher.run(b"a"))
    await busy_until(factory.made)
    queued = [asyncio.ensure_future(batcher.run(body)) for body in (b"b", b"c", b"d")]
    await settle()
    queued[1].cancel()
    await settle()
    assert pool.queued == 2
    factory.made[0].gate.set_result(None)
    await running
    await busy_until(factory.made)
    factory.made[0].gate.set_result(None)
    await asyncio.gather(queued[0], queued[2])
    assert factory.made[0].batches == [[b"a"], [b"b", b"d"]]


async def test_an_idle_leader_waits_for_company_and_goes_as_soon_as_the_batch_is_full():
    pool, factory, batcher = batching(2, 10_000)
    await pool.start()
    lone = asyncio.ensure_future(batcher.run(b"a"))
    await settle()
    assert factory.made[0].batches == []  # waiting for company, up to maxWaitMs
    company = asyncio.ensure_future(batcher.run(b"b"))
    await busy_until(factory.made)  # full: it goes at once, long before maxWaitMs
    factory.made[0].gate.set_result(None)
    await asyncio.gather(lone, company)
    assert factory.made[0].batches == [[b"a", b"b"]] and answers([lone, company]) == [b"0:a", b"0:b"]
