import asyncio
import os
import time
from typing import NotRequired, TypedDict

CLIENT_LOOPS = []  # the loop a client built at initialization binds to on first use


async def later(x, delay=0.0):
    await asyncio.sleep(delay)
    loop = asyncio.get_running_loop()
    if not CLIENT_LOOPS:
        CLIENT_LOOPS.append(loop)
    return {"x": x, "pid": os.getpid(), "sameLoop": CLIENT_LOOPS[0] is loop}


async def hangs():
    await asyncio.sleep(3600)


def count(n, fail_at=None, gate=None):
    """Counts to n; waits for the file `gate` after the first item; fails at `fail_at`."""
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"no {i}")
        yield {"i": i}
        if gate and i == 0:
            deadline = time.monotonic() + 30
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.01)


async def ticks(n):
    for i in range(n):
        await asyncio.sleep(0.001)
        yield i


def endless(limit=None):
    i = 0
    while limit is None or i < limit:
        yield {"i": i, "pid": os.getpid()}
        i += 1
        time.sleep(0.01)


def flood(n, size, progress):
    """n items of `size` characters, as fast as they are taken; writes how many it has made."""
    text = "x" * size
    for i in range(n):
        yield {"i": i, "text": text}
        with open(progress, "w") as file:
            file.write(str(i + 1))


class Row(TypedDict):
    x: int
    fail: NotRequired[bool]


def scores(batch: list[Row]) -> list[dict]:
    """A vectorized model: one call for the whole batch."""
    if any(params.get("fail") for params in batch):
        raise ValueError("a failing row")
    time.sleep(0.05)
    return [{"x": params["x"] * 2, "batchSize": len(batch)} for params in batch]


def short(batch):
    return batch[:-1]
