"""Play test queries against a node, and judge and show the results.

`apinode test` plays a service's saved test queries over HTTP, on a node it is given or on one
it starts for the occasion; `%api_test` plays them in the kernel. Both judge and show results
with what is here, so a query passes by the same rule everywhere: status 200, and the response
equal to `expected` when the query states one (numbers within a relative 1e-9 or an absolute
1e-12, since floating-point results may differ in the last bits between machines).

Everything here blocks. A node started here is a child process (`apinode run SOURCE --port 0`,
the very command users run), stopped with SIGTERM, so its pipelines stop with it.
"""

from __future__ import annotations

import base64
import json
import math
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .packaging.definitions import NO_EXPECTED, DefinitionError, ServiceDef, TestQuery
from .packaging.staging import stage_source

REQUEST_TIMEOUT = 60.0
NODE_START_TIMEOUT = 60.0
NODE_STOP_TIMEOUT = 30.0
ANNOUNCED = re.compile(r"^apinode: serving .* at (http://\S+)$", re.MULTILINE)
"""The line `apinode run` and `apinode serve` print once they listen: its group is the URL."""
_CELL_WIDTH = 60


class NodeError(Exception):
    """A node that cannot be reached, started or used; the message says which and why."""


def matches(expected: Any, actual: Any) -> bool:
    """Whether a decoded JSON `actual` is the `expected` one (numbers within a tolerance)."""
    if isinstance(expected, bool) or isinstance(actual, bool):  # True is not 1 in JSON
        return type(expected) is type(actual) and bool(expected == actual)
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(matches(value, actual[key]) for key, value in expected.items())
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(map(matches, expected, actual))
    return bool(expected == actual)


@dataclass(frozen=True)
class QueryResult:
    """One query played: what the node answered (or would answer), judged."""

    endpoint: str
    name: str
    expected: Any  # NO_EXPECTED when the query states none
    status: int
    answer: Any  # the response when status is 200, else the error body
    time_ms: float
    traceback: str | None = None  # for the author (kernel runs); a node keeps it in its log

    @property
    def verdict(self) -> str:
        """PASS (the expected response), OK (200, nothing expected) or FAIL."""
        if self.status != 200:
            return "FAIL"
        if self.expected is NO_EXPECTED:
            return "OK"
        return "PASS" if matches(self.expected, self.answer) else "FAIL"

    @property
    def passed(self) -> bool:
        return self.verdict != "FAIL"


RESULT_HEADERS = ("endpoint", "query", "status", "time ms", "response", "expected", "result")


def result_cells(result: QueryResult) -> tuple[str, ...]:
    """A result as the cells of a table row, in RESULT_HEADERS order (text, not truncated)."""
    if result.status == 200:
        response = _json(result.answer)
    else:
        response = describe_error(result.answer)
    expected = "" if result.expected is NO_EXPECTED else _json(result.expected)
    return (
        result.endpoint,
        result.name,
        str(result.status),
        f"{result.time_ms:.2f}",
        response,
        expected,
        result.verdict,
    )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def describe_error(body: Any) -> str:
    """An error body (`{"errorType", "message", ...}`) as one line."""
    if body is None:
        return "(no body)"
    if isinstance(body, dict) and "message" in body:
        return f"{body.get('errorType', 'Error')}: {body['message']}"
    return _json(body)


@dataclass(frozen=True, repr=False)
class Report:
    """The results of one run; str() is the table, then any traceback, then a summary."""

    title: str
    results: tuple[QueryResult, ...]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    @property
    def summary(self) -> str:
        failed = sum(not result.passed for result in self.results)
        count = len(self.results)
        outcome = f"{failed} FAILED" if failed else "all passed"
        return f"{self.title}: {count} {'query' if count == 1 else 'queries'}, {outcome}"

    def __str__(self) -> str:
        parts = [text_table(RESULT_HEADERS, [result_cells(r) for r in self.results])]
        parts += [f"traceback of {r.endpoint} {r.name!r}:\n{r.traceback.rstrip()}" for r in self.results if r.traceback]
        return "\n\n".join([*parts, self.summary])


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned with spaces; long cells cut to one readable line."""
    cells = [list(headers)] + [[_cut(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells)


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _CELL_WIDTH else text[: _CELL_WIDTH - 3] + "..."


def post(
    url: str,
    body: bytes,
    key: str | None = None,
    content_type: str = "application/json",
    timeout: float = REQUEST_TIMEOUT,
) -> tuple[int, bytes]:
    """POST `body`; (status, answer body) whatever the status. NodeError if nothing answers.

    `key` goes as HTTP Basic user name with an empty password, as the node expects.
    """
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    request = urllib.request.Request(check_url(url), data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()
    except ValueError:  # http.client.InvalidURL: a port that is not a number, a control character
        raise NodeError(_invalid_url(url)) from None
    except OSError as error:  # refused, unknown host, timed out (URLError is an OSError)
        reason = getattr(error, "reason", error)
        raise NodeError(f"cannot reach {url}: {reason}") from None


def check_url(url: str) -> str:
    """`url` if it is an http(s) URL with a host; NodeError (one line) if it is not."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError when the port is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise NodeError(_invalid_url(url))
    return url


