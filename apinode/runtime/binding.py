"""Bind a JSON object's attributes to a function's parameters.

The signature is read once per function (a pipeline calls the same function for its whole
life), so binding a request is a few set operations.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


class BindingError(ValueError):
    """The request's attributes do not fit the function's parameters; says which."""

    def __init__(self, missing: list[str], unexpected: list[str], signature: str) -> None:
        parts = []
        if missing:
            parts.append(_plural("missing parameter", missing))
        if unexpected:
            parts.append(_plural("unexpected parameter", unexpected))
        super().__init__(f"{'; '.join(parts)}. The function is {signature}")
        self.missing = missing
        self.unexpected = unexpected


def _plural(what: str, names: list[str]) -> str:
    quoted = ", ".join(repr(name) for name in names)
    return f"{what}{'s' if len(names) > 1 else ''} {quoted}"


class Binder:
    """Turns a request object into (args, kwargs) for one function."""

    def __init__(self, function: Callable[..., Any]) -> None:
        signature = inspect.signature(function)
        kinds = inspect.Parameter
        params = signature.parameters.values()
        self.positional_only = [p.name for p in params if p.kind is kinds.POSITIONAL_ONLY]
        self.keywords = {p.name for p in params if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)}
        self.required = [
            p.name
            for p in params
            if p.default is kinds.empty and p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)
        ]
        self.takes_var_keyword = any(p.kind is kinds.VAR_KEYWORD for p in params)
        self.accepted = self.keywords.union(self.positional_only)
        self.signature = f"{getattr(function, '__name__', 'function')}{signature}"

    def bind(self, params: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Split `params` into positional and keyword arguments, or raise BindingError."""
        missing = [name for name in self.required if name not in params]
        unexpected = [] if self.takes_var_keyword else [name for name in params if name not in self.accepted]
        if missing or unexpected:
            raise BindingError(missing, unexpected, self.signature)
        if not self.positional_only:
            return [], params
        kwargs = dict(params)
        args = []
        for name in self.positional_only:
            if name not in kwargs:
                break  # the rest take their defaults
            args.append(kwargs.pop(name))
        return args, kwargs
