"""Check a request's attributes against the function's type hints before the function runs.

A check is compiled once per hinted parameter when the endpoint loads; checking a request is
then a call per attribute sent, most of them one `type(value) is ...` test. Values come from
`json.loads`, so their types are exactly dict, list, str, int, float, bool or None. An integer is
a valid number; a boolean is not an integer. Unhinted parameters and `**kwargs` are not checked.

A parameter hinted with an Enum, a dataclass or a pydantic model receives that type, built from
the JSON (a member, an instance, a validated model), as its hint promises; other values are
passed as they came.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

from . import hints

Check = Callable[[Any, str], Any]
"""(value, path) -> the value to pass, or raise Invalid."""


class Invalid(ValueError):
    """A value does not match its hint: says where, what was expected and what came."""

    def __init__(self, path: str, expected: str, value: Any, detail: str = "") -> None:
        subject = f"parameter {path}" if path else "the request"
        super().__init__(f"{subject} must be {expected}, got {_sent(value)}{detail}")


def _member(path: str, name: str) -> str:
    """The path of an object's member: `'p'["x"]` inside parameter p, `'x'` in the request itself."""
    return f"{path}[{json.dumps(name, ensure_ascii=False)}]" if path else repr(name)


def _sent(value: Any) -> str:
    kind = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer"}.get(
        type(value), "null" if value is None else "a number"
    )
    if isinstance(value, (dict, list)):
        return kind
    text = json.dumps(value, ensure_ascii=False)
    return kind if value is None else f"{kind} ({text if len(text) <= 40 else text[:37] + '...'})"


def _exact(types: tuple[type, ...], expected: str) -> Check:
    if len(types) == 1:
        (only,) = types

        def check_one(value: Any, path: str) -> Any:
            if type(value) is only:
                return value
            raise Invalid(path, expected, value)

        return check_one

    def check(value: Any, path: str) -> Any:
        if type(value) in types:
            return value
        raise Invalid(path, expected, value)

    return check


_SIMPLE: dict[Any, tuple[tuple[type, ...], str]] = {
    int: ((int,), "an integer"),
    float: ((float, int), "a number"),
    str: ((str,), "a string"),
    bool: ((bool,), "a boolean"),
    type(None): ((type(None),), "null"),
    None: ((type(None),), "null"),
}


