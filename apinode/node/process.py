"""A process running apinode's runtime (a pipeline or a template): its channel, its output,
its end, its memory, and the kill of everything it started.

The process is `<python> -s <apinode/runtime> --fd N --endpoint SERVICE/ENDPOINT [--template]`,
started by the node in a session of its own, or forked by a template into one; either way its
pid is its process group, and `kill` kills the group: whatever user code started goes with it.
It talks over its own socket (apinode.runtime.framing); its stdout and stderr go to a pipe the
output relay drains on its own thread (apinode.node.output).

A process the node started is its child and is awaited as such; a forked pipeline is its
template's child, so the node watches its end through a pidfd (Linux 5.3+): the pipeline
outlives a template that dies.

Concurrency model: all methods run on the node's event loop. One exchange at a time on the
channel (the pool and the template's lock guarantee it). A task watches the process's end:
then the channel closes (a waiting exchange fails with ProcessDied), the group is killed (a
grandchild may linger) and `exited()` runs once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import orjson

from ..runtime import framing
from .errors import EndpointLoadFailed
from .output import RELAY, OutputSource


class ItemSink(Protocol):
    """Where a streamed call's items go as they come (apinode.node.stream_answer)."""

    def item(self, payload: bytes | bytearray) -> bool:
        """Take one item; False once the caller is gone (the generator is then closed)."""

    def writable(self) -> asyncio.Future[None]:
        """Done once the caller can take more. Until then the channel stops reading, so the
        pipeline's frames wait in its socket and a slow reader slows the generator down
        instead of filling the node's memory."""


RUNTIME_DIR = Path(framing.__file__).resolve().parent
log = logging.getLogger("apinode.pipeline")
LOAD_TIMEOUT_VARIABLE = "APINODE_LOAD_TIMEOUT"
OUTPUT_GRACE = 1.0  # seconds to finish reading a process's output once it has ended
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SCRATCH = 1 << 16


def load_timeout() -> float:
    """Seconds an endpoint's initialization may take before it counts as failed to load
    (`$APINODE_LOAD_TIMEOUT`, default 300): a hung one must not hold a switch forever."""
    return float(os.environ.get(LOAD_TIMEOUT_VARIABLE, "300"))


@dataclass(frozen=True)
class PipelineSpec:
    """What a pipeline runs; shared by all pipelines of one endpoint of one generation."""

    name: str  # "service/endpoint", for logs and the module name
    code: Path
    function: str
    folders: tuple[Path, ...] = ()
    python: str = sys.executable  # the code env's interpreter, or the node's own
    cwd: Path | None = None
    env: dict[str, str] | None = field(default=None, compare=False)
    max_result_bytes: int | None = None
    batch: bool = False  # called with lists of requests (apinode.runtime.batch)

    def load_frame(self) -> bytes:
        load = {
            "name": self.name,
            "code": str(self.code),
            "function": self.function,
            "folders": [str(folder) for folder in self.folders],
            "maxResultBytes": self.max_result_bytes,
            "batch": self.batch,
        }
        return framing.pack(framing.LOAD, orjson.dumps(load))


@dataclass(frozen=True)
class Reply:
    kind: int  # framing.RESULT or framing.ERROR (or a template's answer)
    status: int
    execution_ms: float
    payload: bytes | bytearray


class ProcessDied(ConnectionError):
    """The channel closed before the answer came: the process ended (or was stopped)."""


