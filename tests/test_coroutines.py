"""The pipeline's driver of coroutines (apinode.runtime.coroutines.EventLoop), in this thread.

A call that never suspends runs without a turn of the loop; one that suspends is finished by
the loop; either way it runs inside its own Task, on the one loop kept across calls."""

from __future__ import annotations

import asyncio
import contextvars
import sys

import pytest

from apinode.runtime.coroutines import EventLoop

REQUEST = contextvars.ContextVar("request", default=None)


@pytest.fixture
def runner():
    runner = EventLoop()
    yield runner
    if runner._loop is not None:
        asyncio.set_event_loop(None)
        sys.set_asyncgen_hooks(None, None)  # the runner installed its loop's
        runner._loop.close()


def loop_turned(runner: EventLoop, awaitable, monkeypatch) -> tuple[object, bool]:
    """(what the awaitable returned, whether the loop ran meanwhile)."""
    runner.run(asyncio.sleep(0))  # the loop exists
    loop = runner._loop
    turns = []
    run_once = loop._run_once

    def counted_run_once():
        turns.append(1)
        run_once()

    monkeypatch.setattr(loop, "_run_once", counted_run_once)
    result = runner.run(awaitable)
    return result, bool(turns)


async def identity(**params):
    return params


async def suspends(delay: float):
    task = asyncio.current_task()
    await asyncio.sleep(delay)
    return task is asyncio.current_task(), asyncio.get_running_loop()


def test_a_call_that_never_suspends_is_answered_without_a_turn_of_the_loop(runner, monkeypatch):
    assert loop_turned(runner, identity(x=1), monkeypatch) == ({"x": 1}, False)


def test_a_call_that_suspends_is_finished_by_the_loop_in_the_same_task(runner, monkeypatch):
    (same_task, loop), turned = loop_turned(runner, suspends(0.01), monkeypatch)
    assert same_task and turned and loop is runner._loop


def test_a_task_started_by_a_call_that_never_suspends_gets_its_turn(runner):
    ran = []

    async def note():
        ran.append(1)

    async def starts_a_task():
        asyncio.get_running_loop().create_task(note())
        return "started"

    assert runner.run(starts_a_task()) == "started"
    assert ran == [1]


def test_every_call_runs_in_a_task_on_the_one_loop_with_the_loop_running(runner):
    async def where():
        return asyncio.current_task() is not None, asyncio.get_running_loop(), asyncio.get_event_loop()

    first, second = runner.run(where()), runner.run(where())
    assert first == second == (True, runner._loop, runner._loop)
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # marked running only while a call runs


def test_what_a_coroutine_raises_is_raised_before_or_after_suspending(runner):
    async def fails(delay: float | None):
        if delay is not None:
            await asyncio.sleep(delay)
        raise ValueError(f"bad after {delay}")

    for delay in (None, 0.001):
        with pytest.raises(ValueError, match=f"bad after {delay}"):
            runner.run(fails(delay))
    assert runner.run(identity(x=2)) == {"x": 2}


def test_a_cancelled_call_raises_cancelled_error_and_the_loop_serves_on(runner):
    async def cancelled(suspend_first: bool):
        if suspend_first:
            await asyncio.sleep(0)
        asyncio.current_task().cancel()
        await asyncio.sleep(1)

    for suspend_first in (False, True):
        with pytest.raises(asyncio.CancelledError):
            runner.run(cancelled(suspend_first))
    assert runner.run(suspends(0.001))[0]


def test_timeouts_cancel_the_call_they_were_set_in(runner):
    async def times_out():
        try:
            await asyncio.wait_for(asyncio.sleep(5), 0.01)
        except asyncio.TimeoutError:
            return "timed out"

    assert runner.run(times_out()) == "timed out"


def test_each_call_has_its_own_copy_of_the_context(runner):
    async def sets(value: str):
        seen = REQUEST.get()
        REQUEST.set(value)
        await asyncio.sleep(0)
        return seen, REQUEST.get()

    assert runner.run(sets("a")) == (None, "a")
    assert runner.run(sets("b")) == (None, "b")
    assert REQUEST.get() is None


def test_what_a_call_builds_on_the_loop_serves_later_calls(runner):
    async def serve():
        async def echo(reader, writer):
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        return await asyncio.start_server(echo, "127.0.0.1", 0)

    async def ask(port: int, text: bytes):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(text + b"\n")
        answer = await reader.readline()
        writer.close()
        return answer

    server = runner.run(serve())
    port = server.sockets[0].getsockname()[1]
    assert [runner.run(ask(port, text)) for text in (b"one", b"two")] == [b"one\n", b"two\n"]
    server.close()
    runner.run(server.wait_closed())


def test_other_awaitables_are_awaited_too(runner):
    async def ticks():
        yield 1
        await asyncio.sleep(0)
        yield 2

    stream = ticks()
    assert [runner.run(stream.__anext__()) for _ in range(2)] == [1, 2]
    runner.run(stream.aclose())
