"""An exclusive lock on a file, between threads and processes alike (flock).

The node's data directory (one node per directory), its admin keys file (read-modify-write by
the node and the `apinode admin-key-*` commands) and each code env (built once) are guarded
with it. A shared lock (`hold_shared`) marks a code env in use by a running node, for as long as
that node runs. The kernel drops a lock with its holder, so a process killed while holding one leaves
nothing to clean up. A holder may delete the lock file: whoever gets a lock then checks that
the file it locked is still the one at that path, and else locks again, so a process that
waited on a deleted file never believes it holds the lock.

Concurrency: `locked(wait=True)` blocks the calling thread until the lock is free (call it from
a worker thread on an event loop); `wait=False` never blocks, nor does `hold_shared` while no one
holds the file exclusively (callers make sure of that: see apinode.packaging.codeenvs).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def locked(path: Path, wait: bool = True, on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """Hold an exclusive flock on the file at `path` (created if needed); yields False if `wait`
    is False and someone else holds it. `on_wait` is called first when `wait` is True and the
    lock is taken (to say why nothing happens for a while)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _flock_exclusive(fd, wait, on_wait)
            if _same_file(fd, path):
                break
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the file was deleted while we waited for it: lock the new one
    try:
        yield True
    finally:
        os.close(fd)  # releases the lock


def _flock_exclusive(fd: int, wait: bool, on_wait: Callable[[], None] | None) -> None:
    """flock(LOCK_EX), not waiting unless `wait`; `on_wait()` before a wait (BlockingIOError when
    the lock is taken and `wait` is False)."""
    if wait and on_wait is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            on_wait()
    fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def hold_shared(path: Path) -> int:
    """Take a shared flock on the file at `path` (created if needed); the descriptor holding it.
    It is held until the descriptor is closed or the process ends; an exclusive `locked` of the
    same file with `wait=False` meanwhile yields False."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    return fd
