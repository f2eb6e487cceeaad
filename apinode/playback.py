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

import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .client import NodeClient, NodeError
from .packaging.definitions import DefinitionError, ServiceDef
from .packaging.staging import stage_source
from .results import Report

NODE_START_TIMEOUT = 60.0
NODE_STOP_TIMEOUT = 30.0
ANNOUNCED = re.compile(r"^apinode: serving .* at (http://\S+)$", re.MULTILINE)
"""The line `apinode run` and `apinode serve` print once they listen: its group is the URL."""


def play_service(url: str, definition: ServiceDef, key: str | None = None) -> Report:
    """Play every test query of every endpoint of a service, in order."""
    client = NodeClient(url, key)
    return Report(
        f"service {definition.id} at {url}",
        tuple(
            client.play(definition.id, endpoint.id, query)
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