class Channel(asyncio.BufferedProtocol):
    """The node's end of the socket: one frame out, one frame back (or, for a streamed call, a
    series of frames, each claimed with `expect`), one future per frame awaited. Plain calls may
    be sent while another is running (the pool sends one ahead): their replies come in the order
    the calls went, and each settles the oldest future waiting; the reply of a caller that left
    (its future cancelled) is dropped there.

    Frames are read into a scratch buffer; a payload larger than it is received in place into
    a buffer of its own size, so a large result crosses without being copied on the way.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scratch = bytearray(SCRATCH)
        self._view = memoryview(self._scratch)
        self._filled = 0
        self._large: bytearray | None = None  # a large payload being received
        self._large_filled = 0
        self._large_header: tuple[int, int, float] = (0, 0, 0.0)
        self._replies: collections.deque[asyncio.Future[Reply]] = collections.deque()  # oldest first
        self._unclaimed: collections.deque[Reply] = collections.deque()  # frames that came before anyone expected them
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()  # kept: on Python 3.11 each lookup is a getpid() system call

    def expect(self) -> asyncio.Future[Reply]:
        """The future of the next frame to come."""
        reply: asyncio.Future[Reply] = (self._loop or asyncio.get_running_loop()).create_future()
        if self._unclaimed:
            reply.set_result(self._unclaimed.popleft())
        elif self.closed:
            reply.set_exception(ProcessDied("channel closed"))
        else:
            self._replies.append(reply)
        return reply

    def exchange(self, frame: bytes) -> asyncio.Future[Reply]:
        reply = self.expect()
        if not reply.done():
            assert self.transport is not None
            self.transport.write(frame)
        return reply

    def call(self, body: bytes, on_item: ItemSink | None = None) -> Awaitable[Reply]:
        """One call's frames (ProcessDied if the channel closes first): its reply; or, with
        `on_item`, a stream: each ITEM goes to `on_item` as it comes (no faster than the caller
        takes them), and the reply is the END (or ERROR) that closes it. Once `on_item` says
        False (the caller went away) the
        pipeline is told to close the generator (CANCEL) and the rest is dropped until that END:
        the pipeline is then free for the next call. (A plain call is the reply's future itself:
        no coroutine on the hot path.)"""
        if on_item is None:
            return self.exchange(framing.pack(framing.CALL, body))
        return self._streamed(body, on_item)

    async def _streamed(self, body: bytes, on_item: ItemSink) -> Reply:
        reply = await self.exchange(framing.pack(framing.CALL_STREAMED, body))
        wanted = True
        while reply.kind == framing.ITEM:
            if wanted:
                wanted = on_item.item(reply.payload)
                if not wanted:
                    if self.transport is not None and not self.closed:
                        self.transport.write(framing.pack(framing.CANCEL))
                else:
                    writable = on_item.writable()
                    if not writable.done():
                        await self._paused_until(writable)
            reply = await self.expect()
        return reply

    async def _paused_until(self, writable: asyncio.Future[None]) -> None:
        """Read nothing more from the pipeline until the caller can take more."""
        assert self.transport is not None
        self.transport.pause_reading()
        try:
            await writable
        finally:
            if not self.closed:
                self.transport.resume_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._large is not None:
            return memoryview(self._large)[self._large_filled :]
        return self._view[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._large is not None:
            self._large_filled += nbytes
            if self._large_filled == len(self._large):
                large, self._large = self._large, None
                self._deliver(*self._large_header, large)
            return
        self._filled += nbytes
        while self._filled >= framing.HEADER.size:
            kind, status, execution_ms, length = framing.HEADER.unpack_from(self._scratch)
            end = framing.HEADER.size + length
            if end > SCRATCH:  # continue into a buffer of the payload's size
                self._large = bytearray(length)
                have = self._filled - framing.HEADER.size
                self._large[:have] = self._view[framing.HEADER.size : self._filled]
                self._large_filled, self._large_header, self._filled = have, (kind, status, execution_ms), 0
                return
            if end > self._filled:
                return
            payload = bytes(self._view[framing.HEADER.size : end])
            rest = self._filled - end
            if rest:  # the start of the next frame (copied out first: the ranges may overlap)
                self._scratch[:rest] = bytes(self._view[end : self._filled])
            self._filled = rest
            self._deliver(kind, status, execution_ms, payload)

    def _deliver(self, kind: int, status: int, execution_ms: float, payload: bytes | bytearray) -> None:
        if not self._replies:
            self._unclaimed.append(Reply(kind, status, execution_ms, payload))
            return
        reply = self._replies.popleft()
        if not reply.done():
            reply.set_result(Reply(kind, status, execution_ms, payload))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        while self._replies:
            reply = self._replies.popleft()
            if not reply.done():
                reply.set_exception(ProcessDied("channel closed"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def fileno(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("socket").fileno())


async def connect(sock: socket.socket) -> Channel:
    """The node's channel on `sock`. Should that fail (out of file descriptors, say), the socket
    is closed: the runtime's watchdog at the other end sees it and ends its process group."""
    try:
        _, channel = await asyncio.get_running_loop().create_connection(Channel, sock=sock)
    except BaseException:
        sock.close()
        raise
    return channel


def output_pipe(name: str) -> tuple[int, OutputSource]:
    """(the write end to give a process as its stdout and stderr, the relayed read end)."""
    read_end, write_end = os.pipe()
    return write_end, RELAY.add(read_end, name)


