import asyncio
import os

CLIENT_LOOPS = []  # the loop a client built at initialization binds to on first use


async def later(x, delay=0.0):
    await asyncio.sleep(delay)
    loop = asyncio.get_running_loop()
    if not CLIENT_LOOPS:
        CLIENT_LOOPS.append(loop)
    return {"x": x, "pid": os.getpid(), "sameLoop": CLIENT_LOOPS[0] is loop}


async def hangs():
    await asyncio.sleep(3600)
