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
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from .binding import Binder, BindingError
from .coroutines import is_stream, items, resolve
from .errors import error_json
from .results import NotSerializable, encode
from .validation import Invalid, Validator

ItemSink = Callable[[bytes], bool]
"""Takes a generator's items one by one, encoded; False stops the generator (the caller left)."""


@dataclass(frozen=True)
class Outcome:
    status: int  # the HTTP status the node answers with
    payload: bytes  # the result as JSON when status is 200, else the error body
    execution_ms: float  # time inside the function
    traceback: str | None = None  # for the author's eyes (node log, kernel), never for callers
    streamed: bool = False  # the items went to `on_item`; this outcome ends the stream

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


def parse_or_refuse(body: bytes) -> dict[str, Any] | Outcome:
    """The request object, or the 400 that refuses the body."""
    try:
        return parse_request(body)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        return Outcome(400, error_json("BadRequest", f"the request body is not a JSON object: {exc}"), 0.0)
    except RecursionError:
        return Outcome(400, error_json("BadRequest", "the request body is nested too deeply to parse"), 0.0)


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

    def __call__(self, body: bytes, on_item: ItemSink | None = None) -> Outcome:
        """The answer to one request body.

        A generator function's items are encoded one by one: with `on_item` each is handed to it
        as it is produced (False from it closes the generator: the caller went away) and the
        outcome only ends the stream; without, they are answered together as a JSON list."""
        params = parse_or_refuse(body)
        if isinstance(params, Outcome):
            return params
        try:
            if self.validate is not None:
                self.validate(params)
            args, kwargs = self.binder.bind(params)
        except (BindingError, Invalid) as exc:
            return Outcome(400, error_json("InvalidParameters", str(exc)), 0.0)
        started = time.perf_counter()
        try:
            result = resolve(self.function(*args, **kwargs))
            if is_stream(result):
                return self._stream(result, on_item, started)
        except Exception as exc:
            return raised(exc, started)
        elapsed = (time.perf_counter() - started) * 1000
        try:
            encoded = encode(result)
        except NotSerializable as exc:
            return Outcome(500, error_json("ResultNotSerializable", str(exc)), elapsed)
        return self.sized(encoded, elapsed)

    def _stream(self, stream: Any, on_item: ItemSink | None, started: float) -> Outcome:
        """Run a generator to its end (or until `on_item` says stop); what it raises, the caller
        reports as the function's exception."""
        collected: list[bytes] = []
        with closing(items(stream)) as produced:
            for item in produced:
                try:
                    encoded = encode(item)
                except NotSerializable as exc:
                    return Outcome(500, error_json("ResultNotSerializable", str(exc)), _since(started))
                if on_item is None:
                    collected.append(encoded)
                elif not on_item(encoded):
                    break
        if on_item is not None:
            return Outcome(200, b"", _since(started), streamed=True)
        return self.sized(b"[" + b",".join(collected) + b"]", _since(started))

    def sized(self, encoded: bytes, elapsed: float) -> Outcome:
        """A 200 with the encoded result, or the 500 that refuses it as too large."""
        if self.max_result_bytes is None or len(encoded) <= self.max_result_bytes:
            return Outcome(200, encoded, elapsed)
        return Outcome(500, error_json("ResultTooLarge", _too_large(len(encoded), self.max_result_bytes)), elapsed)


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def raised(exc: Exception, started: float) -> Outcome:
    message = f"{type(exc).__name__}: {exc}"
    return Outcome(
        500,
        error_json("FunctionError", f"the function raised {message}", message),
        _since(started),
        traceback.format_exc(),
    )


def _too_large(size: int, limit: int) -> str:
    mib = 1 << 20
    return (
        f"the function's result is {size / mib:.1f} MiB ({size} bytes) of JSON, over this endpoint's limit of "
        f"{limit / mib:g} MiB: return less, or raise the endpoint's pool.maxResultMb"
    )
