"""`%api_test`: play queries in the kernel through the very code a pipeline runs.

The endpoint's registered code is loaded with `runtime.loader.load_function` as a fresh module
(never the notebook's globals), with its folders as absolute paths, and each query goes through
`runtime.invoke.Invoker`: the same parsing, binding, call and JSON check as on a node. So the
status and body shown are what a node would answer, and an endpoint that leans on a global of
another cell fails here as it would in production. The module is loaded once per `%api_test`
and serves all its queries, as a pipeline serves many calls.
"""

from __future__ import annotations

import json
import linecache
from collections.abc import Callable
from functools import partial
from typing import Any

from ..packaging.definitions import NO_EXPECTED
from ..packaging.magic_syntax import ENDPOINT_MAGIC
from ..packaging.notebooks import EndpointRegistration
from ..results import QueryResult
from ..runtime.batch import BatchInvoker
from ..runtime.errors import error_json
from ..runtime.invoke import Invoker, ItemSink, Outcome
from ..runtime.loader import LoadError, endpoint_module_name, load_function
from .html_tables import RichReport
from .kernel_endpoints import KernelEndpoints, NotRegistered

Invoke = Callable[[bytes, ItemSink | None], Outcome]
"""An endpoint's answer to a request body, its items handed to the sink as they come."""
AD_HOC_QUERY = "query"
"""The name a query typed on the `%api_test` line goes by."""


def run_queries(
    registry: KernelEndpoints,
    service: str,
    endpoint: str,
    query: str | None = None,
    on_item: Callable[[str, Any], None] | None = None,
) -> RichReport:
    """Play `query` (a request body, as JSON text) or else the endpoint's saved test queries.
    A generator's items are judged as the list a node answers; `on_item(query name, item)` is
    called with each as the generator produces it."""
    registration = registry.registration(service, endpoint)
    name = f"{service}/{endpoint}"
    if query is not None:
        bodies = [(AD_HOC_QUERY, query.encode(), NO_EXPECTED)]
    elif registration.test_queries:
        bodies = [(q.name, json.dumps(q.query).encode(), q.expected) for q in registration.test_queries]
    else:
        raise NotRegistered(
            f"{name} has no test queries: add a %%api_test_queries {name} cell, "
            f'or give one: %api_test {name} {{"param": value}}'
        )
    invoke = _load(registry, registration, name)
    results = []
    for query_name, body, expected in bodies:
        items: list[Any] = []
        outcome = invoke(body, None if on_item is None else _collector(items, partial(on_item, query_name)))
        answer = items if outcome.streamed else json.loads(outcome.payload)
        results.append(
            QueryResult(endpoint, query_name, expected, outcome.status, answer, outcome.execution_ms, outcome.traceback)
        )
    return RichReport(f"{name} in the kernel", tuple(results))


def _collector(items: list[Any], on_item: Callable[[Any], None]) -> ItemSink:
    """The sink of a generator's encoded items (runtime.invoke): each decoded, kept, shown."""

    def collect(encoded: bytes) -> bool:
        items.append(json.loads(encoded))
        on_item(items[-1])
        return True

    return collect


def _load(registry: KernelEndpoints, registration: EndpointRegistration, name: str) -> Invoke:
    """The endpoint's code loaded as a pipeline loads it; if it does not load, every call gets
    the node's EndpointLoadFailed answer, with the traceback for the author."""
    folders = registry.folder_paths(registration)
    missing = [str(folder) for folder in folders if not folder.is_dir()]
    if missing:
        raise NotRegistered(f"{name}: folder not found: {', '.join(missing)}")
    filename = f"<{ENDPOINT_MAGIC} {name}>"
    # Cached like an IPython cell, so that tracebacks show the endpoint's lines.
    linecache.cache[filename] = (len(registration.code), None, registration.code.splitlines(keepends=True), filename)
    try:
        function = load_function(
            registration.code,
            filename,
            registration.magic.function,
            [str(folder) for folder in folders],
            endpoint_module_name(name),  # as pipelines do
        )
    except LoadError as error:
        failed = Outcome(500, error_json("EndpointLoadFailed", f"{name}: {error}"), 0.0, error.traceback or None)

        def load_failed(body: bytes, on_item: ItemSink | None) -> Outcome:
            return failed

        return load_failed
    if registration.magic.batch is not None:  # each query is a batch of one, as a lone request on a node
        return BatchInvoker(function).alone
    return Invoker(function)
