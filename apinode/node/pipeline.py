"""One pipeline: a worker process running one endpoint's code, serving one request at a time.

The process is `<python> -s <apinode/runtime> --fd N --endpoint SERVICE/ENDPOINT`, talking over its own socket
(apinode.runtime.framing). Its stdout and stderr, where user code prints, are relayed line by
line to the node's log at INFO, but for the runtime's error reports (tracebacks), logged at ERROR
under the endpoint's name (apinode.runtime.errors). A pipeline knows nothing of HTTP, and the
pool knows nothing of processes.

Concurrency model: all methods run on the node's event loop. `call` must not be entered twice at
once (the pool guarantees it). The process's exit is watched by a task; `on_exit` fires once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..runtime import framing
from ..runtime.errors import read_error_report
from .errors import EndpointLoadFailed, PipelineDied

RUNTIME_DIR = Path(framing.__file__).resolve().parent
log = logging.getLogger("apinode.pipeline")
RELAY_CHUNK = 1 << 16
LOAD_TIMEOUT_VARIABLE = "APINODE_LOAD_TIMEOUT"


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


@dataclass(frozen=True)
class Reply:
    kind: int  # framing.RESULT or framing.ERROR
    status: int
    execution_ms: float
    payload: bytes


class _Channel(asyncio.Protocol):
    """The node's end of the socket: one frame out, one frame back, one future per exchange.

    A protocol rather than a StreamReader: the answer is assembled in `data_received` and the
    waiting request is woken once, which matters at thousands of requests per second.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._reply: asyncio.Future[Reply] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def exchange(self, frame: bytes) -> asyncio.Future[Reply]:
        reply = asyncio.get_running_loop().create_future()
        if self.closed:
            reply.set_exception(ConnectionResetError("channel closed"))
            return reply
        self._reply = reply
        assert self.transport is not None
        self.transport.write(frame)
        return reply

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if len(buffer) < framing.HEADER.size:
            return
        kind, status, execution_ms, length = framing.HEADER.unpack_from(buffer)
        end = framing.HEADER.size + length
        if len(buffer) < end:
            return
        payload = bytes(buffer[framing.HEADER.size : end])
        del buffer[:end]
        reply, self._reply = self._reply, None
        if reply is not None and not reply.done():
            reply.set_result(Reply(kind, status, execution_ms, payload))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reply, self._reply = self._reply, None
        if reply is not None and not reply.done():
            reply.set_exception(ConnectionResetError("channel closed"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class ProcessPipeline:
    def __init__(self, spec: PipelineSpec, process: asyncio.subprocess.Process, channel: _Channel) -> None:
        self.spec = spec
        self.process = process
        self._channel = channel
        self._recent_output: collections.deque[str] = collections.deque(maxlen=20)
        self.description: dict[str, Any] | None = None  # the function, as its READY frame described it
        self._on_exit: Callable[[ProcessPipeline], None] | None = None
        self._relay = asyncio.ensure_future(self._relay_output())
        self._watch = asyncio.ensure_future(self._watch_exit())

    @property
    def pid(self) -> int:
        return self.process.pid

    def __repr__(self) -> str:
        return f"<pipeline {self.spec.name} pid {self.pid}>"

    @classmethod
    async def start(cls, spec: PipelineSpec) -> ProcessPipeline:
        """Start the process and load the endpoint; EndpointLoadFailed if it does not load."""
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                spec.python,
                "-s",
                str(RUNTIME_DIR),
                "--fd",
                str(theirs.fileno()),
                "--endpoint",
                spec.name,
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=spec.cwd,
                env=spec.env,
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise EndpointLoadFailed(f"{spec.name}: cannot start {spec.python}: {exc}") from exc
        finally:
            theirs.close()
        _, channel = await asyncio.get_running_loop().create_connection(_Channel, sock=ours)
        pipeline = cls(spec, process, channel)
        await pipeline._load()
        return pipeline

    async def _load(self) -> None:
        spec = self.spec
        load = {
            "name": spec.name,
            "code": str(spec.code),
            "function": spec.function,
            "folders": [str(folder) for folder in spec.folders],
        }
        try:
            reply = await asyncio.wait_for(
                self._exchange(framing.pack(framing.LOAD, orjson.dumps(load))), load_timeout()
            )
        except asyncio.TimeoutError:
            await self.stop(grace=0)
            raise EndpointLoadFailed(
                f"{spec.name}: its code did not finish loading within {load_timeout():g} s "
                f"(a hung initialization? raise the limit with {LOAD_TIMEOUT_VARIABLE})",
                "".join(self._recent_output),
            ) from None
        except PipelineDied:
            code = await self.process.wait()
            await self._relay
            output = "".join(self._recent_output)
            raise EndpointLoadFailed(
                f"{spec.name}: the pipeline exited with code {code} while loading", output
            ) from None
        if reply.kind == framing.LOAD_FAILED:
            failure = orjson.loads(reply.payload)
            await self.stop()
            raise EndpointLoadFailed(f"{spec.name}: {failure['message']}", failure["traceback"])
        if reply.payload:
            self.description = orjson.loads(reply.payload)

    async def _exchange(self, frame: bytes) -> Reply:
        try:
            return await self._channel.exchange(frame)
        except ConnectionError as exc:
            raise PipelineDied(f"{self.spec.name}: the pipeline died while handling the request") from exc

    async def call(self, body: bytes) -> Reply:
        """Run one request; PipelineDied if the process dies before answering."""
        return await self._exchange(framing.pack(framing.CALL, body))

    def set_exit_callback(self, callback: Callable[[ProcessPipeline], None]) -> None:
        self._on_exit = callback

    async def _watch_exit(self) -> None:
        code = await self.process.wait()
        if code != 0:
            log.warning("%s pid %s exited with code %s", self.spec.name, self.pid, code)
        self._channel.close()
        if self._on_exit is not None:
            self._on_exit(self)

    async def _relay_output(self) -> None:
        """Log what user code prints, line by line, however long a line (or a progress bar
        redrawn with \\r) gets: the pipe must always be drained, or the worker blocks."""
        stream = self.process.stdout
        assert stream is not None
        prefix = f"[{self.spec.name} pid {self.pid}] "
        pending = b""
        while chunk := await stream.read(RELAY_CHUNK):
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) >= RELAY_CHUNK:  # no newline in sight: log what there is
                lines.append(pending)
                pending = b""
            for line in lines:
                self._log_output(prefix, line)
        if pending:
            self._log_output(prefix, pending)

    def _log_output(self, prefix: str, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        report = read_error_report(text)
        if report is not None:
            self._recent_output.append(report)
            log.error("%s%s", prefix, report.rstrip("\n"))
        else:
            self._recent_output.append(text + "\n")
            log.info("%s%s", prefix, text)

    async def stop(self, grace: float = 5.0) -> None:
        """Close the channel (the worker exits at its next read), then terminate, then kill."""
        self._channel.close()
        for signal_it in (self.process.terminate, self.process.kill):
            try:
                await asyncio.wait_for(asyncio.shield(self._watch), grace)
                break
            except asyncio.TimeoutError:
                try:
                    signal_it()
                except ProcessLookupError:
                    pass
        else:
            await self._watch
        await self._relay
