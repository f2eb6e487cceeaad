"""A notebook is a service source: its `%%api_endpoint` cells, read without a kernel.

A cell whose first non-blank line is `%%api_endpoint SERVICE/ENDPOINT --function NAME ...`
holds that endpoint's code (the rest of the cell, untouched); one starting with
`%%api_test_queries SERVICE/ENDPOINT` holds a JSON list of its test queries. A later cell for
the same endpoint replaces an earlier one, as re-running it in the kernel would.
`stage_registrations` is the one way from cells to a staged service, shared with the in-kernel
magics so that both build byte-identical bundles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .code_check import Locate, check_code
from .definitions import DefinitionError, TestQuery, parse_json, parse_service, parse_test_queries
from .magic_syntax import (
    ENDPOINT_MAGIC,
    ENDPOINT_USAGE,
    TEST_QUERIES_MAGIC,
    EndpointMagic,
    MagicUsageError,
    parse_endpoint_magic,
    parse_test_queries_magic,
)
from .staging import StagedService, stage_definition


@dataclass(frozen=True)
class EndpointRegistration:
    """One endpoint as its cells define it: the magic's arguments, the code, the test queries."""

    magic: EndpointMagic
    code: str
    test_queries: tuple[TestQuery, ...] = ()
    cell: str = ""  # where the code is, for messages ("nb.ipynb: cell 4"); "" in a kernel
    first_line: int = 2  # the code's first line in its cell (after the magic's line)


def stage_registrations(
    service_id: str, endpoints: Sequence[EndpointRegistration], base_dir: Path, source: str
) -> StagedService:
    """Stage a service from its registered endpoints; folders are relative to `base_dir`.

    Each endpoint's code becomes `endpoints/<id>/<id>.py`; `source` names the origin (the
    notebook) in error messages.
    """
    strangers = [f"{r.magic.service}/{r.magic.endpoint}" for r in endpoints if r.magic.service != service_id]
    if strangers:
        raise ValueError(f"endpoints of other services than {service_id!r}: {strangers}")
    definition = parse_service({"id": service_id, "endpoints": [_endpoint_json(r) for r in endpoints]}, source)
    code = {r.magic.endpoint: _as_file(r.code).encode() for r in endpoints}
    staged = stage_definition(definition, base_dir, source, code)
    for r in endpoints:
        check_code(r.code, r.magic.function, _in_cell(r))
    return staged


def _in_cell(registration: EndpointRegistration) -> Locate:
    cell = registration.cell or f"{ENDPOINT_MAGIC} {registration.magic.service}/{registration.magic.endpoint}"
    return lambda line: f"{cell}, line {line + registration.first_line - 1}"


def _as_file(code: str) -> str:
    """Code ending with a newline, as IPython hands a cell magic its body: a cell saved without
    one then gives the same bundle read from the notebook as registered in the kernel."""
    return code if not code or code.endswith("\n") else code + "\n"


def _endpoint_json(registration: EndpointRegistration) -> dict[str, Any]:
    """The service.json form of a registration (so it is validated like one)."""
    magic = registration.magic
    out: dict[str, Any] = {
        "id": magic.endpoint,
        "code": f"{magic.endpoint}.py",
        "function": magic.function,
        "folders": list(magic.folders),
        "pool": dict(magic.pool),
        "testQueries": [query.to_json() for query in registration.test_queries],
    }
    if magic.requirements:
        out["codeEnv"] = {"requirements": list(magic.requirements)}
    if magic.batch is not None:
        out["batch"] = dict(magic.batch)
    return out


def read_notebook_services(path: Path) -> dict[str, StagedService]:
    """Every service a notebook defines, by id, in order of first appearance."""
    return stage_notebook_services(path, read_notebook_registrations(path))


