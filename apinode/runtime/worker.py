"""The pipeline's loop: load the endpoint once, then answer one call at a time.

Concurrency model: a single thread, blocking on its channel. The node sends LOAD first, then
CALL frames one at a time and waits for each answer, so a pipeline never holds two requests.
When the node closes the channel (or dies) the next read ends and the process exits.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
from typing import Any

from . import framing
from .errors import error_report
from .invoke import Invoker
from .loader import LoadError, endpoint_module_name, load_function_file
from .schema import describe


def _load(spec: dict[str, Any]) -> Invoker:
    name = endpoint_module_name(spec["name"])
    return Invoker(load_function_file(spec["code"], spec["function"], spec["folders"], name))


def _description(invoke: Invoker, spec: dict[str, Any]) -> bytes:
    """The READY payload: the function described for the OpenAPI document (runtime.schema).
    A hint that cannot be described must not fail the load: the node then documents it as is."""
    try:
        return json.dumps(describe(invoke.function, spec["function"])).encode()
    except Exception as exc:
        sys.stderr.write(f"[{spec['name']}] cannot describe the function for OpenAPI: {type(exc).__name__}: {exc}\n")
        return b""


def serve(channel: socket.socket) -> None:
    kind, _, _, payload = framing.receive(channel)
    if kind != framing.LOAD:
        raise RuntimeError(f"expected a LOAD frame first, got kind {kind}")
    spec = json.loads(payload)
    try:
        invoke = _load(spec)
    except LoadError as exc:
        sys.stderr.write(error_report(f"the code failed to load:\n{exc.traceback or exc}"))
        detail = json.dumps({"message": str(exc), "traceback": exc.traceback}).encode()
        channel.sendall(framing.pack(framing.LOAD_FAILED, detail, status=500))
        return
    channel.sendall(framing.pack(framing.READY, _description(invoke, spec)))
    while True:
        try:
            kind, _, _, body = framing.receive(channel)
        except EOFError:
            return
        outcome = invoke(body)
        if outcome.traceback:
            sys.stderr.write(error_report(f"the function raised:\n{outcome.traceback}"))
        kind = framing.RESULT if outcome.ok else framing.ERROR
        channel.sendall(framing.pack(kind, outcome.payload, outcome.status, outcome.execution_ms))


def main(argv: list[str]) -> int:
    # `--endpoint` is only for people reading `ps`: the LOAD frame says what to run.
    if len(argv) != 4 or argv[0] != "--fd" or argv[2] != "--endpoint":
        sys.stderr.write("usage: python -s <apinode runtime dir> --fd N --endpoint SERVICE/ENDPOINT\n")
        return 2
    # Ctrl-C in a terminal reaches the whole process group: the node decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = socket.socket(fileno=int(argv[1]))
    try:
        serve(channel)
    except EOFError:
        pass
    finally:
        channel.close()
        sys.stdout.flush()
        sys.stderr.flush()
    return 0
