"""Requests checked against the function's hints before it runs (runtime.validation), and
strict JSON bodies; through the Invoker every pipeline and `%api_test` use, and a real node."""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import Literal, Optional, Union

import pytest
import requests
from support import SERVICES

from apinode.runtime.invoke import Invoker


def _typed():
    """The hinted types of tests/services/datatypes/typed.py, which the node tests serve."""
    spec = importlib.util.spec_from_file_location("datatypes_typed", SERVICES / "datatypes" / "typed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


typed = _typed()
Plan, Address, Box, Order = typed.Plan, typed.Address, typed.Box, typed.Order


def call(function, body):
    outcome = Invoker(function)(json.dumps(body).encode() if not isinstance(body, bytes) else body)
    return outcome.status, json.loads(outcome.payload)


def refused(function, body):
    status, answer = call(function, body)
    assert status == 400, answer
    assert answer["errorType"] == "InvalidParameters"
    return answer["message"]


def numbers(count: int, ratio: float, name: str, flag: bool):
    return [count, ratio, name, flag]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"count": True}, "parameter 'count' must be an integer, got a boolean (true)"),
        ({"count": 1.5}, "parameter 'count' must be an integer, got a number (1.5)"),
        ({"ratio": "1"}, "parameter 'ratio' must be a number, got a string (\"1\")"),
        ({"ratio": False}, "parameter 'ratio' must be a number, got a boolean (false)"),
        ({"name": None}, "parameter 'name' must be a string, got null"),
        ({"flag": 1}, "parameter 'flag' must be a boolean, got an integer (1)"),
    ],
)
def test_simple_types_are_refused_by_name(body, message):
    assert refused(numbers, {"count": 1, "ratio": 0.5, "name": "n", "flag": True, **body}) == message


def test_an_integer_is_a_valid_number():
    assert call(numbers, {"count": 1, "ratio": 2, "name": "n", "flag": False}) == (200, [1, 2, "n", False])


def nested(
    boxes: list[Box],
    address: Address,
    tags: dict[str, int],
    unit: Literal["cm", "in"] = "cm",
    plan: Plan = Plan.FREE,
    note: Optional[str] = None,
    weight: Union[int, str] = 0,
    order: Optional[Order] = None,
):
    return {
        "boxes": [type(box).__name__ for box in boxes],
        "plan": type(plan).__name__,
        "order": type(order).__name__,
    }


GOOD = {"boxes": [{"width": 2}], "address": {"city": "Paris", "zip": 75001}, "tags": {"a": 1}}


def test_nested_values_are_checked_and_built_as_hinted():
    status, answer = call(nested, {**GOOD, "plan": "pro", "order": {"item": "x", "quantity": 2}, "weight": "heavy"})
    assert (status, answer) == (200, {"boxes": ["Box"], "plan": "Plan", "order": "Order"})


@pytest.mark.parametrize(
    "body, message",
    [
        ({"boxes": [{"width": "2"}]}, 'parameter \'boxes\'[0]["width"] must be a number, got a string ("2")'),
        ({"boxes": [{"width": 1, "depth": 2}]}, "must be a Box object, got an object with unexpected 'depth'"),
        ({"boxes": {"width": 1}}, "parameter 'boxes' must be an array of Box objects, got an object"),
        ({"address": {"city": "Paris"}}, "parameter 'address' must be an Address object, got an object without 'zip'"),
        ({"tags": {"a": "1"}}, 'parameter \'tags\'["a"] must be an integer, got a string ("1")'),
        ({"unit": "mm"}, 'parameter \'unit\' must be one of "cm", "in", got a string ("mm")'),
        ({"plan": "gold"}, 'parameter \'plan\' must be a Plan: one of "free", "pro", got a string ("gold")'),
        ({"note": 3}, "parameter 'note' must be a string, got an integer (3)"),
        ({"weight": 1.5}, "parameter 'weight' must be an integer or a string, got a number (1.5)"),
        (
            {"order": {"item": "x"}},
            "parameter 'order' must be an Order object, got an object (quantity: Field required)",
        ),
    ],
)
def test_nested_mistakes_are_named_with_their_path(body, message):
    assert message in refused(nested, {**GOOD, **body})


def test_null_is_accepted_where_the_default_is_none():
    def f(count: int = None):  # type: ignore[assignment]
        return count

    assert call(f, {"count": None}) == (200, None)


def test_unhinted_parameters_and_kwargs_are_left_alone():
    def f(data, count: int = 1, **extra: int):
        return [data, count, extra]

    assert call(f, {"data": {"any": ["thing"]}, "extra": "not an int"}) == (
        200,
        [{"any": ["thing"]}, 1, {"extra": "not an int"}],
    )


def test_missing_and_unexpected_parameters_are_still_named():
    assert "missing parameter 'name'" in refused(numbers, {"count": 1, "ratio": 0.5, "flag": True})


def test_unresolvable_hints_leave_the_function_unchecked():
    def f(x: "NoSuchType"):  # type: ignore[name-defined]  # noqa: F821
        return x

    def g(x: [int], y: int):  # type: ignore[valid-type]  # an unhashable hint
        return x

    def h(x: "NoSuchType", y: int):  # type: ignore[name-defined]  # noqa: F821
        return x

    assert call(f, {"x": 1}) == (200, 1)
    assert "parameter 'y' must be an integer" in refused(h, {"x": "any", "y": "1"})
    assert call(g, {"x": "any", "y": 1}) == (200, "any")
    assert "parameter 'y' must be an integer" in refused(g, {"x": 1, "y": "1"})


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b'{"x": NaN}', "NaN is not JSON"),
        (b'{"x": -Infinity}', "-Infinity is not JSON"),
        (b'{"x": "\\ud800"}', "lone surrogate"),
        (b'{"x": "\\udc00\\ud800"}', "lone surrogate"),
        (b'{"x": "\xff"}', "not a JSON object"),
    ],
)
def test_request_bodies_are_strict_json(body, fragment):
    status, answer = call(lambda x=None: x, body)
    assert status == 400 and answer["errorType"] == "BadRequest"
    assert fragment in answer["message"]


def test_a_surrogate_pair_is_one_character():
    assert call(lambda x: x, b'{"x": "\\ud83d\\ude00"}') == (200, "\U0001f600")


@pytest.fixture(scope="module")
def node(datatypes_node):
    return datatypes_node


def test_through_a_node(node):
    url = f"{node.url}/public/api/v1/datatypes/score/run"
    good = {"age": 35, "price": 2.5, "name": "ada", "active": True}
    assert requests.post(url, json=good, timeout=30).json()["response"] == 87.5
    answer = requests.post(url, json={**good, "age": "35"}, timeout=30)
    assert answer.status_code == 400
    assert answer.json()["message"] == "parameter 'age' must be an integer, got a string (\"35\")"
    nan = requests.post(url, data=b'{"age": NaN}', timeout=30)
    assert nan.status_code == 400 and nan.json()["errorType"] == "BadRequest"
