"""The query log: one JSON line per request, per service, in `<data-dir>/logs/queries/<service>.log`.

A line holds the time, endpoint, generation, HTTP status and total time in milliseconds, and
the request's parameters when the service opts in (`"logQueryParameters": true` in its
service.json). Files rotate by size (`<service>.log.1`, `.2`, ...).

Concurrency: `record` runs on the event loop and only appends a tuple to a list. Every
`flush_interval` the loop hands that list, whole, to one writer thread, which builds the lines
(parsing bodies for the parameters there, not on the loop) and appends them, one write per
service per batch. So the loop never waits for the disk, and the thread wakes a few times a
second however busy the node is (a wake-up per request would cost the loop a quarter of its
throughput, in contention for the GIL). `close` writes everything out and stops the thread.
"""

from __future__ import annotations

import datetime
import glob
import logging
import logging.handlers
import queue
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import tornado.ioloop

_Entry = tuple[float, str, str, "str | None", int, float, "bytes | None"]


class QueryLog:
    def __init__(
        self, directory: Path, max_bytes: int = 20 << 20, backups: int = 5, flush_interval: float = 0.2
    ) -> None:
        self.directory = directory
        self._max_bytes = max_bytes
        self._backups = backups
        self._pending: list[_Entry] = []
        # batches of entries to write, a service id whose log to delete, or None to stop
        self._batches: queue.SimpleQueue[list[_Entry] | str | None] = queue.SimpleQueue()
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
        self._pending.append((time.time(), service, endpoint, generation, status, total_ms, parameters))

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
            for entry in batch:
                lines.setdefault(entry[1], []).append(_line(entry))
            for service, service_lines in lines.items():
                self._file(service).handle(logging.makeLogRecord({"msg": b"\n".join(service_lines).decode()}))
        for handler in self._files.values():
            handler.close()

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


def _line(entry: _Entry) -> bytes:
    at, service, endpoint, generation, status, total_ms, parameters = entry
    line: dict[str, Any] = {
        "time": datetime.datetime.fromtimestamp(at, datetime.timezone.utc).isoformat(timespec="milliseconds"),
        "service": service,
        "endpoint": endpoint,
        "generation": generation,
        "status": status,
        "timing": {"total": round(total_ms, 3)},
    }
    if parameters is not None:
        line["parameters"] = _parameters(parameters)
    return orjson.dumps(line)


def _parameters(body: bytes) -> Any:
    """The request as JSON when it is JSON (an empty body is `{}`), else its text."""
    if not body.strip():
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")
