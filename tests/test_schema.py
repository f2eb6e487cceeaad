"""runtime.schema and node.openapi on what the node tests do not serve: nested pydantic models
(their named schemas), recursive dataclasses, tuples and sets, and an endpoint not described yet."""

from __future__ import annotations

import dataclasses
from typing import Optional

import pydantic
from openapi_spec_validator import validate

from apinode.node.openapi import example_body, service_document
from apinode.packaging.definitions import parse_service
from apinode.runtime.schema import describe


class Line(pydantic.BaseModel):
    sku: str
    quantity: int = 1


class Basket(pydantic.BaseModel):
    lines: list[Line]


@dataclasses.dataclass
class Node:
    value: int
    children: list[Node] = dataclasses.field(default_factory=list)
    parent: Optional[Node] = None  # noqa: UP045


def checkout(basket: Basket, tree: Node, pair: tuple[int, str], tags: set[str] = frozenset()) -> list[Line]:
    """Check a basket out."""
    return basket.lines


def test_nested_models_recursion_tuples_and_sets_make_a_valid_document():
    description = describe(checkout, "checkout")
    properties = description["request"]["properties"]
    assert properties["basket"]["properties"]["lines"]["items"] == {"$ref": "#/components/schemas/Line"}
    assert description["schemas"]["Line"]["required"] == ["sku"]  # pydantic's $defs, for components
    assert description["response"]["items"]["title"] == "Line"
    assert properties["pair"] == {
        "type": "array",
        "prefixItems": [{"type": "integer"}, {"type": "string"}],
        "minItems": 2,
        "maxItems": 2,
    }
    assert properties["tags"] == {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    assert properties["tree"]["properties"]["children"] == {"type": "array", "items": {}}  # described once
    definition = parse_service(
        {"id": "shop", "endpoints": [{"id": "checkout", "code": "c.py", "function": "checkout"}]}, "shop"
    )
    document = service_document(definition, {"checkout": description})
    validate(document)
    assert document["components"]["schemas"]["Line"]["properties"]["sku"] == {"title": "Sku", "type": "string"}


def test_odd_hints_are_any_value():
    def odd(x: [int], y: "NoSuchType" = 1):  # type: ignore[valid-type, name-defined]  # noqa: F821, UP037
        pass

    described = describe(odd, "odd")
    assert described["request"]["properties"] == {"x": {}, "y": {"default": 1}}


def test_an_endpoint_that_did_not_load_takes_any_object():
    definition = parse_service({"id": "s", "endpoints": [{"id": "e", "code": "e.py", "function": "f"}]}, "s")
    document = service_document(definition, {"e": None})
    validate(document)
    operation = document["paths"]["/public/api/v1/s/e/run"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {"type": "object"}
    assert example_body(definition.endpoints[0], None) == {}