def read_notebook_registrations(path: Path) -> dict[str, list[EndpointRegistration]]:
    """Every service's endpoints as the notebook's cells register them, by service id.

    Only the notebook is read: the folders its cells name are not looked at, so that a caller
    can check them first (the Jupyter extension does, against what the server may serve).
    """
    cells: dict[str, dict[str, tuple[EndpointMagic, str, str, int]]] = {}
    queries: dict[tuple[str, str], tuple[TestQuery, ...]] = {}
    query_cells: dict[tuple[str, str], str] = {}
    for number, source in enumerate(_code_cells(path), start=1):
        where = f"{path}: cell {number}"
        stripped = source.lstrip()
        first_line, _, body = stripped.partition("\n")
        magic_name, _, arguments = first_line.strip().partition(" ")
        try:
            if magic_name == ENDPOINT_MAGIC:
                magic = parse_endpoint_magic(arguments)
                body_line = source[: len(source) - len(stripped)].count("\n") + 2
                cells.setdefault(magic.service, {})[magic.endpoint] = (magic, body, where, body_line)
            elif magic_name == TEST_QUERIES_MAGIC:
                target = parse_test_queries_magic(arguments)
                queries[target] = parse_test_queries(parse_json(body, where), f"{where}: testQueries")
                query_cells[target] = where
        except MagicUsageError as error:
            raise MagicUsageError(f"{where}: {error}") from None
    for (service, endpoint), where in query_cells.items():
        if endpoint not in cells.get(service, {}):
            raise DefinitionError(
                f"{where}: test queries for {service}/{endpoint}, which no {ENDPOINT_MAGIC} cell defines"
            )
    return {
        service: [
            EndpointRegistration(magic, code, queries.get((service, endpoint), ()), cell, first_line)
            for endpoint, (magic, code, cell, first_line) in endpoints.items()
        ]
        for service, endpoints in cells.items()
    }


def stage_notebook_services(
    path: Path, registrations: dict[str, list[EndpointRegistration]]
) -> dict[str, StagedService]:
    """Stage the services registered by the notebook at `path` (folders relative to it)."""
    return {
        service: stage_registrations(service, endpoints, path.parent, str(path))
        for service, endpoints in registrations.items()
    }


def _code_cells(path: Path) -> list[str]:
    """The sources of a notebook's cells, code cells only (others as "", to keep numbering).

    A file that is not a notebook is refused with what is wrong with it, quoting none of it:
    the file may hold anything (nbformat's own messages quote its first characters).
    """
    import nbformat  # here: only notebook sources need it, and the node runs without Jupyter

    try:
        notebook = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
        return [_code_source(cell) for cell in notebook.cells]
    except OSError as error:
        raise DefinitionError(f"{path}: cannot be read: {error.strerror or type(error).__name__}") from None
    except UnicodeDecodeError:
        why = "it is not UTF-8 text"
    except nbformat.reader.NotJSONError:
        why = "it is not JSON"
    # nbformat reads any JSON and fails on what is not a notebook's shape with these
    except (ValueError, TypeError, AttributeError, KeyError, nbformat.ValidationError):
        why = "its JSON is not in the notebook format (nbformat 4)"
    raise DefinitionError(f"{path}: not a readable notebook: {why}")


def _code_source(cell: Any) -> str:
    if cell.get("cell_type") != "code":
        return ""
    if not isinstance(cell.get("source"), str):
        raise TypeError("a code cell's source is not text")
    return str(cell["source"])


def stage_notebook(path: Path, service_id: str | None = None) -> StagedService:
    """Stage the service a notebook defines; `service_id` picks one when it defines several."""
    services = read_notebook_services(path)
    if not services:
        raise DefinitionError(
            f"{path}: defines no service; an endpoint is a code cell starting with "
            f"{ENDPOINT_USAGE.removeprefix('usage: ')}"
        )
    if service_id is None and len(services) == 1:
        return next(iter(services.values()))
    if service_id in services:
        return services[service_id]
    listed = ", ".join(services)
    if service_id is None:
        raise DefinitionError(f"{path}: defines several services ({listed}); pass the one to use")
    raise DefinitionError(f"{path}: defines no service {service_id!r}, only {listed}")
