"""The query log: one JSON line per request, per service, in `<data-dir>/logs/queries/<service>.log`.

A line holds the time, endpoint, generation, HTTP status and total time in milliseconds, and
the request's parameters when the service opts in (`"logQueryParameters": true` in its
service.json). Files rotate by size (`<service>.log.1`, `.2`, ...), as logging's
RotatingFileHandler rotates them.

Concurrency: `record` runs on the event loop and formats the line there, once, from a template
(about a microsecond: the JSON of a line's service, endpoint and generation is kept, and a
timestamp is formatted once a millisecond). Every `flush_interval` the loop joins each
service's lines into one bytes object (tens of microseconds) and hands the batch to one writer
thread, which appends each with `os.write`: the thread holds the GIL only to start the system
call, never for work proportional to the lines (formatting or encoding a batch there held it
for over a millisecond, which a request arriving then waited out). So the loop never waits for
the disk. `close` writes everything out and stops the thread.
"""

from __future__ import annotations

import datetime
import glob
import logging
import logging.handlers
import math
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import tornado.ioloop

log = logging.getLogger("apinode.node")

_Batch = list[tuple[str, bytes]]  # (service, its lines joined)
_LINE = b'{"time":"%b",%b,"status":%d,"timing":{"total":%b}%b}'
"""A line, as `orjson.dumps` of {"time", "service", "endpoint", "generation", "status", "timing",
"parameters"?}: the same keys in the same order."""
MAX_KEPT_FIELDS = 1024
"""(service, endpoint, generation) triples whose JSON is kept; the endpoint comes from the URL,
so a client asking for endpoints that do not exist must not grow the cache without bound."""


class QueryLog:
    def __init__(
        self,
        directory: Path,
        max_bytes: int = 20 << 20,
        backups: int = 5,
        flush_interval: float = 0.2,
        enabled: bool = True,
    ) -> None:
        """A disabled log (`apinode serve --no-query-log`) records nothing."""
        self.directory = directory
        self.enabled = enabled
        self._max_bytes = max_bytes
        self._backups = backups
        self._pending: dict[str, list[bytes]] = {}  # lines by service, since the last flush
        self._fields: dict[tuple[str, str, str | None], bytes] = {}  # '"service":..,"endpoint":..,"generation":..'
        # batches to write, a service id whose log to delete, or None to stop
        self._batches: queue.SimpleQueue[_Batch | str | None] = queue.SimpleQueue()
        self._second = -1  # the second `_seconds` formats
        self._seconds = b""
        self._millisecond = -1  # the millisecond `_stamp` formats
        self._stamp = b""
        self._files: dict[str, _LogFile] = {}  # the writer thread's own
        self._flusher = tornado.ioloop.PeriodicCallback(self._flush, flush_interval * 1000)
        self._writer = threading.Thread(target=self._write_until_closed, name="apinode-query-log", daemon=True)

    def start(self) -> None:
        """Start writing; call on the event loop."""
        self._writer.start()
        self._flusher.start()

    def record(
        self,
        service: str,
        endpoint: str,
        generation: str | None,
        status: int,
        total_ms: float,
        parameters: bytes | None,
    ) -> None:
        """Log one request; `parameters` is its body, when the service logs parameters."""
        if not self.enabled:
            return
        key = (service, endpoint, generation)
        fields = self._fields.get(key)
        if fields is None:
            if len(self._fields) >= MAX_KEPT_FIELDS:
                self._fields.clear()
            fields = self._fields[key] = orjson.dumps(
                {"service": service, "endpoint": endpoint, "generation": generation}
            )[1:-1]
        line = _LINE % (
            self._timestamp(time.time()),
            fields,
            status,
            orjson.dumps(round(total_ms, 3)),
            b"" if parameters is None else b',"parameters":' + orjson.dumps(_parameters(parameters)),
        )
        lines = self._pending.get(service)
        if lines is None:
            self._pending[service] = [line]
        else:
            lines.append(line)

    def forget(self, service: str) -> None:
        """Delete a deleted service's log (after writing what it had pending), on the writer thread."""
        self._flush()
        self._batches.put(service)

    def close(self) -> None:
        """Write out everything recorded, then stop the writer (on the event loop, like `start`)."""
        self._flusher.stop()
        self._flush()
        self._batches.put(None)
        self._writer.join()

    def _flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, {}
            for lines in pending.values():
                lines.append(b"")  # so that the joined lines end with a newline
            self._batches.put([(service, b"\n".join(lines)) for service, lines in pending.items()])

    def _write_until_closed(self) -> None:
        while (batch := self._batches.get()) is not None:
            if isinstance(batch, str):
                self._delete(batch)
                continue
            for service, data in batch:
                try:
                    self._file(service).append(data)
                except OSError as error:  # a full disk loses lines, not the writer
                    log.error("could not write the query log of %s (%d bytes lost): %s", service, len(data), error)
        for file in self._files.values():
            file.close()

    def _timestamp(self, at: float) -> bytes:
        """ISO 8601 in UTC to the millisecond, as `datetime.isoformat(timespec="milliseconds")`;
        formatted once a millisecond (a busy node logs several requests in one)."""
        fraction, whole = math.modf(at)
        # microseconds rounded as datetime.fromtimestamp rounds them, then cut to milliseconds
        millisecond = int(whole) * 1000 + round(fraction * 1_000_000) // 1000
        if millisecond != self._millisecond:
            self._millisecond = millisecond
            second, milliseconds = divmod(millisecond, 1000)
            if second != self._second:
                self._second = second
                utc = datetime.datetime.fromtimestamp(second, datetime.timezone.utc)
                self._seconds = utc.strftime("%Y-%m-%dT%H:%M:%S").encode()
            self._stamp = b"%b.%03d+00:00" % (self._seconds, milliseconds)
        return self._stamp

    def _delete(self, service: str) -> None:
        file = self._files.pop(service, None)
        if file is not None:
            file.close()
        for path in self.directory.glob(f"{glob.escape(service)}.log*"):
            path.unlink(missing_ok=True)

    def _file(self, service: str) -> _LogFile:
        file = self._files.get(service)
        if file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            file = self._files[service] = _LogFile(self.directory / f"{service}.log", self._max_bytes, self._backups)
        return file


class _LogFile:
    """One service's log, appended with `os.write` (which releases the GIL while the disk works)
    and rotated by size by logging's RotatingFileHandler, which only renames here: a batch that
    would take a non-empty file to `max_bytes` or more goes to a new file. Used by the writer
    thread alone."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self._path = path
        self._max_bytes = max_bytes
        self._rotation = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, delay=True)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def append(self, data: bytes) -> None:
        if self._size and self._size + len(data) >= self._max_bytes:
            os.close(self._fd)
            self._rotation.doRollover()
            self._fd = self._open()
            self._size = 0
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._size += len(data)

    def close(self) -> None:
        os.close(self._fd)
        self._rotation.close()

    def _open(self) -> int:
        return os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _parameters(body: bytes) -> Any:
    """The request as JSON when it is JSON (an empty body is `{}`), else its text."""
    if not body.strip():
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")
