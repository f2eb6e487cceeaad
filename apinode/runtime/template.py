"""A template: an endpoint's code loaded once, and pipelines forked from it on demand.

The node starts it like a pipeline, with `--template`, and sends LOAD on its control socket;
the template runs the initialization, answers READY, then freezes the garbage collector
(`gc.freeze()`: objects built at initialization move to a generation the collector never
walks, so collections in pipelines do not write to the pages they share copy-on-write).

Then, for each FORK frame (carrying the new pipeline's end of its channel and the pipe its
output goes to), it forks. The child leaves the template's session (a process group of its
own, which the node kills as a group), takes those descriptors as its channel and its
stdout/stderr, sets the environment variables the frame's payload may carry (a JSON object:
on a Ray cluster, the GPU ids of the pipeline's own reservation), says READY on its channel
and serves calls with the function the template loaded: no initialization runs again. The
parent answers FORKED with the child's pid.

A template with other threads alive after the initialization (a thread pool, a client's
background thread) cannot fork safely: a fork copies only the calling thread, so a lock held by
another thread stays held forever in the child. It answers FORK_REFUSED, saying which threads,
and the node falls back to spawning pipelines.

Concurrency model: a single thread, blocking on the control socket; SIGCHLD reaps the
pipelines it forked (their exit is the node's business: it watches each pid). When the node
closes the control socket (or dies) the template ends its own group; its pipelines live on
until the node stops them, each watched by its own watchdog.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import sys
import threading
from typing import Any

from . import framing
from .invoke import Invoker
from .lifetime import Watchdog, end_group
from .worker import load, serve_calls


def serve(control: socket.socket) -> None:
    watchdog = Watchdog(control.fileno()).start()  # the initialization may block: the node may go
    invoke = load(control)
    watchdog.stop()
    if invoke is None:
        return
    gc.collect()
    gc.freeze()
    signal.signal(signal.SIGCHLD, _reap)
    while True:
        kind, payload, fds = framing.receive_with_fds(control, 2)
        if kind != framing.FORK or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            raise RuntimeError(f"expected a FORK frame with two descriptors, got kind {kind} with {len(fds)}")
        unsafe = _threads()
        if unsafe:
            for fd in fds:
                os.close(fd)
            framing.send(control, framing.FORK_REFUSED, _refusal(unsafe).encode())
            continue
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:
            _become_pipeline(control, fds, invoke, json.loads(payload) if payload else {})
        for fd in fds:
            os.close(fd)
        framing.send(control, framing.FORKED, str(pid).encode())


def _threads() -> list[str]:
    main = threading.main_thread()
    return [thread.name for thread in threading.enumerate() if thread is not main]


def _refusal(threads: list[str]) -> str:
    return (
        f"{len(threads)} thread{'s' if len(threads) > 1 else ''} still running after the initialization "
        f"({', '.join(threads)}): a forked pipeline would not have them"
    )


def _reap(signum: int, frame: Any) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) != signal.SIGKILL:
            sys.stderr.write(f"pipeline pid {pid} was killed by signal {os.WTERMSIG(status)}\n")
        elif os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
            sys.stderr.write(f"pipeline pid {pid} exited with code {os.WEXITSTATUS(status)}\n")


def _become_pipeline(control: socket.socket, fds: list[int], invoke: Invoker, environment: dict[str, str]) -> None:
    """The forked child: a pipeline in a process group of its own. Never returns."""
    try:
        os.setsid()
        os.environ.update(environment)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        control.close()
        channel_fd, output_fd = fds
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        os.close(output_fd)
        channel = socket.socket(fileno=channel_fd)
        Watchdog(channel_fd).start()
        framing.send(channel, framing.READY)
        serve_calls(channel, invoke)
    except BaseException:  # never back into the template's loop
        import traceback

        traceback.print_exc()
    finally:
        end_group()
        os._exit(0)
