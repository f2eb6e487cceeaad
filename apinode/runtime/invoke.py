"""One call of an endpoint: request bytes in, what the node answers out.

Shared by the pipeline's loop and by `%api_test` in the kernel, so the kernel shows exactly what
the node would answer: the same parsing, binding, call and JSON check.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .binding import Binder, BindingError
from .errors import error_json


@dataclass(frozen=True)
class Outcome:
    status: int  # the HTTP status the node answers with
    payload: bytes  # the result as JSON when status is 200, else the error body
    execution_ms: float  # time inside the function
    traceback: str | None = None  # for the author's eyes (node log, kernel), never for callers

    @property
    def ok(self) -> bool:
        return self.status == 200


class _NotSerializable(TypeError):
    pass


def _refuse(value: Any) -> Any:
    kind = type(value)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    raise _NotSerializable(name)


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_refuse).encode


def parse_request(body: bytes) -> dict[str, Any]:
    """The request object; an empty body is `{}` (dataikuapi sends none for a call without arguments)."""
    if not body.strip():
        return {}
    params = json.loads(body)
    if not isinstance(params, dict):
        raise ValueError(
            f"expected a JSON object whose attributes are the function's parameters, got a JSON {_json_kind(params)}"
        )
    # dataikuapi's multi-generation routing, read by the node; never a function argument.
    dispatch = params.get("dispatch")
    if isinstance(dispatch, dict) and dispatch.keys() <= {"forcedGeneration", "dispatchKey"}:
        del params["dispatch"]
    return params


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


class Invoker:
    """Calls one function for request bodies; built once per loaded endpoint.

    `max_result_bytes`: a larger result is answered 500 `ResultTooLarge` instead, before it
    crosses to the node (None: no limit, as in the kernel)."""

    def __init__(self, function: Callable[..., Any], max_result_bytes: int | None = None) -> None:
        self.function = function
        self.binder = Binder(function)
        self.max_result_bytes = max_result_bytes

    def __call__(self, body: bytes) -> Outcome:
        try:
            params = parse_request(body)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            return Outcome(400, error_json("BadRequest", f"the request body is not a JSON object: {exc}"), 0.0)
        except RecursionError:
            return Outcome(400, error_json("BadRequest", "the request body is nested too deeply to parse"), 0.0)
        try:
            args, kwargs = self.binder.bind(params)
        except BindingError as exc:
            return Outcome(400, error_json("InvalidParameters", str(exc)), 0.0)
        started = time.perf_counter()
        try:
            result = self.function(*args, **kwargs)
        except Exception as exc:
            elapsed = (time.perf_counter() - started) * 1000
            message = f"{type(exc).__name__}: {exc}"
            return Outcome(
                500,
                error_json("FunctionError", f"the function raised {message}", message),
                elapsed,
                traceback.format_exc(),
            )
        elapsed = (time.perf_counter() - started) * 1000
        try:
            encoded = _encode(result).encode()
        except _NotSerializable as exc:
            message = (
                f"the function returned a value that is not JSON-serializable: a {exc} "
                "(return lists, dicts, strings, numbers, booleans or None)"
            )
        except ValueError as exc:  # NaN/Infinity, or a circular reference
            detail = "NaN or Infinity, which JSON cannot represent" if "Out of range" in str(exc) else str(exc).lower()
            message = f"the function's result cannot be encoded as JSON: {detail}"
        except RecursionError:
            message = "the function's result cannot be encoded as JSON: it is nested too deeply"
        except TypeError as exc:  # e.g. dict keys that are not strings
            message = f"the function's result cannot be encoded as JSON: {exc}"
        else:
            if self.max_result_bytes is None or len(encoded) <= self.max_result_bytes:
                return Outcome(200, encoded, elapsed)
            return Outcome(500, error_json("ResultTooLarge", _too_large(len(encoded), self.max_result_bytes)), elapsed)
        return Outcome(500, error_json("ResultNotSerializable", message), elapsed)


def _too_large(size: int, limit: int) -> str:
    mib = 1 << 20
    return (
        f"the function's result is {size / mib:.1f} MiB ({size} bytes) of JSON, over this endpoint's limit of "
        f"{limit / mib:g} MiB: return less, or raise the endpoint's pool.maxResultMb"
    )
