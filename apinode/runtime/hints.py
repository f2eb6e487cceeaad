"""Read a function's type hints, and tell the kinds of hint apart, for schemas and validation.

Both the OpenAPI description (runtime.schema) and request validation (runtime.validation) read
hints through here, so a parameter is described exactly as it is checked. Python 3.9+ and the
standard library only: TypedDict and pydantic models are recognized without the 3.10+ helpers
or an import of pydantic. `X | Y` is recognized where the endpoint's interpreter can evaluate
it (3.10+): on 3.9 such a hint cannot be read, and its parameter is left unchecked and said so
in the node's log.
"""

from __future__ import annotations

import collections.abc as abc
import dataclasses
import enum
import inspect
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

UNION_TYPES: tuple[Any, ...] = (typing.Union,) + ((types.UnionType,) if hasattr(types, "UnionType") else ())
# What `get_origin` gives for list[X], Sequence[X], ... (and the bare classes, unparameterized)
ARRAY_TYPES = frozenset({list, set, frozenset, tuple, abc.Sequence, abc.Iterable, abc.Collection, abc.Set})
OBJECT_TYPES = frozenset({dict, abc.Mapping})


def type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    """Name -> hint for the hinted parameters (and "return"). A hint that cannot be resolved (it
    names something undefined) is left out: that parameter is described and passed unchecked."""
    target = function if inspect.isfunction(function) or inspect.ismethod(function) else type(function).__call__
    try:
        return typing.get_type_hints(target)
    except Exception:
        pass
    resolved = {}
    namespace = getattr(target, "__globals__", {})
    for name, annotation in getattr(target, "__annotations__", {}).items():
        try:  # as get_type_hints does, one hint at a time
            resolved[name] = typing.get_type_hints(_Annotated(name, annotation), namespace)[name]
        except Exception as exc:
            where = getattr(target, "__qualname__", "the function")
            sys.stderr.write(f"apinode: {where}: the hint of {name!r} cannot be read ({exc}): it is not checked\n")
    return resolved


class _Annotated:
    """An object with a single annotation, for `get_type_hints` to resolve it alone."""

    def __init__(self, name: str, annotation: Any) -> None:
        self.__annotations__ = {name: annotation}


def origin_and_args(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    return typing.get_origin(hint), typing.get_args(hint)


def is_union(origin: Any) -> bool:
    return origin in UNION_TYPES


def is_literal(origin: Any) -> bool:
    return origin is typing.Literal


def is_enum(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, enum.Enum)


def is_typeddict(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, dict) and hasattr(hint, "__required_keys__")


def is_dataclass_type(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def is_pydantic_model(hint: Any) -> bool:
    """A pydantic (v2) model class, recognized without importing pydantic."""
    return isinstance(hint, type) and callable(getattr(hint, "model_validate", None)) and hasattr(hint, "model_fields")


def dataclass_fields(hint: Any) -> list[tuple[str, Any, bool]]:
    """(name, hint, required) of a dataclass's init fields."""
    hints = type_hints(hint.__init__) if hasattr(hint, "__init__") else {}
    return [
        (
            field.name,
            hints.get(field.name, Any),
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING,
        )
        for field in dataclasses.fields(hint)
        if field.init
    ]


def typeddict_fields(hint: Any) -> list[tuple[str, Any, bool]]:
    """(name, hint, required) of a TypedDict's keys."""
    try:
        hints = typing.get_type_hints(hint)
    except Exception:
        hints = {}
    required: frozenset[str] = getattr(hint, "__required_keys__", frozenset())
    return [(name, value, name in required) for name, value in hints.items()]


def json_value(value: Any) -> bool:
    """Whether `value` can stand in a schema's `enum` as it is."""
    return value is None or isinstance(value, (str, int, float, bool))


def optional(hint: Any) -> Any:
    """`hint` or null: a parameter whose default is None accepts null whatever its hint."""
    return typing.Optional[hint]  # noqa: UP045  (Python 3.9 has no `X | None` at run time)


def item_hint(hint: Any) -> Any:
    """What a generator's return hint (`Iterator[X]`, `Generator[X, ...]`, `AsyncIterator[X]`)
    or a batch's list hint (`list[X]`) says of each item: X, or None when it does not say."""
    args = typing.get_args(hint)
    return args[0] if args else None


def batch_request_hint(function: Callable[..., Any], found: dict[str, Any]) -> Any:
    """What a batched function's one parameter (`batch: list[X]`) says of each request: X, or
    None when it does not say. `found`: the function's type_hints."""
    try:
        parameters = list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return None
    return item_hint(found[parameters[0]]) if parameters and parameters[0] in found else None