class RuntimeProcess:
    """One process of apinode's runtime, from its start (or adoption) to its end."""

    role = "pipeline"

    def __init__(
        self, name: str, pid: int, ended: asyncio.Future[int | None], channel: Channel, output: OutputSource
    ) -> None:
        self.name = name
        self.pid = pid
        self.channel = channel
        self.output = output
        self.label = f"{name} {'' if self.role == 'pipeline' else self.role + ' '}pid {pid}"  # for the log
        output.name = self.label
        self.stopping = False
        self._ended = ended
        self._watch = asyncio.ensure_future(self._watch_end())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"

    @staticmethod
    async def start_process(
        spec: PipelineSpec, template: bool
    ) -> tuple[int, asyncio.Future[int | None], Channel, OutputSource]:
        """Start the runtime in its own session: (pid, its end, its channel, its output); the
        load comes next."""
        ours, theirs = socket.socketpair()
        output_fd, output = output_pipe(spec.name)
        try:
            process = await asyncio.create_subprocess_exec(
                spec.python,
                "-s",
                str(RUNTIME_DIR),
                "--fd",
                str(theirs.fileno()),
                "--endpoint",
                spec.name,
                *(["--template"] if template else []),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output_fd,
                stderr=output_fd,
                cwd=spec.cwd,
                env=spec.env,
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise EndpointLoadFailed(f"{spec.name}: cannot start {spec.python}: {exc}") from exc
        finally:
            theirs.close()
            os.close(output_fd)  # the relay sees the pipe's end once the process (and its own) close it
        return process.pid, asyncio.ensure_future(process.wait()), await connect(ours), output

    @staticmethod
    def watch_pid(pid: int) -> asyncio.Future[int | None]:
        """The end of a process that is not the node's child (exit code unknown: None)."""
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[int | None] = loop.create_future()
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            ended.set_result(None)
            return ended

        def on_end() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if not ended.done():
                ended.set_result(None)

        loop.add_reader(pidfd, on_end)
        return ended

    async def load(self, spec: PipelineSpec) -> bytes | bytearray:
        """Send LOAD; the READY payload, or EndpointLoadFailed (the process is then stopped)."""
        try:
            reply = await asyncio.wait_for(self.channel.exchange(spec.load_frame()), load_timeout())
        except asyncio.TimeoutError:
            await self.kill()
            raise EndpointLoadFailed(
                f"{spec.name}: its code did not finish loading within {load_timeout():g} s "
                f"(a hung initialization? raise the limit with {LOAD_TIMEOUT_VARIABLE})",
                self.recent_output(),
            ) from None
        except ProcessDied:
            code = await self._ended
            await self._watch
            raise EndpointLoadFailed(
                f"{spec.name}: the {self.role} exited with code {code} while loading", self.recent_output()
            ) from None
        if reply.kind == framing.LOAD_FAILED:
            failure = orjson.loads(reply.payload)
            await self.stop()
            raise EndpointLoadFailed(f"{spec.name}: {failure['message']}", failure["traceback"])
        return reply.payload

    def recent_output(self) -> str:
        return "".join(self.output.recent)

    async def exchange(self, frame: bytes) -> Reply:
        return await self.channel.exchange(frame)

    def memory_mb(self) -> float:
        """Its resident memory, in MiB (`resident_mb`)."""
        return resident_mb(self.pid)

    def kill_group(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    async def kill(self) -> None:
        """Kill the process and everything it started, at once."""
        self.stopping = True
        self.channel.close()
        self.kill_group()
        await asyncio.shield(self._watch)

    async def stop(self, grace: float = 5.0) -> None:
        """Close the channel (the runtime ends its group at its next read), then kill."""
        self.stopping = True
        self.channel.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._watch), grace)
        except asyncio.TimeoutError:
            await self.kill()

    async def _watch_end(self) -> None:
        code = await self._ended
        if not self.stopping:
            how = "ended" if code is None else f"exited with code {code}"
            log.warning("%s %s", self.label, how)
        self.channel.close()
        self.kill_group()
        self.exited()
        await self.output.finished(OUTPUT_GRACE)

    def exited(self) -> None:
        """Runs once, when the process has ended."""


def resident_mb(pid: int) -> float:
    """Resident memory of a process on this machine (RSS, as `ps` and `top` show it), in MiB;
    0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE / (1 << 20)
    except (OSError, IndexError, ValueError):
        return 0.0
