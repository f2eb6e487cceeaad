"""A service ready to be bundled: its definition rewritten to archive paths, and its files.

Every source (directory, notebook, bundle) is staged into the archive layout below, so a bundle
and an extracted generation directory look the same and the node reads both alike:

    service.json                                   the definition, paths rewritten
    endpoints/<endpoint id>/<code file name>       each endpoint's code
    folders/<folder name>[-2, -3 ...]/...          each distinct source folder, once
    wheels/<name>/*.whl                            each distinct code env wheelhouse, once

A service directory is self-contained: its code and folders must lie inside it (links followed),
so that building someone else's directory never bundles files from elsewhere on the machine, as
reading a bundle never writes outside its generation. A notebook's folders are relative to its
directory and may reach beside it (a data folder next to the notebooks' folder).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from .code_check import at_file, check_code
from .definitions import CodeEnv, DefinitionError, EndpointDef, ServiceDef, load_service_file

SKIPPED_DIRECTORIES = frozenset({"__pycache__", ".ipynb_checkpoints"})


@dataclass(frozen=True)
class StagedService:
    """A definition whose code and folders are archive paths, and the files behind them.

    `files` maps archive paths to contents, or to files on disk read only when bundled; it holds
    everything but service.json, which is written from `definition`.
    """

    definition: ServiceDef
    files: Mapping[str, bytes | Path]


def stage_definition(
    definition: ServiceDef,
    base_dir: Path,
    source: str,
    code: Mapping[str, bytes] | None = None,
    *,
    confined: bool = False,
) -> StagedService:
    """Stage a definition whose code and folders are relative to `base_dir`.

    `code` gives endpoints' code by endpoint id (a notebook's cells); without it, code is read
    from the files the definition names. `source` names the origin in error messages.
    `confined`: refuse code and folders outside `base_dir` (a service directory's rule).
    """
    files: dict[str, bytes | Path] = {}
    inside = base_dir.resolve() if confined else None
    folders = _Folders(files, "folders", inside)
    wheelhouses = _Folders(files, "wheels", inside)
    endpoints = []
    for index, endpoint in enumerate(definition.endpoints):
        where = f"{source}: endpoint {endpoint.id}"
        code_path = f"endpoints/{endpoint.id}/{PurePosixPath(endpoint.code).name}"
        files[code_path] = (
            code[endpoint.id]
            if code is not None
            else _code_file(base_dir, endpoint, where, inside, f"{source}: endpoints[{index}].code")
        )
        field = f"{source}: endpoints[{index}]"
        endpoints.append(
            replace(
                endpoint,
                code=code_path,
                folders=tuple(
                    folders.add(base_dir, folder, where, f"{field}.folders[{position}]")
                    for position, folder in enumerate(endpoint.folders)
                ),
                code_env=_staged_code_env(endpoint.code_env, wheelhouses, base_dir, where, field),
            )
        )
    return StagedService(replace(definition, endpoints=tuple(endpoints)), files)


def folder_on_disk(archive_path: str, source: Path) -> Path:
    """The directory a staged file was collected from: for `folders/<name>/a/b.txt`, the folder
    the definition names (for `endpoints/<id>/code.py`, the code file's directory)."""
    return source.parents[len(archive_path.split("/")) - 3]


def source_folders(staged: StagedService) -> dict[Path, str]:
    """The bundled folders and wheelhouses on disk (resolved), each with its archive folder;
    only those whose files are still on disk (not a bundle's, read in memory)."""
    return {
        folder_on_disk(name, source).resolve(): "/".join(name.split("/")[:2])
        for name, source in staged.files.items()
        if isinstance(source, Path) and name.split("/")[0] in ("folders", "wheels")
    }


def stage_directory(path: Path) -> StagedService:
    """Stage a service directory: its service.json, with code and folders relative to it."""
    service_file = path / "service.json"
    return stage_definition(load_service_file(service_file), path, str(service_file), confined=True)


def stage_source(path: Path, service_id: str | None = None) -> StagedService:
    """Stage whatever the user points at: a service directory, a notebook or a bundle; each
    endpoint's code is checked (it compiles and defines its function) without running it.

    `service_id` picks a service in a notebook that defines several; for the other sources it
    must match the one service they define.
    """
    # Imported here: both modules build on this one.
    from .bundles import open_bundle
    from .notebooks import stage_notebook

    if not path.exists():
        raise DefinitionError(f"{path}: no such file or directory")
    suffix = path.suffix.lower()
    if path.is_dir():
        staged = stage_directory(path)
        _check_endpoints(staged, path)
    elif suffix == ".ipynb":
        return stage_notebook(path, service_id)  # checked cell by cell
    elif suffix == ".zip":
        staged = open_bundle(path)
        _check_endpoints(staged, path)
    else:
        raise DefinitionError(
            f"{path}: expected a service directory (with a service.json), a notebook (.ipynb) or a bundle (.zip)"
        )
    if service_id is not None and service_id != staged.definition.id:
        raise DefinitionError(f"{path}: defines service {staged.definition.id!r}, not {service_id!r}")
    return staged


def _check_endpoints(staged: StagedService, source: Path) -> None:
    """Every endpoint's code compiles and defines its function (packaging.code_check), named
    by its file on disk, or by its path inside the bundle `source`."""
    for endpoint in staged.definition.endpoints:
        code = staged.files[endpoint.code]
        if isinstance(code, Path):
            check_code(code.read_bytes(), endpoint.function, at_file(str(code)))
        else:
            check_code(code, endpoint.function, at_file(f"{source}:{endpoint.code}"))


def _code_file(base_dir: Path, endpoint: EndpointDef, where: str, inside: Path | None, field: str) -> Path:
    path = base_dir / endpoint.code
    _check_inside(path, inside, field, endpoint.code)
    if not path.is_file():
        raise DefinitionError(f"{where}: code file not found: {path}")
    return path


def _check_inside(path: Path, inside: Path | None, field: str, value: str) -> None:
    """Refuse `path` (what `field` = `value` names) unless it lies in the directory `inside`."""
    if inside is not None and not path.resolve().is_relative_to(inside):
        raise DefinitionError(
            f"{field}: {value!r} is outside the service directory {inside}; a service bundles only "
            "what its directory holds: move or copy it inside, and name it relative to the directory"
        )


def _staged_code_env(
    code_env: CodeEnv | None, wheelhouses: _Folders, base_dir: Path, where: str, field: str
) -> CodeEnv | None:
    if code_env is None or code_env.wheelhouse is None:
        return code_env
    return replace(
        code_env,
        wheelhouse=wheelhouses.add(
            base_dir, code_env.wheelhouse, f"{where}: codeEnv.wheelhouse", f"{field}.codeEnv.wheelhouse"
        ),
    )


class _Folders:
    """The folders of one service, each distinct one staged once under a unique name (all inside
    the directory `inside`, when given)."""

    def __init__(self, files: dict[str, bytes | Path], prefix: str, inside: Path | None) -> None:
        self._files = files
        self._prefix = prefix
        self._inside = inside
        self._names: dict[Path, str] = {}

    def add(self, base_dir: Path, folder: str, where: str, field: str) -> str:
        """Stage `folder` (relative to `base_dir`; `field` names it) unless done already; its archive path."""
        _check_inside(base_dir / folder, self._inside, field, folder)
        real = (base_dir / folder).resolve()
        if real in self._names:
            return self._names[real]
        if not real.is_dir():
            raise DefinitionError(f"{where}: folder not found: {base_dir / folder}")
        stem = f"{self._prefix}/{real.name or 'root'}"
        name, count = stem, 1
        while name in self._names.values():
            count += 1
            name = f"{stem}-{count}"
        self._names[real] = name
        self._files.update(_folder_files(real, name, f"{where}: folder {folder}"))
        return name


def _folder_files(directory: Path, prefix: str, where: str) -> Iterator[tuple[str, Path]]:
    """(archive path, file) for every file under `directory`, refusing links and specials."""
    for entry in sorted(directory.iterdir()):
        if entry.is_symlink():
            raise DefinitionError(f"{where}: symbolic links cannot be bundled: {entry}")
        if entry.is_dir():
            if entry.name not in SKIPPED_DIRECTORIES:
                yield from _folder_files(entry, f"{prefix}/{entry.name}", where)
        elif entry.is_file():
            yield f"{prefix}/{entry.name}", entry
        else:
            raise DefinitionError(f"{where}: not a regular file: {entry}")
