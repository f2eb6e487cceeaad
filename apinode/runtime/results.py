"""Encode what a function returns as JSON, for the values data science code returns.

numpy scalars and arrays, pandas Series, DataFrames and Timestamps, datetime/date/time, Decimal,
UUID, sets, dataclasses, pydantic models and Enum members are converted (DESIGN.md, "Results").
They are recognized by duck typing (the module a type comes from, the methods it has): this
module runs in endpoint virtualenvs with the standard library only, and never imports numpy or
pandas. A plain JSON result never reaches the conversion: the C encoder calls `_convert` only
for a value it cannot encode itself, so plain results cost what they did before.

When a value still cannot be encoded, the result is walked again (only then) to say where it is,
as a subscript path from `response`.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import math
import uuid
from collections.abc import Iterator
from typing import Any


class NotSerializable(ValueError):
    """The result cannot be encoded; the message says what and where, and how to fix it."""


class _Refused(TypeError):
    pass


_MISSING_TYPES = frozenset({"NaTType", "NAType"})  # pandas' NaT and NA: missing values, null


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _top_module(value: Any) -> str:
    return type(value).__module__.partition(".")[0]


def convert(value: Any) -> Any:
    """A JSON-encodable stand-in for `value` (its parts may need converting in turn), or _Refused."""
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):  # pandas Timestamp too
        if type(value).__name__ in _MISSING_TYPES:
            return None
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, decimal.Decimal):
        return int(value) if value.is_finite() and value == value.to_integral_value() else float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)  # the same answer for the same set, whatever its hash order
        except TypeError:
            return list(value)
    module = _top_module(value)
    if module == "numpy":
        if hasattr(value, "tolist"):  # arrays to nested lists, scalars to their Python value
            return value.tolist()
    elif module == "pandas":
        return _convert_pandas(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    model_dump = getattr(value, "model_dump", None)  # pydantic v2
    if callable(model_dump) and not isinstance(value, type):
        return model_dump(mode="json")
    raise _Refused(value)


def _convert_pandas(value: Any) -> Any:
    kind = type(value).__name__
    if kind in _MISSING_TYPES:
        return None
    if kind == "DataFrame":
        return [_missing_to_null(record) for record in value.to_dict(orient="records")]
    if kind == "Series":
        return {_key(key): _null_if_nan(item) for key, item in value.items()}
    if kind == "Timedelta":
        return value.isoformat()
    if hasattr(value, "tolist"):  # Index, Categorical, extension arrays
        return [_null_if_nan(item) for item in value.tolist()]
    raise _Refused(value)


def _missing_to_null(record: dict[Any, Any]) -> dict[Any, Any]:
    return {_key(key): _null_if_nan(item) for key, item in record.items()}


def _null_if_nan(item: Any) -> Any:
    """pandas marks a missing number with NaN; as in pandas' own JSON, it becomes null."""
    return None if isinstance(item, float) and item != item else item


def _key(key: Any) -> Any:
    """An object key JSON accepts: pandas' index labels can be Timestamps or numpy integers."""
    if isinstance(key, (str, int, float, bool)) or key is None:
        return key
    try:
        converted = convert(key)
    except _Refused:
        return str(key)
    return converted if isinstance(converted, (str, int, float, bool)) else str(key)


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=convert).encode


def encode(result: Any) -> bytes:
    """The result as UTF-8 JSON; NotSerializable says what cannot be encoded and where."""
    try:
        return _encode(result).encode()
    except Exception:  # conversions call user code (model_dump, tolist...), which may raise anything
        pass
    raise NotSerializable(_why_not(result))


def _why_not(result: Any) -> str:
    try:
        found = next(_problems(result, "response", 0), None)
    except RecursionError:
        found = None
    if found is None:  # a circular reference, or nesting too deep to walk
        return "the function's result cannot be encoded as JSON: it is circular or nested too deeply"
    return f"the function's result cannot be encoded as JSON: {found}"


MAX_DEPTH = 500


def _problems(value: Any, path: str, depth: int) -> Iterator[str]:
    """Where the result cannot be encoded, first found first; walks as the encoder does."""
    if depth > MAX_DEPTH:
        raise RecursionError
    if value is None or isinstance(value, (str, bool, int)):
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                yield f"{path} is a string with a lone surrogate, which UTF-8 cannot encode"
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            yield f"{path} is {value!r}, which JSON cannot represent (return None for a missing number)"
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not (isinstance(key, (str, int, float, bool)) or key is None):
                yield (
                    f"{path} has a key that is a {_type_name(key)} ({key!r}); object keys must be "
                    "strings or numbers: convert them, e.g. {str(k): v for k, v in d.items()}"
                )
                return
            yield from _problems(item, f"{path}[{json.dumps(key, ensure_ascii=False)}]", depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _problems(item, f"{path}[{index}]", depth + 1)
        return
    try:
        converted = convert(value)
    except _Refused:
        yield (
            f"{path} is a {_type_name(value)}; convert it before returning it (to a dict, list, str, "
            "number, bool or None), or make its class a dataclass"
        )
        return
    except Exception as exc:  # a pydantic model that fails to dump, say
        yield f"{path} is a {_type_name(value)} that failed to convert: {type(exc).__name__}: {exc}"
        return
    yield from _problems(converted, path, depth + 1)
