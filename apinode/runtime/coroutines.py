"""Awaiting an endpoint's coroutines: one event loop per process, kept across calls.

The loop is created on the first async call, so in a pipeline forked from a template it is
created after the fork: a loop's selector and self-pipe must never be shared by processes.
Initialization code runs before any loop exists; clients it builds (httpx.AsyncClient, an
aiohttp session made inside a coroutine) bind to the loop on first use, and since the loop is
never closed they keep working on every later call of that pipeline.

Concurrency model: in a pipeline the loop runs in the main thread, which waits for the call
anyway (no thread hop on the hot path). In a Jupyter kernel the main thread already runs the
kernel's loop, so the loop runs in a daemon thread and the caller blocks on the result.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import sys
import threading
from collections.abc import AsyncGenerator, Awaitable, Generator
from contextlib import closing
from typing import Any, TypeVar

T = TypeVar("T")


class EventLoop:
    """Runs awaitables to completion on this process's one loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_thread = False

    def run(self, awaitable: Awaitable[T]) -> T:
        loop = self._loop or self._start()
        if self._in_thread:
            return asyncio.run_coroutine_threadsafe(_await(awaitable), loop).result()
        task = _eager_task(loop, awaitable)
        if task.done() and not _has_ready_callbacks(loop):
            return task.result()
        # a call that suspended, or scheduled work of its own (a task it started): the loop
        # runs until the call is done, giving that work its turns as run_until_complete always did
        return loop.run_until_complete(task)

    def _start(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        self._in_thread = _loop_runs_here()
        if self._in_thread:
            threading.Thread(target=loop.run_forever, name="apinode-endpoint-loop", daemon=True).start()
        else:
            asyncio.set_event_loop(loop)
            # What run_forever installs while it runs, kept for the steps run outside it
            # (_eager_task): an async generator they start is finalized on this loop.
            sys.set_asyncgen_hooks(loop._asyncgen_firstiter_hook, loop._asyncgen_finalizer_hook)  # type: ignore[attr-defined]
        self._loop = loop
        return loop


def _eager_task(loop: asyncio.AbstractEventLoop, awaitable: Awaitable[T]) -> asyncio.Task[T]:
    """A task of `loop` for `awaitable`, whose first step has already run, here and now.

    Most calls of an `async def` endpoint never suspend (or only once a client is warm), and
    `run_until_complete` costs two turns of the loop (two `epoll_wait`s, hooks set and reset:
    tens of µs) to run a step that takes one. So the step the task scheduled is taken off the
    loop's ready queue and run at once, with the loop marked running, as Python 3.12's eager
    tasks do: the coroutine runs inside its own Task (current_task(), timeouts, cancellation,
    a copy of the context per call all as usual). Only a call that suspends runs the loop. On
    a loop without a ready queue to take it from, the loop runs the first step as usual."""
    coroutine = awaitable if inspect.iscoroutine(awaitable) else _await(awaitable)
    ready = getattr(loop, "_ready", None)
    if not isinstance(ready, collections.deque):
        return loop.create_task(coroutine)
    scheduled = len(ready)
    task = loop.create_task(coroutine)
    if len(ready) != scheduled + 1:  # not scheduled with call_soon: left to the loop
        return task
    first_step: asyncio.Handle = ready.pop()
    asyncio.events._set_running_loop(loop)
    try:
        first_step._run()
    finally:
        asyncio.events._set_running_loop(None)
    return task


def _has_ready_callbacks(loop: asyncio.AbstractEventLoop) -> bool:
    return bool(getattr(loop, "_ready", True))


def _loop_runs_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


PROCESS_LOOP = EventLoop()
"""The loop of this process (a pipeline, or a kernel's `%api_test`)."""


def resolve(value: Any) -> Any:
    """`value` itself, or what it resolves to when it is a coroutine (an `async def` function's
    result, or a decorated function's)."""
    if inspect.iscoroutine(value):
        return PROCESS_LOOP.run(value)
    return value


def is_stream(value: Any) -> bool:
    """Whether a function's result is a stream of items: what a generator function (sync or
    async) returns."""
    return inspect.isgenerator(value) or inspect.isasyncgen(value)


def items(stream: Generator[Any, None, None] | AsyncGenerator[Any, None]) -> Generator[Any, None, None]:
    """The stream's items, one at a time; closing this generator closes the stream (an async
    one on this process's loop), so that a caller who stops reading stops the function."""
    if inspect.isgenerator(stream):
        with closing(stream):
            yield from stream
        return
    assert inspect.isasyncgen(stream)
    try:
        while True:
            try:
                yield PROCESS_LOOP.run(stream.__anext__())
            except StopAsyncIteration:
                return
    finally:
        PROCESS_LOOP.run(stream.aclose())
