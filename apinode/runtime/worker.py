"""A pipeline's life: load the endpoint once, then answer one call at a time.

`python -s <runtime dir> --fd N --endpoint SERVICE/ENDPOINT` is a spawned pipeline: it loads
the code itself. With `--template` the process is a template instead (apinode.runtime.template):
it loads the code once and forks pipelines that run `serve_calls` with what it loaded.

Concurrency model: the main thread blocks on its channel. The node sends LOAD first, then CALL
frames one at a time and waits for each answer, so a pipeline never holds two requests. A
watchdog thread (apinode.runtime.lifetime) ends the process group if the node goes away while
the main thread is busy. When the node closes the channel the next read ends, and the process
ends its group: nothing user code started survives it.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
from typing import Any

from . import framing
from .invoke import Invoker
from .lifetime import Watchdog, end_group
from .loader import LoadError, load_function_file

USAGE = "usage: python -s <apinode runtime dir> --fd N --endpoint SERVICE/ENDPOINT [--template]\n"


def _load(spec: dict[str, Any]) -> Invoker:
    module_name = "apinode_endpoint_" + spec["name"].replace("/", "_").replace("-", "_")
    function = load_function_file(spec["code"], spec["function"], spec["folders"], module_name)
    return Invoker(function, spec.get("maxResultBytes"))


def load(channel: socket.socket) -> tuple[str, Invoker] | None:
    """Receive LOAD and run the endpoint's initialization; answer READY or LOAD_FAILED.

    (the endpoint's name, its invoker), or None when the code did not load."""
    kind, _, _, payload = framing.receive(channel)
    if kind != framing.LOAD:
        raise RuntimeError(f"expected a LOAD frame first, got kind {kind}")
    spec = json.loads(payload)
    try:
        invoke = _load(spec)
    except LoadError as exc:
        sys.stderr.write(exc.traceback or f"{exc}\n")
        detail = json.dumps({"message": str(exc), "traceback": exc.traceback}).encode()
        framing.send(channel, framing.LOAD_FAILED, detail, status=500)
        return None
    framing.send(channel, framing.READY)
    return spec["name"], invoke


def serve_calls(channel: socket.socket, name: str, invoke: Invoker) -> None:
    """Answer CALL frames until the node closes the channel."""
    while True:
        try:
            _, _, _, body = framing.receive(channel)
        except EOFError:
            return
        outcome = invoke(body)
        if outcome.traceback:
            sys.stderr.write(f"[{name}] {outcome.traceback}")
        kind = framing.RESULT if outcome.ok else framing.ERROR
        framing.send(channel, kind, outcome.payload, outcome.status, outcome.execution_ms)


def _run_pipeline(channel: socket.socket) -> None:
    Watchdog(channel.fileno()).start()
    loaded = load(channel)
    if loaded is not None:
        serve_calls(channel, *loaded)


def main(argv: list[str]) -> int:
    # `--endpoint` is only for people reading `ps`: the LOAD frame says what to run.
    template = argv[4:] == ["--template"]
    if len(argv) != (5 if template else 4) or argv[0] != "--fd" or argv[2] != "--endpoint":
        sys.stderr.write(USAGE)
        return 2
    # Ctrl-C in a terminal reaches the whole process group: the node decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = socket.socket(fileno=int(argv[1]))
    try:
        if template:
            from .template import serve

            serve(channel)
        else:
            _run_pipeline(channel)
    except EOFError:
        pass
    channel.close()
    end_group()
    return 0