def _invalid_url(url: str) -> str:
    return f"invalid URL {url!r}: expected http://host:port (or https://)"


def decode_answer(body: bytes) -> Any:
    """A node's answer as JSON, or the start of its text when it is not JSON (a proxy's page)."""
    try:
        return json.loads(body)
    except ValueError:
        text = body.decode(errors="replace").strip()
        return {"errorType": "NotJson", "message": f"the answer is not JSON: {_cut(text)!r}"}


def play_query(url: str, service_id: str, endpoint_id: str, query: TestQuery, key: str | None = None) -> QueryResult:
    """Play one test query on the node at `url` (its base URL)."""
    run_url = f"{url.rstrip('/')}/public/api/v1/{service_id}/{endpoint_id}/run"
    started = time.perf_counter()
    status, body = post(run_url, json.dumps(query.query).encode(), key)
    elapsed_ms = (time.perf_counter() - started) * 1000
    answer = decode_answer(body)
    if status == 200:
        answer = answer.get("response") if isinstance(answer, dict) else answer
    return QueryResult(endpoint_id, query.name, query.expected, status, answer, elapsed_ms)


def play_service(url: str, definition: ServiceDef, key: str | None = None) -> Report:
    """Play every test query of every endpoint of a service, in order."""
    return Report(
        f"service {definition.id} at {url}",
        tuple(
            play_query(url, definition.id, endpoint.id, query, key)
            for endpoint in definition.endpoints
            for query in endpoint.test_queries
        ),
    )


def play_source(source: Path, url: str | None = None, service_id: str | None = None, key: str | None = None) -> Report:
    """Play the test queries of a service directory, notebook or bundle.

    On the node at `url`, or else on a node started from `source` for the occasion. A private
    service is called with `key`, or else with its first API key.
    """
    definition = stage_source(source, service_id).definition
    if not any(endpoint.test_queries for endpoint in definition.endpoints):
        raise DefinitionError(f"{source}: service {definition.id!r} has no test queries to play")
    if key is None and not definition.public_access and definition.api_keys:
        key = definition.api_keys[0]
    if url is not None:
        return play_service(url, definition, key)
    with local_node(source, definition.id) as local_url:
        return play_service(local_url, definition, key)


@contextmanager
def local_node(source: Path, service_id: str) -> Iterator[str]:
    """`apinode run SOURCE --port 0` as a child process; yields its URL, stops it on exit."""
    process = subprocess.Popen(
        [sys.executable, "-m", "apinode.cli", "run", str(source), "--service", service_id, "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    announced = threading.Event()

    def read() -> None:  # drains the pipe for the node's whole life, so it never blocks
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if ANNOUNCED.match(line.strip()):
                announced.set()
        announced.set()  # the node exited

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        announced.wait(NODE_START_TIMEOUT)
        urls = [match.group(1) for line in lines if (match := ANNOUNCED.match(line.strip()))]
        if not urls:
            log = "".join(lines[-20:]).strip() or "no output"
            raise NodeError(f"the node for {source} did not start: {log}")
        yield urls[0]
    finally:
        stop_child(process, NODE_STOP_TIMEOUT)
        reader.join(5)


def stop_child(process: subprocess.Popen[Any], timeout: float) -> None:
    """Stop a node we started: SIGTERM (it drains and stops its pipelines), `timeout` seconds
    to exit, then SIGKILL (its pipelines exit when their channel to it closes). Reaps it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
