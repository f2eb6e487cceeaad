"""Check an endpoint's code without running it: it compiles, and it defines its function.

Mistakes then surface when a cell runs or a bundle is built, not when a node serves it. Nothing
of the user's code runs here (it may have side effects): the code is compiled, and its syntax
tree is searched for a module-level definition of the name (a `def`, a class, an assignment,
an import), in any branch of an `if`, `try` or `with` at module level. A `from x import *`
may define anything, so it passes.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator

from .definitions import DefinitionError

Locate = Callable[[int], str]
"""Line number in the code -> where that is, for the message ("score.py:3", "nb.ipynb: cell 4, line 3")."""


def at_file(name: str) -> Locate:
    return lambda line: f"{name}:{line}"


def check_code(code: str | bytes, function: str, locate: Locate) -> None:
    """Refuse code that does not compile, or does not define `function`, naming where."""
    try:
        tree = ast.parse(code, "<endpoint>")
        compile(tree, "<endpoint>", "exec", dont_inherit=True)
    except SyntaxError as error:
        text = (error.text or "").strip()
        raise DefinitionError(
            f"{locate(error.lineno or 1)}: {type(error).__name__}: {error.msg}{f' ({text!r})' if text else ''}"
        ) from None
    except ValueError as error:  # null bytes
        raise DefinitionError(f"{locate(1)}: cannot compile the code: {error}") from None
    names = list(defined_names(tree.body))
    if function in names or "*" in names:
        return
    functions = sorted({name for name in names if not name.startswith("_")})
    defines = f"it defines {', '.join(functions)}" if functions else "it defines nothing at module level"
    raise DefinitionError(f"{locate(1)}: no function named {function!r}; {defines}")


def defined_names(statements: list[ast.stmt]) -> Iterator[str]:
    """The names module-level statements bind ("*" for a star import)."""
    for statement in statements:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield statement.name
        elif isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                yield from _target_names(target)
        elif isinstance(statement, (ast.Import, ast.ImportFrom)):
            for alias in statement.names:
                yield alias.asname or alias.name.partition(".")[0]
        elif isinstance(statement, _BLOCKS):
            for block in ("body", "orelse", "finalbody"):
                yield from defined_names(getattr(statement, block, []))
            for handler in getattr(statement, "handlers", []):
                yield from defined_names(handler.body)
            if isinstance(statement, (ast.With, ast.AsyncWith)):
                for item in statement.items:
                    if item.optional_vars is not None:
                        yield from _target_names(item.optional_vars)


_BLOCKS = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try, getattr(ast, "TryStar", ast.Try))


def _target_names(target: ast.expr) -> Iterator[str]:
    for node in ast.walk(target):
        if isinstance(node, ast.Name):
            yield node.id
