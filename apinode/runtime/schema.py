"""Describe a function for its OpenAPI document: JSON Schemas of its request and result.

Computed where the function lives (the pipeline, at load), sent to the node in the READY frame,
and assembled into the service's document by the node (apinode.node.openapi). The request schema
is what runtime.validation checks: both read hints through runtime.hints.

The description, as JSON:
    {"function": name, "doc": docstring or null, "request": schema of the body object,
     "response": schema of the result (of each item, for a generator), "schemas": named schemas
     (pydantic's $defs) that the others refer to as "#/components/schemas/NAME",
     "stream": whether the function is a generator (sync or async), whose items can stream}
"""

from __future__ import annotations

import datetime
import decimal
import inspect
import uuid
from collections.abc import Callable
from typing import Any

from . import hints

SCHEMA_REF = "#/components/schemas/{model}"

_SIMPLE: dict[Any, dict[str, Any]] = {
    int: {"type": "integer"},
    float: {"type": "number"},
    str: {"type": "string"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    None: {"type": "null"},
    datetime.datetime: {"type": "string", "format": "date-time"},
    datetime.date: {"type": "string", "format": "date"},
    datetime.time: {"type": "string", "format": "time"},
    decimal.Decimal: {"type": "number"},
    uuid.UUID: {"type": "string", "format": "uuid"},
}


class _Schemas:
    """Hint -> JSON Schema; pydantic's named schemas are collected in `named`."""

    def __init__(self) -> None:
        self.named: dict[str, Any] = {}
        self.pending: set[Any] = set()

    def schema(self, hint: Any) -> dict[str, Any]:
        try:
            if hint in self.pending:  # a recursive dataclass or TypedDict: described once
                return {}
        except TypeError:  # an unhashable hint (`x: [int]`): no type we know, any value
            return {}
        self.pending.add(hint)
        try:
            return self._schema(hint)
        finally:
            self.pending.discard(hint)

    def _schema(self, hint: Any) -> dict[str, Any]:
        if hint in _SIMPLE:
            return dict(_SIMPLE[hint])
        origin, args = hints.origin_and_args(hint)
        if hints.is_union(origin):
            return {"anyOf": [self.schema(arg) for arg in args]}
        if hints.is_literal(origin):
            return {"enum": [arg for arg in args if hints.json_value(arg)]}
        if hint in hints.ARRAY_TYPES or origin in hints.ARRAY_TYPES:
            return self._array(origin or hint, args)
        if hint in hints.OBJECT_TYPES or origin in hints.OBJECT_TYPES:
            described: dict[str, Any] = {"type": "object"}
            if len(args) == 2:
                described["additionalProperties"] = self.schema(args[1])
            return described
        if hints.is_enum(hint):
            values = [member.value for member in hint]
            return {"title": hint.__name__, "enum": [value for value in values if hints.json_value(value)]}
        if hints.is_typeddict(hint):
            return self._object(hint, hints.typeddict_fields(hint), closed=False)
        if hints.is_dataclass_type(hint):
            return self._object(hint, hints.dataclass_fields(hint), closed=True)
        if hints.is_pydantic_model(hint):
            return self._pydantic(hint)
        return {}

    def _array(self, origin: Any, args: tuple[Any, ...]) -> dict[str, Any]:
        described: dict[str, Any] = {"type": "array"}
        if origin is tuple and args and args[1:] != (Ellipsis,):
            items = [self.schema(arg) for arg in args]
            described.update(prefixItems=items, minItems=len(items), maxItems=len(items))
        elif args:
            described["items"] = self.schema(args[0])
        if origin in (set, frozenset):
            described["uniqueItems"] = True
        return described

    def _object(self, hint: Any, fields: list[tuple[str, Any, bool]], closed: bool) -> dict[str, Any]:
        described: dict[str, Any] = {
            "title": hint.__name__,
            "type": "object",
            "properties": {name: self.schema(field_hint) for name, field_hint, _ in fields},
        }
        required = [name for name, _, is_required in fields if is_required]
        if required:
            described["required"] = required
        if closed:
            described["additionalProperties"] = False
        return described

    def _pydantic(self, hint: Any) -> dict[str, Any]:
        described: dict[str, Any] = hint.model_json_schema(ref_template=SCHEMA_REF)
        self.named.update(described.pop("$defs", {}))
        return described


def describe(function: Callable[..., Any], name: str, batched: bool = False) -> dict[str, Any]:
    """The function's description (see the module's docstring). A batched function is described
    per request, as callers see it: the request is an item of its one parameter's list hint,
    the response an item of its return hint's."""
    found = hints.type_hints(function)
    schemas = _Schemas()
    if batched:
        return _batched(function, name, found, schemas)
    properties: dict[str, Any] = {}
    required: list[str] = []
    takes_var_keyword = False
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is parameter.VAR_KEYWORD:
            takes_var_keyword = True
            continue
        if parameter.kind is parameter.VAR_POSITIONAL:
            continue
        hint = found.get(parameter.name)
        if hint is not None and parameter.default is None:
            hint = hints.optional(hint)
        described = {} if parameter.name not in found else schemas.schema(hint)
        if parameter.default is not parameter.empty and hints.json_value(parameter.default):
            described["default"] = parameter.default
        properties[parameter.name] = described
        if parameter.default is parameter.empty:
            required.append(parameter.name)
    request: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": takes_var_keyword}
    if required:
        request["required"] = required
    streams = inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)
    result = found.get("return")
    if streams and result is not None:
        result = hints.item_hint(result)
    return {
        "function": name,
        "doc": inspect.getdoc(function),
        "request": request,
        "response": schemas.schema(result) if result is not None else {},
        "schemas": schemas.named,
        "stream": streams,
    }


def _batched(function: Callable[..., Any], name: str, found: dict[str, Any], schemas: _Schemas) -> dict[str, Any]:
    request_hint = hints.batch_request_hint(function, found)
    response_hint = hints.item_hint(found["return"]) if "return" in found else None
    return {
        "function": name,
        "doc": inspect.getdoc(function),
        "request": schemas.schema(request_hint) if request_hint is not None else {"type": "object"},
        "response": schemas.schema(response_hint) if response_hint is not None else {},
        "schemas": schemas.named,
        "stream": False,
    }
