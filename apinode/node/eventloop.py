"""Run the node on uvloop where it is installed (Linux, macOS), else on asyncio's own loop.

The node's CPU goes to its event loop (HTTP sockets, pipeline sockets, wakeups); uvloop does
that work in C. Behaviour is the same on either loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
