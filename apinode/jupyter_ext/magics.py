"""The apinode magics: each parses its line and makes one call into the library.

An `%%api_endpoint` cell also runs in the kernel, as a pipeline would run it (its folders in the
global `folders`), and fails the cell when its code raises, so that "run all" stops there.
`%%api_endpoint` and `%%api_test_queries` use the grammar the notebook reader uses
(`packaging.magic_syntax`), so a cell means the same with and without a kernel; for the same
reason no magic expands `{var}` or `$var` in its line (JSON is full of braces). Mistakes in a
line, and errors the user can act on, are shown as IPython's one-line UsageError.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import (
    Magics,
    cell_magic,
    line_cell_magic,
    line_magic,
    magics_class,
    no_var_expand,
)
from IPython.display import display

from ..client import NodeError
from ..packaging.bundles import BundleError
from ..packaging.code_check import check_code
from ..packaging.definitions import DefinitionError
from ..packaging.magic_syntax import (
    ENDPOINT_USAGE,
    MagicUsageError,
    UsageParser,
    parse_endpoint_magic,
    parse_target,
    parse_test_queries_magic,
    split_words,
)
from .deploy import deploy_service
from .globals_check import StandaloneError
from .kernel_endpoints import KernelEndpoints, NotRegistered
from .kernel_queries import run_queries

LINE_ENDPOINT_USAGE = (
    f"usage: %api_endpoint SERVICE/ENDPOINT FUNCTION_NAME (or a cell: {ENDPOINT_USAGE.removeprefix('usage: ')})"
)
TEST_USAGE = "usage: %api_test SERVICE/ENDPOINT [JSON query]"
EXPORT_USAGE = "usage: %api_export SERVICE -o FILE.zip"
DEPLOY_USAGE = "usage: %api_deploy SERVICE --url URL --key ADMIN_KEY"
SERVICES_USAGE = "usage: %api_services"
PANEL_USAGE = "usage: %api_panel"

USER_ERRORS = (MagicUsageError, DefinitionError, BundleError, NotRegistered, StandaloneError, NodeError, OSError)
"""The errors a user can act on, shown as one line (here and in the panel), not a traceback."""
_Magic = TypeVar("_Magic", bound=Callable[..., Any])


def _one_line_errors(magic: _Magic) -> _Magic:
    """Show the user's mistakes as IPython's one-line UsageError instead of a traceback."""

    @functools.wraps(magic)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return magic(*args, **kwargs)
        except USER_ERRORS as error:
            raise UsageError(str(error)) from None

    return wrapper  # type: ignore[return-value]


def _parse(parser: UsageParser, line: str) -> argparse.Namespace:
    return parser.parse_args(split_words(line, parser.usage or ""))


def _no_arguments(line: str, usage: str) -> None:
    if line.strip():
        raise MagicUsageError(f"takes no arguments, got {line.strip()!r}; {usage}")


def _service_parser(usage: str, *options: str) -> UsageParser:
    parser = UsageParser(usage=usage, add_help=False, allow_abbrev=False)
    parser.add_argument("service")
    for option in options:
        parser.add_argument(*option.split(), required=True)
    return parser


_EXPORT = _service_parser(EXPORT_USAGE, "-o --output")
_DEPLOY = _service_parser(DEPLOY_USAGE, "--url", "--key")


@magics_class
class ApiMagics(Magics):
    """`%%api_endpoint`, `%api_endpoint`, `%%api_test_queries`, `%api_test`, `%api_services`,
    `%api_export`, `%api_deploy`, all over one `KernelEndpoints`."""

    def __init__(self, shell: Any, registry: KernelEndpoints) -> None:
        super().__init__(shell)
        self.registry = registry

    @no_var_expand
    @line_cell_magic
    @_one_line_errors
    def api_endpoint(self, line: str, cell: str | None = None) -> None:
        """Register an endpoint: a cell's code (`%%api_endpoint SERVICE/ENDPOINT --function
        NAME ...`, the cell also runs here), or a kernel function that stands alone
        (`%api_endpoint SERVICE/ENDPOINT FUNCTION_NAME`)."""
        if cell is not None:
            magic = parse_endpoint_magic(line)
            target = f"{magic.service}/{magic.endpoint}"
            _check_plain_python(target, cell)
            try:
                check_code(cell, magic.function, lambda line: target)
            except DefinitionError as error:
                raise MagicUsageError(f"{error} (--function names it); the cell is not registered") from None
            registration = self.registry.register(magic, cell)
            # The cell runs as in a pipeline: its folders' paths in the global `folders`.
            folders = self.registry.folder_paths(registration)
            assert self.shell is not None
            self.shell.user_ns["folders"] = [str(folder) for folder in folders]
            if not self.shell.run_cell(cell).success:  # type: ignore[no-untyped-call]  # its traceback is shown already
                raise UsageError(
                    f"the code of {registration.magic.service}/"
                    f"{registration.magic.endpoint} failed here (it is registered)"
                )
            return
        words = line.split()
        if len(words) != 2:
            raise MagicUsageError(f"expected SERVICE/ENDPOINT and a function name; {LINE_ENDPOINT_USAGE}")
        service, endpoint = parse_target(words[0], LINE_ENDPOINT_USAGE)
        assert self.shell is not None
        if words[1] not in self.shell.user_ns:
            raise MagicUsageError(f"no {words[1]!r} defined in this kernel; {LINE_ENDPOINT_USAGE}")
        self.registry.register_function(service, endpoint, self.shell.user_ns[words[1]])

    @no_var_expand
    @cell_magic
    @_one_line_errors
    def api_test_queries(self, line: str, cell: str) -> None:
        """Save an endpoint's test queries: a JSON list of {"name", "query", "expected"?}."""
        self.registry.set_test_queries(*parse_test_queries_magic(line), cell)

    @no_var_expand
    @line_magic
    @_one_line_errors
    def api_test(self, line: str) -> Any:
        """Play a JSON query, or else the saved test queries, in the kernel as a node would."""
        words = line.split(maxsplit=1) or [""]
        query = words[1] if len(words) > 1 else None
        return run_queries(self.registry, *parse_target(words[0], TEST_USAGE), query)

    @no_var_expand
    @line_magic
    @_one_line_errors
    def api_services(self, line: str) -> Any:
        """Show the registered services and endpoints."""
        _no_arguments(line, SERVICES_USAGE)
        return self.registry.overview()

    @no_var_expand
    @line_magic
    @_one_line_errors
    def api_export(self, line: str) -> Any:
        """Write a service's bundle (the bytes `apinode build notebook.ipynb` writes)."""
        args = _parse(_EXPORT, line)
        return self.registry.export(args.service, Path(args.output))

    @no_var_expand
    @line_magic
    @_one_line_errors
    def api_deploy(self, line: str) -> Any:
        """Upload a service's bundle to a node and switch the service to it."""
        args = _parse(_DEPLOY, line)
        return deploy_service(self.registry, args.service, args.url, args.key)

    @no_var_expand
    @line_magic
    @_one_line_errors
    def api_dev(self, line: str) -> None:
        """Deploy a service to this Jupyter server's dev server; says whether each function loads,
        and where the API designer shows this notebook."""
        from .deploy_progress import DeployProgress, follow_deploy
        from .designer_link import designer_link
        from .devclient import (  # the dev server's client needs jupyter_core
            jupyter_server_info,
            jupyter_server_pid,
            kernel_dev_server,
        )

        service = _parse(_service_parser("usage: %api_dev SERVICE"), line).service
        staged = self.registry.stage(service)
        # One output, updated in place: the steps and installer lines, then the deployment.
        shown = display(DeployProgress(service, ["starting the dev server"]), display_id=True)  # type: ignore[no-untyped-call]
        deployment = follow_deploy(kernel_dev_server(), staged, shown.update)
        shown.update(deployment)
        notebook = os.environ.get("JPY_SESSION_NAME")  # set by jupyter_server for a notebook's kernel
        display(designer_link(jupyter_server_info(jupyter_server_pid()), notebook))  # type: ignore[no-untyped-call]

    @no_var_expand
    @line_magic
    @_one_line_errors
    def api_panel(self, line: str) -> Any:
        """Open the panel: pick an endpoint, edit and play its test queries, deploy to the dev server."""
        _no_arguments(line, PANEL_USAGE)
        from .panel import show_panel  # ipywidgets, only when a panel is asked for

        return show_panel(self.registry)


def _check_plain_python(target: str, cell: str) -> None:
    """Refuse a cell the node could not load: it runs endpoint code without IPython, so no
    `!command`, `%magic` or other IPython syntax."""
    try:
        compile(cell, f"<%%api_endpoint {target}>", "exec", dont_inherit=True)
    except SyntaxError as error:
        text = (error.text or "").strip()
        raise MagicUsageError(
            f"{target}: line {error.lineno}{f' ({text!r})' if text else ''}: {error.msg}; endpoint "
            "cells must be plain Python (the node runs them without IPython: no !commands or "
            "%magics); the cell is not registered"
        ) from None


def load_magics(ipython: Any) -> None:
    """Register the magics on `ipython`, over a registry of the kernel's working directory."""
    ipython.register_magics(ApiMagics(ipython, KernelEndpoints()))
