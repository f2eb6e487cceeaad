"""The query log: one JSON line per request, per service, in `<data-dir>/logs/queries/<service>.log`.

A line holds the time, endpoint, generation, HTTP status and total time in milliseconds, and
the request's parameters when the service opts in (`"logQueryParameters": true` in its
service.json). Files rotate by size (`<service>.log.1`, `.2`, ...).

Concurrency: `record` runs on the event loop and formats the line there, once (about a
microsecond: orjson, and a timestamp whose seconds are formatted once a second). Every
`flush_interval` the loop hands the lines, whole, to one writer thread, which joins them and
appends them, one write per service per batch. So the loop never waits for the disk, and the
thread, which wakes a few times a second however busy the node is, holds the GIL only to join
and write bytes (tens of microseconds per batch; formatting a batch there held it for over a
millisecond, which a request arriving then waited out). `close` writes everything out and
stops the thread.
"""

from __future__ import annotations

import datetime
import glob
import logging
import logging.handlers
import math
import queue
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import tornado.ioloop

_Line = tuple[str, bytes]  # (service, line)


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
        self._pending: list[_Line] = []
        # batches of lines to write, a service id whose log to delete, or None to stop
        self._batches: queue.SimpleQueue[list[_Line] | str | None] = queue.SimpleQueue()
        self._second = -1  # the second `_seconds` formats
        self._seconds = ""
        self._files: dict[str, logging.handlers.RotatingFileHandler] = {}
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
        line: dict[str, Any] = {
            "time": self._timestamp(time.time()),
            "service": service,
            "endpoint": endpoint,
            "generation": generation,
            "status": status,
            "timing": {"total": round(total_ms, 3)},
        }
        if parameters is not None:
            line["parameters"] = _parameters(parameters)
        self._pending.append((service, orjson.dumps(line)))

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
            batch, self._pending = self._pending, []
            self._batches.put(batch)

    def _write_until_closed(self) -> None:
        while (batch := self._batches.get()) is not None:
            if isinstance(batch, str):
                self._delete(batch)
                continue
            lines: dict[str, list[bytes]] = {}
            for service, line in batch:
                lines.setdefault(service, []).append(line)
            for service, service_lines in lines.items():
                self._file(service).handle(logging.makeLogRecord({"msg": b"\n".join(service_lines).decode()}))
        for handler in self._files.values():
            handler.close()

    def _timestamp(self, at: float) -> str:
        """ISO 8601 in UTC to the millisecond, as `datetime.isoformat(timespec="milliseconds")`."""
        fraction, whole = math.modf(at)
        microseconds = round(fraction * 1_000_000)  # rounded as datetime.fromtimestamp rounds
        second = int(whole) + microseconds // 1_000_000
        if second != self._second:
            self._second = second
            self._seconds = datetime.datetime.fromtimestamp(second, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._seconds}.{microseconds % 1_000_000 // 1000:03d}+00:00"

    def _delete(self, service: str) -> None:
        handler = self._files.pop(service, None)
        if handler is not None:
            handler.close()
        for path in self.directory.glob(f"{glob.escape(service)}.log*"):
            path.unlink(missing_ok=True)

    def _file(self, service: str) -> logging.handlers.RotatingFileHandler:
        handler = self._files.get(service)
        if handler is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(
                self.directory / f"{service}.log", maxBytes=self._max_bytes, backupCount=self._backups, encoding="utf-8"
            )
            self._files[service] = handler
        return handler


def _parameters(body: bytes) -> Any:
    """The request as JSON when it is JSON (an empty body is `{}`), else its text."""
    if not body.strip():
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")
