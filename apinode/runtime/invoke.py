"""One call of an endpoint: request bytes in, what the node answers out.

Shared by the pipeline's loop and by `%api_test` in the kernel, so the kernel shows exactly what
the node would answer: the same parsing, binding, validation, call and result encoding.
"""

from __future__ import annotations

import json
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .binding import Binder, BindingError
from .coroutines import resolve
from .errors import error_json
from .results import NotSerializable, encode
from .validation import Invalid, Validator


@dataclass(frozen=True)
class Outcome:
    status: int  # the HTTP status the node answers with
    payload: bytes  # the result as JSON when status is 200, else the error body
    execution_ms: float  # time inside the function
    traceback: str | None = None  # for the author's eyes (node log, kernel), never for callers

    @property
    def ok(self) -> bool:
        return self.status == 200


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (JSON has no NaN or Infinity)")


_decode = json.JSONDecoder(parse_constant=_refuse_constant).decode
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_request(body: bytes) -> dict[str, Any]:
    """The request object; an empty body is `{}` (dataikuapi sends none for a call without arguments)."""
    if not body.strip():
        return {}
    params = _decode(body.decode())  # UnicodeDecodeError is a ValueError too
    if b"\\u" in body and _ESCAPED_SURROGATE.search(body):
        _refuse_lone_surrogates(params)
    if not isinstance(params, dict):
        raise ValueError(
            f"expected a JSON object whose attributes are the function's parameters, got a JSON {_json_kind(params)}"
        )
    # dataikuapi's multi-generation routing, read by the node; never a function argument.
    dispatch = params.get("dispatch")
    if isinstance(dispatch, dict) and dispatch.keys() <= {"forcedGeneration", "dispatchKey"}:
        del params["dispatch"]
    return params


def _refuse_lone_surrogates(params: dict[str, Any]) -> None:
    """A `\\udXXX` escape that is not half of a pair makes a string UTF-8 cannot hold."""
    try:
        json.dumps(params, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ValueError("it holds a lone surrogate (a \\ud800-\\udfff escape not part of a pair)") from None


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


class Invoker:
    """Calls one function for request bodies; built once per loaded endpoint.

    `max_result_bytes`: a larger result is answered 500 `ResultTooLarge` instead, before it
    crosses to the node (None: no limit, as in the kernel)."""

    def __init__(self, function: Callable[..., Any], max_result_bytes: int | None = None) -> None:
        self.function = function
        self.binder = Binder(function)
        validator = Validator(function)
        self.validate = validator if validator else None
        self.max_result_bytes = max_result_bytes

    def __call__(self, body: bytes) -> Outcome:
        try:
            params = parse_request(body)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            return Outcome(400, error_json("BadRequest", f"the request body is not a JSON object: {exc}"), 0.0)
        except RecursionError:
            return Outcome(400, error_json("BadRequest", "the request body is nested too deeply to parse"), 0.0)
        try:
            if self.validate is not None:
                self.validate(params)
            args, kwargs = self.binder.bind(params)
        except (BindingError, Invalid) as exc:
            return Outcome(400, error_json("InvalidParameters", str(exc)), 0.0)
        started = time.perf_counter()
        try:
            result = resolve(self.function(*args, **kwargs))
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
            encoded = encode(result)
        except NotSerializable as exc:
            return Outcome(500, error_json("ResultNotSerializable", str(exc)), elapsed)
        if self.max_result_bytes is None or len(encoded) <= self.max_result_bytes:
            return Outcome(200, encoded, elapsed)
        return Outcome(500, error_json("ResultTooLarge", _too_large(len(encoded), self.max_result_bytes)), elapsed)


def _too_large(size: int, limit: int) -> str:
    mib = 1 << 20
    return (
        f"the function's result is {size / mib:.1f} MiB ({size} bytes) of JSON, over this endpoint's limit of "
        f"{limit / mib:g} MiB: return less, or raise the endpoint's pool.maxResultMb"
    )
