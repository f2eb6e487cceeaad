"""Nothing a pipeline or template starts outlives the node.

Every pipeline and template leads its own process group (the node starts or the template forks
it into a new session), and every process user code starts joins that group unless it asks
otherwise. Two things end the group:

- `end_group()`, when the process is done: it kills its group, itself included, so that a
  `subprocess.Popen(["sleep", "3600"])` or a multiprocessing worker goes with it;
- a `Watchdog` thread, for when the node goes away while the main thread is busy in user code
  (`while True: pass` never reads the channel). It waits in `poll()` for the node's end of the
  channel to close (the kernel closes it even when the node is killed with SIGKILL), gives the
  main thread `GRACE` seconds to notice by itself, then kills the group.

No parent-death signal: a forked pipeline's parent is its template, and a template that dies
must not take its living pipelines (and their requests) with it; the channel to the node is
the lifeline that matters.
"""

from __future__ import annotations

import _thread
import os
import select
import signal
import sys

GRACE = 0.5  # seconds the main thread gets to end by itself once the node is gone
_PEER_CLOSED = getattr(select, "POLLRDHUP", 0)  # Linux; elsewhere poll() reports POLLHUP alone


def end_group() -> None:
    """Flush what was printed, then kill this process's group, this process included."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os.killpg(os.getpgid(0), signal.SIGKILL)


class Watchdog:
    """A thread that ends the process group once the peer of `fd` hangs up.

    A bare `_thread` thread: starting it does not wait for it to be scheduled (`threading`'s
    does), which matters to a freshly forked pipeline on a busy machine, and user code listing
    `threading.enumerate()` does not see it."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._wake_read, self._wake_write = os.pipe()
        self._ended = _thread.allocate_lock()
        self._ended.acquire()  # released by the thread as it ends

    def start(self) -> Watchdog:
        _thread.start_new_thread(self._run, ())
        return self

    def stop(self) -> None:
        """End the thread (before a fork: a template forks with no thread but its main one)."""
        os.write(self._wake_write, b"x")
        self._ended.acquire()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _run(self) -> None:
        try:
            self._watch()
        finally:
            self._ended.release()

    def _watch(self) -> None:
        poller = select.poll()
        poller.register(self._fd, _PEER_CLOSED)
        poller.register(self._wake_read, select.POLLIN)
        while True:
            events = dict(poller.poll())
            if self._wake_read in events:
                return
            if events.get(self._fd, 0) & (_PEER_CLOSED | select.POLLHUP | select.POLLERR | select.POLLNVAL):
                break
        stopped = select.poll()
        stopped.register(self._wake_read, select.POLLIN)
        if stopped.poll(GRACE * 1000):
            return
        end_group()
