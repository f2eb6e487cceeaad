"""Load an endpoint's code as a module and find its function.

The code runs once, as a fresh module whose global `folders` lists the absolute paths of the
endpoint's folders in declared order. That is its initialization: whatever it loads at module
level (a model, a lookup table) is there for every call the pipeline serves.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any


class LoadError(Exception):
    """The endpoint's code cannot be loaded; `traceback` is for the author, not for callers."""

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


def endpoint_module_name(endpoint: str) -> str:
    """The module an endpoint's code runs as (`SERVICE/ENDPOINT` made an identifier), in a
    pipeline and in the kernel alike."""
    return "apinode_endpoint_" + endpoint.replace("/", "_").replace("-", "_")


def load_function(
    source: str, filename: str, function: str, folders: Sequence[str], module_name: str
) -> Callable[..., Any]:
    """Run `source` as module `module_name` and return its `function`, or raise LoadError.

    Messages name the file by its base name where they word the failure themselves, though an
    exception's own text may hold the path (a SyntaxError names it). The traceback, for the
    author, has the full path."""
    shown = _shown(filename)
    module = types.ModuleType(module_name)
    module.__file__ = filename
    module.folders = list(folders)  # type: ignore[attr-defined]
    # Registered so that dataclasses, pickle and typing can find the module by name.
    sys.modules[module_name] = module
    try:
        # dont_inherit: the code is compiled as Python would import it, not with this module's
        # `from __future__ import annotations` (its hints would all be strings: a TypedDict's
        # NotRequired[X] would not be seen, so that key would be required).
        exec(compile(source, filename, "exec", dont_inherit=True), module.__dict__)
    except BaseException as exc:  # user code may raise anything, SystemExit included
        import traceback

        raise LoadError(f"loading {shown} failed: {type(exc).__name__}: {exc}", traceback.format_exc()) from exc
    found = module.__dict__.get(function)
    if found is None:
        defined = sorted(
            name
            for name, value in module.__dict__.items()
            if callable(value) and getattr(value, "__module__", None) == module_name
        )
        hint = f"; it defines {', '.join(defined)}" if defined else "; it defines no function"
        raise LoadError(f"{shown} has no function named {function!r}{hint}")
    if not callable(found):
        raise LoadError(f"{function!r} in {shown} is a {type(found).__name__}, not a function")
    function_found: Callable[..., Any] = found
    return function_found


def _shown(filename: str) -> str:
    """A file by its name; code that is not a file (`<%%api_endpoint service/endpoint>`) by its label."""
    return filename[1:-1] if filename.startswith("<") and filename.endswith(">") else os.path.basename(filename)


def load_function_file(path: str, function: str, folders: Sequence[str], module_name: str) -> Callable[..., Any]:
    """`load_function` on a file; a file that cannot be read is a LoadError too."""
    try:
        with open(path, encoding="utf-8") as file:
            source = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError(f"cannot read endpoint code {path}: {exc}") from exc
    return load_function(source, path, function, folders, module_name)
