"""What pipelines print, relayed to the node's log by one thread, never by the event loop.

Each pipeline and template writes its stdout and stderr to a pipe of its own. One daemon thread
(the relay) reads every such pipe through a selector and logs what comes, line by line, under
`apinode.pipeline`, prefixed with the pipeline's name and pid: at INFO, but for the runtime's
error reports (tracebacks, apinode.runtime.errors), one ERROR record each. Per source a token bucket bounds
what is logged (RATE bytes a second, bursts of BURST): the rest is still read, so that the
writer never blocks, but dropped, and one line says how much was. A line longer than MAX_LINE
is cut, with a note of what was cut.

Why these figures: 50 MB of prints logged in full cost the node's event loop 9.9 s; with the
relay on its own thread and these bounds, they cost the other endpoints nothing measurable
(tests/test_process_model.py), while a pipeline that logs a few lines per request (a few KB a
second) loses nothing.

Concurrency: the event loop adds sources (`OutputRelay.add`) and awaits their end
(`OutputSource.finished`). Everything else happens on the relay thread; additions and
removals reach it through a queue and a wake-up pipe, so only it touches the selector.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import selectors
import threading
import time

from ..runtime.errors import REPORT_MARK, read_error_report

log = logging.getLogger("apinode.pipeline")
_REPORT_MARK = REPORT_MARK.encode()

RATE = 256 * 1024  # bytes a second a pipeline may log, on average
BURST = 1024 * 1024  # bytes it may log at once
MAX_LINE = 16 * 1024  # longest line logged whole
CHUNK = 1 << 16


class OutputSource:
    """One pipe read by the relay: its log prefix, its budget, and the last lines it logged."""

    def __init__(self, relay: OutputRelay, fd: int, name: str) -> None:
        self.relay = relay
        self.fd = fd
        self.name = name
        self.recent: collections.deque[str] = collections.deque(maxlen=20)
        self._loop = asyncio.get_running_loop()
        self._ended: asyncio.Future[None] = self._loop.create_future()
        self._tokens = float(BURST)
        self._refilled = time.monotonic()
        self._pending = b""
        self._dropped_bytes = 0
        self._dropped_lines = 0

    async def finished(self, timeout: float) -> None:
        """Wait until the pipe is at its end; past `timeout` stop reading it (a process the
        pipeline started may hold it open: its output is not worth waiting for)."""
        try:
            await asyncio.wait_for(asyncio.shield(self._ended), timeout)
        except asyncio.TimeoutError:
            self.relay.remove(self)
            await self._ended

    # -- on the relay thread ------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        now = time.monotonic()
        self._tokens = min(BURST, self._tokens + (now - self._refilled) * RATE)
        self._refilled = now
        if self._tokens <= 0:  # over budget: drop the chunk without looking at its lines
            self._drop(self._pending + chunk)
            self._pending = b""
            return
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        if len(self._pending) > MAX_LINE:  # no newline in sight: log what there is
            lines.append(self._pending)
            self._pending = b""
        for index, line in enumerate(lines):
            if self._tokens <= 0:
                rest = lines[index:]
                self._dropped_bytes += sum(map(len, rest)) + len(rest)
                self._dropped_lines += len(rest)
                return
            self._log(line)

    def end(self) -> None:
        if self._pending:
            self._log(self._pending)
            self._pending = b""
        self._note_dropped()
        try:
            self._loop.call_soon_threadsafe(self._set_ended)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def _set_ended(self) -> None:
        if not self._ended.done():
            self._ended.set_result(None)

    def _drop(self, data: bytes) -> None:
        self._dropped_bytes += len(data)
        self._dropped_lines += data.count(b"\n")

    def _note_dropped(self) -> None:
        if self._dropped_bytes:
            log.warning(
                "[%s] %d bytes (%d lines) of output dropped: over %d KiB a second",
                self.name,
                self._dropped_bytes,
                self._dropped_lines,
                RATE // 1024,
            )
            self._dropped_bytes = self._dropped_lines = 0

    def _log(self, line: bytes) -> None:
        self._note_dropped()
        if line.startswith(_REPORT_MARK):  # a traceback the runtime reports: one ERROR record
            report = read_error_report(line.decode("utf-8", "replace"))
            if report is not None:
                self._tokens -= len(line) + 1
                self.recent.append(report)
                log.error("[%s] %s", self.name, report.rstrip("\n"))
                return
        text = line[:MAX_LINE].decode("utf-8", "replace")
        if len(line) > MAX_LINE:
            text += f" [... {len(line) - MAX_LINE} more bytes cut]"
        self._tokens -= min(len(line), MAX_LINE) + 1
        self.recent.append(text + "\n")
        log.info("[%s] %s", self.name, text)


class OutputRelay:
    """The thread that drains every pipeline's output pipe (started with the first one)."""

    def __init__(self) -> None:
        self._requests: collections.deque[tuple[bool, OutputSource]] = collections.deque()
        self._lock = threading.Lock()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._thread: threading.Thread | None = None

    def add(self, fd: int, name: str) -> OutputSource:
        """Relay what is written to `fd` (the read end of a pipe, which the relay then owns)."""
        source = OutputSource(self, fd, name)
        self._request(True, source)
        return source

    def remove(self, source: OutputSource) -> None:
        self._request(False, source)

    def _request(self, add: bool, source: OutputSource) -> None:
        self._requests.append((add, source))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="apinode-output", daemon=True)
                self._thread.start()
        try:
            os.write(self._wake_write, b"x")
        except BlockingIOError:  # the thread has wake-ups pending already
            pass

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._wake_read, selectors.EVENT_READ)
        sources: dict[int, OutputSource] = {}
        while True:
            for key, _ in selector.select():
                if key.fd == self._wake_read:
                    os.read(self._wake_read, 4096)
                    while self._requests:
                        add, source = self._requests.popleft()
                        if add:
                            sources[source.fd] = source
                            selector.register(source.fd, selectors.EVENT_READ)
                        elif sources.get(source.fd) is source:
                            self._close(selector, sources, source)
                    continue
                reading = sources.get(key.fd)
                if reading is None:
                    continue
                try:
                    chunk = os.read(key.fd, CHUNK)
                except OSError:
                    chunk = b""
                if chunk:
                    reading.feed(chunk)
                else:
                    self._close(selector, sources, reading)

    @staticmethod
    def _close(selector: selectors.BaseSelector, sources: dict[int, OutputSource], source: OutputSource) -> None:
        selector.unregister(source.fd)
        del sources[source.fd]
        os.close(source.fd)
        source.end()


RELAY = OutputRelay()