class _Compiler:
    """Hint -> Check, with recursive hints (a dataclass holding a list of itself) compiled once."""

    def __init__(self) -> None:
        self.done: dict[Any, Check | None] = {}
        self.pending: set[Any] = set()

    def compile(self, hint: Any) -> Check | None:
        """The check for `hint`, or None when any value will do."""
        try:
            hash(hint)
        except TypeError:
            return self._compile(hint)
        if hint in self.done:
            return self.done[hint]
        if hint in self.pending:  # met again inside itself: use its check once it is compiled
            done = self.done

            def deferred(value: Any, path: str) -> Any:
                check = done[hint]
                return value if check is None else check(value, path)

            return deferred
        self.pending.add(hint)
        check = self._compile(hint)
        self.pending.discard(hint)
        self.done[hint] = check
        return check

    def _compile(self, hint: Any) -> Check | None:
        if hint in _SIMPLE:
            return _exact(*_SIMPLE[hint])
        origin, args = hints.origin_and_args(hint)
        if hints.is_union(origin):
            return self._union(args)
        if hints.is_literal(origin):
            return _literal(args)
        if hint in hints.ARRAY_TYPES or origin in hints.ARRAY_TYPES:
            return self._array(origin or hint, args)
        if hint in hints.OBJECT_TYPES or origin in hints.OBJECT_TYPES:
            return self._object(args[1] if len(args) == 2 else Any)
        if hints.is_enum(hint):
            return _enum(hint)
        if hints.is_typeddict(hint):
            return self._fields(hint, hints.typeddict_fields(hint), None)
        if hints.is_dataclass_type(hint):
            return self._fields(hint, hints.dataclass_fields(hint), hint)
        if hints.is_pydantic_model(hint):
            return _pydantic(hint)
        return None

    def _union(self, args: tuple[Any, ...]) -> Check | None:
        checks = [self.compile(arg) for arg in args]
        if any(check is None for check in checks):
            return None
        expected = " or ".join(describe(arg) for arg in args)
        not_null = [check for arg, check in zip(args, checks) if arg is not type(None)]
        if len(not_null) == 1 and len(checks) == 2:  # Optional[X]: a value that is not null is an X
            (inner,) = not_null

            def check_optional(value: Any, path: str) -> Any:
                return None if value is None else inner(value, path)  # type: ignore[misc]

            return check_optional

        def check(value: Any, path: str) -> Any:
            for option in checks:
                try:
                    return option(value, path)  # type: ignore[misc]
                except Invalid:
                    pass
            raise Invalid(path, expected, value)

        return check

    def _array(self, origin: Any, args: tuple[Any, ...]) -> Check:
        item_hint = args[0] if args and (len(args) == 1 or args[1:] == (Ellipsis,)) else None
        fixed = [self.compile(arg) for arg in args] if item_hint is None and args else None
        item = self.compile(item_hint) if item_hint is not None else None
        expected = f"an array{f' of {_plural(item_hint)}' if item_hint is not None else ''}"
        if fixed is not None:
            expected = f"an array of {len(fixed)} items ({', '.join(describe(arg) for arg in args)})"

        def check(value: Any, path: str) -> Any:
            if type(value) is not list:
                raise Invalid(path, expected, value)
            if fixed is not None:
                if len(value) != len(fixed):
                    raise Invalid(path, expected, value, f" of {len(value)} items")
                value = [v if c is None else c(v, f"{path}[{i}]") for i, (v, c) in enumerate(zip(value, fixed))]
            elif item is not None:
                value = [item(v, f"{path}[{i}]") for i, v in enumerate(value)]
            return tuple(value) if origin is tuple else set(value) if origin in (set, frozenset) else value

        return check

    def _object(self, value_hint: Any) -> Check:
        item = self.compile(value_hint)
        expected = f"an object{f' of {_plural(value_hint)}' if item is not None else ''}"

        def check(value: Any, path: str) -> Any:
            if type(value) is not dict:
                raise Invalid(path, expected, value)
            if item is None:
                return value
            return {k: item(v, _member(path, k)) for k, v in value.items()}

        return check

    def _fields(self, hint: Any, fields: list[tuple[str, Any, bool]], build: Any) -> Check:
        """A TypedDict (stays a dict, extra keys allowed) or a dataclass (built; no extra keys)."""
        checks = {name: self.compile(field_hint) for name, field_hint, _ in fields}
        required = [name for name, _, is_required in fields if is_required]
        expected = describe(hint)

        def check(value: Any, path: str) -> Any:
            if type(value) is not dict:
                raise Invalid(path, expected, value)
            missing = [name for name in required if name not in value]
            if missing:
                raise Invalid(path, expected, value, f" without {', '.join(repr(m) for m in missing)}")
            if build is not None:
                extra = [name for name in value if name not in checks]
                if extra:
                    raise Invalid(path, expected, value, f" with unexpected {', '.join(repr(e) for e in extra)}")
            checked = {}
            for name, item in value.items():
                field_check = checks.get(name)
                checked[name] = item if field_check is None else field_check(item, _member(path, name))
            return checked if build is None else build(**checked)

        return check


def _literal(args: tuple[Any, ...]) -> Check:
    allowed = [(type(arg), arg) for arg in args]
    expected = f"one of {', '.join(json.dumps(arg) if hints.json_value(arg) else repr(arg) for arg in args)}"

    def check(value: Any, path: str) -> Any:
        if (type(value), value) in allowed:
            return value
        raise Invalid(path, expected, value)

    return check


def _enum(hint: Any) -> Check:
    members = {(type(member.value), member.value): member for member in hint}
    expected = f"{describe(hint)}: one of {', '.join(_json(member.value) for member in hint)}"

    def check(value: Any, path: str) -> Any:
        member = members.get((type(value), value)) if not isinstance(value, (dict, list)) else None
        if member is None:
            raise Invalid(path, expected, value)
        return member

    return check


def _pydantic(hint: Any) -> Check:
    expected = describe(hint)

    def check(value: Any, path: str) -> Any:
        try:
            return hint.model_validate(value)
        except Exception as exc:  # pydantic's ValidationError, without importing pydantic
            errors = getattr(exc, "errors", None)
            problems = errors() if callable(errors) else []
            said = "; ".join(
                f"{'.'.join(str(part) for part in problem.get('loc', ())) or 'value'}: {problem.get('msg')}"
                for problem in problems[:5]
            )
            raise Invalid(path, expected, value, f" ({said or exc})") from None

    return check


