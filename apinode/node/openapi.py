"""A service's OpenAPI 3.1 document, from its definition and its functions' descriptions.

Each function is described where it lives (runtime.schema, in its pipeline at load); this
module only assembles: one `POST .../<endpoint>/run` per endpoint, its request schema and
docstring, the test queries as examples, the result inside the response envelope, and the
error responses DESIGN.md fixes. Served by apinode.node.openapi_handlers and printed by
`apinode openapi`, from the same function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..packaging.definitions import EndpointDef, ServiceDef

OPENAPI_VERSION = "3.1.0"
ERROR_SCHEMA = "#/components/schemas/Error"
SECURITY_SCHEME = "apiKey"

# status -> when (DESIGN.md, "Calling an endpoint")
ERRORS: dict[str, str] = {
    "400": "The body is not a JSON object, or its attributes do not fit the parameters (InvalidParameters)",
    "401": "The service is private and no valid API key was sent",
    "404": "Unknown service or endpoint, or the service is disabled",
    "413": "The body is larger than the node's limit",
    "500": "The function raised, its result could not be encoded, or its pipeline died",
    "503": "The endpoint's queue is full, or the request waited longer than the pool's timeout",
    "504": "The call ran longer than the pool's executionTimeout",
}

TIMING = {
    "type": "object",
    "properties": {name: {"type": "number"} for name in ("wait", "execution", "total")},
    "description": "milliseconds queued, in the function, and in all",
}
API_CONTEXT = {
    "type": "object",
    "properties": {name: {"type": "string"} for name in ("serviceId", "endpointId", "serviceGeneration")},
}
ERROR = {
    "type": "object",
    "required": ["errorType", "message", "detailedMessage"],
    "properties": {name: {"type": "string"} for name in ("errorType", "message", "detailedMessage")},
}
UNDESCRIBED: dict[str, Any] = {
    "function": None,
    "doc": None,
    "request": {"type": "object"},
    "response": {},
    "schemas": {},
}
"""For an endpoint whose function has not loaded (yet): any object in, any value out."""


def service_document(
    definition: ServiceDef, descriptions: Mapping[str, dict[str, Any] | None], generation: str | None = None
) -> dict[str, Any]:
    """The OpenAPI document of a service; `descriptions` maps endpoint ids to runtime.schema's."""
    named: dict[str, Any] = {"Error": ERROR}
    paths = {}
    for endpoint in definition.endpoints:
        description = descriptions.get(endpoint.id) or UNDESCRIBED
        named.update(description.get("schemas") or {})
        run_path = f"/public/api/v1/{definition.id}/{endpoint.id}/run"
        paths[run_path] = {"post": _operation(definition, endpoint, description)}
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"{definition.id} (apinode service)",
            "version": generation or definition.generation or "unversioned",
            "description": f"The endpoints of service {definition.id!r}: POST a JSON object of parameters to each.",
        },
        "paths": paths,
        "components": {"schemas": named},
    }
    if not definition.public_access:
        document["components"]["securitySchemes"] = {
            SECURITY_SCHEME: {
                "type": "http",
                "scheme": "basic",
                "description": "the API key as the user name, with an empty password",
            }
        }
        document["security"] = [{SECURITY_SCHEME: []}]
    return document


def _operation(definition: ServiceDef, endpoint: EndpointDef, description: dict[str, Any]) -> dict[str, Any]:
    doc = description.get("doc") or ""
    function = description.get("function") or endpoint.function
    request = description["request"]
    media: dict[str, Any] = {"schema": request}
    examples = _examples(endpoint)
    if examples:
        media["examples"] = examples
    operation: dict[str, Any] = {
        "operationId": endpoint.id,
        "summary": doc.splitlines()[0] if doc else f"Call {function}",
        "description": doc or f"Calls the function {function!r} with the body's attributes as its arguments.",
        "requestBody": {"required": bool(request.get("required")), "content": {"application/json": media}},
        "responses": {
            "200": _success(description),
            **{
                status: {"description": why, "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA}}}}
                for status, why in ERRORS.items()
                if status != "401" or not definition.public_access
            },
        },
    }
    return operation


def _success(description: dict[str, Any]) -> dict[str, Any]:
    result = description.get("response") or {}
    if not description.get("stream"):
        return {
            "description": "The function's result, in `response`",
            "content": {"application/json": {"schema": _envelope(result)}},
        }
    return {
        "description": (
            "The generator's items: as a list in `response` (application/json, the default); as "
            "server-sent events with `Accept: text/event-stream` (`data: <item>` each, then `event: end` "
            "with timing and apiContext, or `event: error` with the error object); as JSON lines with "
            '`Accept: application/x-ndjson` (one item each, then a last line {"event": "end"|"error", "data": ...})'
        ),
        "content": {
            "application/json": {"schema": _envelope({"type": "array", "items": result})},
            "text/event-stream": {"schema": {"type": "string"}, "x-itemSchema": result},
            "application/x-ndjson": {"schema": {"type": "string"}, "x-itemSchema": result},
        },
    }


def _examples(endpoint: EndpointDef) -> dict[str, Any]:
    """The endpoint's test queries, under names unique within the operation."""
    examples: dict[str, Any] = {}
    for test_query in endpoint.test_queries:
        name = test_query.name or "query"
        unique, count = name, 1
        while unique in examples:
            count += 1
            unique = f"{name} ({count})"
        examples[unique] = {"summary": name, "value": test_query.query}
    return examples


def _envelope(response: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["response", "timing", "apiContext"],
        "properties": {"response": response, "timing": TIMING, "apiContext": API_CONTEXT},
    }


def example_body(endpoint: EndpointDef, description: dict[str, Any] | None) -> Any:
    """A request body to show: the first test query, else one built from the request schema."""
    if endpoint.test_queries:
        return endpoint.test_queries[0].query
    request: dict[str, Any] = (description or UNDESCRIBED)["request"]
    return {
        name: _example(schema)
        for name, schema in request.get("properties", {}).items()
        if name in request.get("required", ())
    }


_EXAMPLES = {"integer": 0, "number": 0.0, "string": "", "boolean": False, "null": None, "array": [], "object": {}}


def _example(schema: dict[str, Any]) -> Any:
    if "default" in schema:
        return schema["default"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "anyOf" in schema:
        return _example(schema["anyOf"][0])
    if schema.get("type") == "object" and "properties" in schema:
        return {name: _example(schema["properties"][name]) for name in schema.get("required", ())}
    return _EXAMPLES.get(schema.get("type", ""))
