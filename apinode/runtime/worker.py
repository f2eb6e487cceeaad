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
import select
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from . import framing
from .batch import BatchInvoker
from .errors import error_report
from .invoke import Invoker
from .lifetime import Watchdog, end_group
from .loader import LoadError, endpoint_module_name, load_function_file
from .schema import describe

USAGE = "usage: python -s <apinode runtime dir> --fd N --endpoint SERVICE/ENDPOINT [--template]\n"


def _load(spec: dict[str, Any]) -> Invoker:
    name = endpoint_module_name(spec["name"])
    function = load_function_file(spec["code"], spec["function"], spec["folders"], name)
    invoker = BatchInvoker if spec.get("batch") else Invoker
    return invoker(function, spec.get("maxResultBytes"))


def _description(invoke: Invoker, spec: dict[str, Any]) -> bytes:
    """The READY payload: the function described for the OpenAPI document (runtime.schema).
    A hint that cannot be described must not fail the load: the node then documents it as is."""
    try:
        return json.dumps(describe(invoke.function, spec["function"], bool(spec.get("batch")))).encode()
    except Exception as exc:
        sys.stderr.write(f"[{spec['name']}] cannot describe the function for OpenAPI: {type(exc).__name__}: {exc}\n")
        return b""


def load(channel: socket.socket) -> Invoker | None:
    """Receive LOAD and run the endpoint's initialization; answer READY or LOAD_FAILED.

    The endpoint's invoker, or None when the code did not load."""
    kind, _, _, payload = framing.receive(channel)
    if kind != framing.LOAD:
        raise RuntimeError(f"expected a LOAD frame first, got kind {kind}")
    spec = json.loads(payload)
    try:
        invoke = _load(spec)
    except LoadError as exc:
        sys.stderr.write(error_report(f"the code failed to load:\n{exc.traceback or exc}"))
        detail = json.dumps({"message": str(exc), "traceback": exc.traceback}).encode()
        framing.send(channel, framing.LOAD_FAILED, detail, status=500)
        return None
    framing.send(channel, framing.READY, _description(invoke, spec))
    return invoke


def serve_calls(channel: socket.socket, invoke: Invoker) -> None:
    """Answer CALL and CALL_STREAMED frames until the node closes the channel."""
    while True:
        try:
            kind, _, _, body = framing.receive(channel)
        except EOFError:
            return
        if kind == framing.CANCEL:  # late: the stream it cancels ended before it came
            continue
        on_item = _item_sender(channel) if kind == framing.CALL_STREAMED else None
        outcome = invoke(body, on_item)
        if outcome.traceback:
            sys.stderr.write(error_report(f"the function raised:\n{outcome.traceback}"))
        if not outcome.ok:
            kind = framing.ERROR
        else:
            kind = framing.END if outcome.streamed else framing.RESULT
        framing.send(channel, kind, outcome.payload, outcome.status, outcome.execution_ms)


def _item_sender(channel: socket.socket) -> Callable[[bytes], bool]:
    """Sends each item as an ITEM frame; False once the node has sent CANCEL (read between
    items, without waiting), so that the generator is closed before it produces more."""

    def send_item(item: bytes) -> bool:
        framing.send(channel, framing.ITEM, item)
        readable, _, _ = select.select([channel], [], [], 0)
        if not readable:
            return True
        kind, _, _, _ = framing.receive(channel)  # EOFError: the node is gone, and so are we
        return kind != framing.CANCEL

    return send_item


def _run_pipeline(channel: socket.socket) -> None:
    Watchdog(channel.fileno()).start()
    invoke = load(channel)
    if invoke is not None:
        serve_calls(channel, invoke)


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