def _json(value: Any) -> str:
    return json.dumps(value) if hints.json_value(value) else repr(value)


def describe(hint: Any) -> str:
    """A hint in JSON's words, for messages: "an integer", "an array of strings", "null"."""
    if hint in _SIMPLE:
        return _SIMPLE[hint][1]
    origin, args = hints.origin_and_args(hint)
    if hints.is_union(origin):
        return " or ".join(describe(arg) for arg in args)
    if hints.is_literal(origin):
        return f"one of {', '.join(_json(arg) for arg in args)}"
    if hint in hints.ARRAY_TYPES or origin in hints.ARRAY_TYPES:
        return f"an array of {_plural(args[0])}" if args else "an array"
    if hint in hints.OBJECT_TYPES or origin in hints.OBJECT_TYPES:
        return f"an object of {_plural(args[1])}" if len(args) == 2 else "an object"
    name = getattr(hint, "__name__", None)
    if name is None:
        return "any value"
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return f"{article} {name}" if hints.is_enum(hint) else f"{article} {name} object"


def _plural(hint: Any) -> str:
    words = describe(hint)
    for article in ("an ", "a "):
        if words.startswith(article):
            return words[len(article) :] + "s"
    return words


class _Absent:
    """The type of a parameter not sent: accepted by every inline check (binding names it if required)."""


_ABSENT = _Absent()


class Validator:
    """Checks a request's attributes against the hints of one function's parameters.

    A parameter hinted with a plain type (int, float, str, bool) is checked inline, by a set
    membership of the value's type; the others call their compiled check. That keeps the cost
    of a typical function of a few scalar parameters to a few hundred nanoseconds a call."""

    def __init__(self, function: Callable[..., Any]) -> None:
        found = hints.type_hints(function)
        compiler = _Compiler()
        self.plain: list[tuple[str, frozenset[type], str]] = []  # name, allowed types, expected
        self.checks: list[tuple[str, Check, str]] = []  # name, check, path
        try:
            parameters = list(inspect.signature(function).parameters.values())
        except (TypeError, ValueError):
            parameters = []
        for parameter in parameters:
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD) or parameter.name not in found:
                continue
            try:
                self._add(parameter, found[parameter.name], compiler)
            except Exception:  # a hint we cannot read (unhashable, odd typing object): left unchecked
                continue

    def _add(self, parameter: inspect.Parameter, hint: Any, compiler: _Compiler) -> None:
        if parameter.default is None:  # `x: int = None` accepts null too
            hint = hints.optional(hint)
        if hint in _SIMPLE:
            types, expected = _SIMPLE[hint]
            self.plain.append((parameter.name, frozenset((*types, _Absent)), expected))
            return
        check = compiler.compile(hint)
        if check is not None:
            self.checks.append((parameter.name, check, repr(parameter.name)))

    def __bool__(self) -> bool:
        return bool(self.plain or self.checks)

    def __call__(self, params: dict[str, Any]) -> None:
        """Check (and convert) `params` in place; Invalid for the first attribute that does not fit."""
        get = params.get
        for name, allowed, expected in self.plain:
            if type(get(name, _ABSENT)) not in allowed:
                raise Invalid(repr(name), expected, params[name])
        for name, check, path in self.checks:
            if name in params:
                params[name] = check(params[name], path)


def batch_request_check(function: Callable[..., Any]) -> Callable[[dict[str, Any]], Any] | None:
    """The check of each request of a batched function, from its parameter's list hint
    (`batch: list[Row]`): the request object -> the item to pass (a Row built from it when Row is
    a dataclass or a pydantic model), or Invalid. None when the hint says nothing to check."""
    hint = hints.batch_request_hint(function, hints.type_hints(function))
    if hint is None:  # `batch` or `batch: list`
        return None
    try:
        check = _Compiler().compile(hint)
    except Exception:  # a hint we cannot read: left unchecked, as a parameter's would be
        return None
    if check is None:
        return None
    return lambda params: check(params, "")
