"""Whether a kernel function can stand alone as an endpoint's code (`%api_endpoint S/E NAME`).

The line form registers a function from its own source. On a node that source runs alone, as a
fresh module: a model loaded in another cell, or an import made elsewhere in the notebook, is
not there. So the source is read once with `symtable` (the compiler's own scopes, so nested
functions, comprehensions, class bodies and `global` statements count as Python counts them)
and every global name it reads but neither defines nor gets from Python or the runtime is
named, before anything is registered.
"""

from __future__ import annotations

import builtins
import inspect
import symtable
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

from ..packaging.definitions import is_function_name

RUNTIME_GLOBALS = frozenset(
    {"folders", "__file__", "__name__", "__doc__", "__builtins__", "__loader__", "__package__", "__spec__"}
)
"""What the module an endpoint's code runs in holds before the code runs (see runtime.loader)."""


class StandaloneError(ValueError):
    """The function cannot be registered from its own source; the message says why."""


def undefined_globals(source: str) -> list[str]:
    """The global names `source` reads without defining them, builtins and runtime aside."""
    module = symtable.symtable(source, "<function source>", "exec")
    defined = {symbol.get_name() for symbol in module.get_symbols() if symbol.is_assigned() or symbol.is_imported()}
    read = {symbol.get_name() for symbol in module.get_symbols() if symbol.is_referenced()}
    for table in _nested(module):
        for symbol in table.get_symbols():
            if symbol.is_global():
                (defined if symbol.is_assigned() else read).add(symbol.get_name())
    return sorted(read - defined - RUNTIME_GLOBALS - set(dir(builtins)))


def _nested(table: symtable.SymbolTable) -> Iterator[symtable.SymbolTable]:
    for child in table.get_children():
        yield child
        yield from _nested(child)


def standalone_source(function: Callable[..., Any]) -> tuple[str, str]:
    """(source, name) of a function whose source can run alone; StandaloneError otherwise."""
    unwrapped = inspect.unwrap(function)
    if not inspect.isfunction(unwrapped):
        raise StandaloneError(f"{function!r} is a {type(function).__name__}, not a function")
    name = unwrapped.__name__
    if not is_function_name(name):
        raise StandaloneError("a lambda has no source of its own; define the function with def")
    try:
        source = textwrap.dedent(inspect.getsource(unwrapped))
    except (OSError, TypeError) as error:
        raise StandaloneError(f"cannot read the source of {name}: {error}; use a %%api_endpoint cell instead") from None
    missing = undefined_globals(source)
    if missing:
        raise StandaloneError(
            f"{name} uses {', '.join(missing)}, which its source does not define (notebook "
            "globals are not there on a node); put the code they come from in a cell with the "
            f"function, starting with %%api_endpoint SERVICE/ENDPOINT --function {name}"
        )
    return source, name
