"""Bundles: deterministic zips of a staged service, and reading them without trusting them.

Building: the same staged service gives the same bytes (sorted entries, fixed dates and
modes, no extra fields), and the default generation id is derived from the content.
Reading: the bundle file must be a regular file of bounded size; every entry is checked (names,
links, declared sizes, duplicates) before any byte is returned or written, and sizes are
enforced on the decompressed data too, as it streams, so a zip bomb stops early and an
extraction holds one chunk in memory at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .definitions import (
    ID_PATTERN,
    DefinitionError,
    EndpointDef,
    ServiceDef,
    dump_service,
    parse_json,
    parse_service,
)
from .staging import StagedService, source_folders

SERVICE_JSON = "service.json"
_DATE = (1980, 1, 1, 0, 0, 0)
_FILE_MODE = stat.S_IFREG | 0o644
_UNIX = 3  # ZipInfo.create_system, fixed so the bytes do not depend on the building OS
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BundleLimits:
    """The most a bundle may hold; past it, reading refuses the bundle."""

    max_entries: int
    max_file_bytes: int  # decompressed, per entry
    max_total_bytes: int  # decompressed, all entries
    max_archive_bytes: int = 1 << 30  # the bundle file itself, as stored or uploaded


DEFAULT_LIMITS = BundleLimits(max_entries=10_000, max_file_bytes=1 << 30, max_total_bytes=2 << 30)


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the bundle, the entry and the rule."""


def bundle_bytes(staged: StagedService, generation: str | None = None) -> tuple[bytes, str]:
    """The bundle of `staged`, in memory, and its generation id."""
    buffer = io.BytesIO()
    generation = _write_zip(staged, generation, buffer)
    return buffer.getvalue(), generation


def write_bundle(staged: StagedService, out_path: Path, generation: str | None = None) -> str:
    """Write the bundle of `staged` to `out_path` atomically; return its generation id.

    Refused when `out_path` is inside a bundled folder: the next bundle would hold this one."""
    out = out_path.resolve()
    for folder in source_folders(staged):
        if out.is_relative_to(folder):
            raise BundleError(
                f"{out_path}: the bundle would contain itself: write it outside folder {folder}, which it bundles"
            )
    fd, temp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as temp_file:
            generation = _write_zip(staged, generation, temp_file)
        os.chmod(temp, 0o644)  # mkstemp's 0o600 would surprise whoever copies the bundle on
        os.replace(temp, out_path)
    except BaseException:
        os.unlink(temp)
        raise
    return generation


def content_generation(staged: StagedService) -> str:
    """The default generation id: a digest of the bundle's content without its generation."""
    digest = hashlib.sha256()
    for name, content in sorted(_entries(replace(staged.definition, generation=None), staged.files).items()):
        digest.update(name.encode() + b"\0" + _size(content).to_bytes(8, "big"))
        for chunk in _chunks(content):
            digest.update(chunk)
    return "g-" + digest.hexdigest()[:12]


def _entries(definition: ServiceDef, files: Mapping[str, bytes | Path]) -> dict[str, bytes | Path]:
    if SERVICE_JSON in files:
        raise BundleError(f"a staged file cannot be named {SERVICE_JSON}")
    return {SERVICE_JSON: dump_service(definition), **files}


def _write_zip(staged: StagedService, generation: str | None, out: BinaryIO) -> str:
    for name in staged.files:
        _check_name(name, "staged service")  # never build a bundle that reading would refuse
    generation = generation or staged.definition.generation or content_generation(staged)
    if not ID_PATTERN.fullmatch(generation):
        raise DefinitionError(f"generation: expected an id made of letters, digits, '_' or '-', got {generation!r}")
    entries = _entries(replace(staged.definition, generation=generation), staged.files)
    with zipfile.ZipFile(out, "w") as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, _DATE)
            info.compress_type = zipfile.ZIP_DEFLATED  # at zlib's default level
            info.create_system = _UNIX
            info.external_attr = _FILE_MODE << 16
            info.file_size = _size(entries[name])
            with archive.open(info, "w") as entry:
                for chunk in _chunks(entries[name]):
                    entry.write(chunk)
    return generation


def _size(content: bytes | Path) -> int:
    return len(content) if isinstance(content, bytes) else content.stat().st_size


def _chunks(content: bytes | Path) -> Iterator[bytes]:
    if isinstance(content, bytes):
        yield content
        return
    with content.open("rb") as file:
        while chunk := file.read(_CHUNK):
            yield chunk


def read_bundle(source: Path | bytes, limits: BundleLimits = DEFAULT_LIMITS) -> dict[str, bytes]:
    """All files of a bundle by name, after checking every entry against the rules."""
    label = _label(source)
    with _open_archive(source, limits) as archive:
        files = _checked_files(archive.infolist(), label, limits)
        budget = _Budget(limits)
        return {info.filename: _entry_bytes(archive, info, label, budget) for info in files}


@contextlib.contextmanager
def _open_archive(source: Path | bytes, limits: BundleLimits) -> Iterator[zipfile.ZipFile]:
    """The zip of a bundle in memory or in a file."""
    label = _label(source)
    file = io.BytesIO(source) if isinstance(source, bytes) else _open_regular_file(source, label, limits)
    with file:
        try:
            archive = zipfile.ZipFile(file)
        except zipfile.BadZipFile:
            raise BundleError(f"{label}: not a bundle (zip) file") from None
        except OSError as error:
            raise BundleError(f"{label}: cannot read: {error.strerror}") from error
        with archive:
            yield archive


def _open_regular_file(path: Path, label: str, limits: BundleLimits) -> BinaryIO:
    """A bundle file, opened once it is known to be a regular file within the size limit: a
    device such as /dev/zero would be read forever, a FIFO would block the opening. Checked again
    once open, in case the path was replaced meanwhile (the opening itself never blocks)."""
    try:
        _check_archive_file(os.stat(path), label, limits)
        file = os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY), "rb")
    except OSError as error:
        raise BundleError(f"{label}: cannot read: {error.strerror}") from error
    try:
        _check_archive_file(os.fstat(file.fileno()), label, limits)
    except BundleError:
        file.close()
        raise
    return file


def _check_archive_file(info: os.stat_result, label: str, limits: BundleLimits) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise BundleError(f"{label}: not a regular file; a bundle is a .zip file, as `apinode build` writes it")
    if info.st_size > limits.max_archive_bytes:
        raise BundleError(f"{label}: {info.st_size} bytes, past the limit of {limits.max_archive_bytes} for a bundle")


class _Budget:
    """How many decompressed bytes the entries still read may take, file by file and in all."""

    def __init__(self, limits: BundleLimits) -> None:
        self.per_file = limits.max_file_bytes
        self.left = limits.max_total_bytes

    def allowed(self) -> int:
        return min(self.per_file, self.left)

    def spend(self, size: int) -> None:
        self.left -= size


def _label(source: Path | bytes) -> str:
    """How messages name a bundle."""
    return "bundle" if isinstance(source, bytes) else str(source)


_DRIVE = re.compile(r"[A-Za-z]:")


def _name_problem(name: str) -> str | None:
    """Why an entry name could escape or confuse the directory it is extracted into."""
    parts = name.split("/")
    if not name:
        return "empty name"
    if "\\" in name:
        return "backslash in name"
    if name.startswith("/") or _DRIVE.match(name):
        return "absolute path"
    if ".." in parts:
        return "'..' in path"
    if "" in parts or "." in parts:
        return "empty or '.' path segment"
    return None


def _check_name(name: str, label: str) -> None:
    problem = _name_problem(name)
    if problem:
        raise BundleError(f"{label}: entry {name!r} refused: {problem}")


def _checked_files(infos: list[zipfile.ZipInfo], label: str, limits: BundleLimits) -> list[zipfile.ZipInfo]:
    """The file entries (directory entries dropped) once every entry has passed the rules."""
    if len(infos) > limits.max_entries:
        raise BundleError(f"{label}: {len(infos)} entries, past the limit of {limits.max_entries}")
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        refuse = f"{label}: entry {name!r} refused"
        _check_name(name.removesuffix("/") if info.is_dir() else name, label)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise BundleError(f"{refuse}: symbolic link")
        if name in seen:
            raise BundleError(f"{refuse}: duplicate name")
        if info.flag_bits & 0x1:
            raise BundleError(f"{refuse}: encrypted")
        if info.file_size > limits.max_file_bytes:
            raise BundleError(f"{refuse}: {info.file_size} bytes, past the limit of {limits.max_file_bytes} per file")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise BundleError(f"{refuse}: the entries add up past the limit of {limits.max_total_bytes} bytes")
        seen.add(name)
    files = [info for info in infos if not info.is_dir()]
    names = {info.filename for info in files}
    directories = {name.removesuffix("/") for name in seen - names}
    directories.update(str(parent) for name in names for parent in PurePosixPath(name).parents)
    clashes = sorted(names & directories)
    if clashes:
        raise BundleError(f"{label}: entry {clashes[0]!r} refused: both a file and a folder")
    if SERVICE_JSON not in names:
        raise BundleError(f"{label}: missing {SERVICE_JSON}")
    return files


def _copy_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, out: BinaryIO, label: str, budget: _Budget) -> int:
    """Write an entry's bytes to `out` a chunk at a time, never past the budget whatever its
    header declares (zipfile trusts headers to stop); the size written."""
    allowed = budget.allowed()
    size = 0
    try:
        with archive.open(info) as entry:
            while chunk := entry.read(min(_CHUNK, allowed - size + 1)):
                size += len(chunk)
                if size > allowed:
                    raise BundleError(f"{label}: entry {info.filename!r} refused: decompresses past the size limit")
                out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError) as error:
        raise BundleError(f"{label}: entry {info.filename!r} refused: corrupt ({error})") from None
    budget.spend(size)
    return size


def _entry_bytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, budget: _Budget) -> bytes:
    buffer = io.BytesIO()
    _copy_entry(archive, info, buffer, label, budget)
    return buffer.getvalue()


def _definition(service_json: bytes, names: Collection[str], label: str) -> ServiceDef:
    """A bundle's definition, checked against the names of its other files."""
    where = f"{label}: {SERVICE_JSON}"
    definition = parse_service(parse_json(service_json, where), where)
    for endpoint in definition.endpoints:
        if endpoint.code not in names:
            raise BundleError(f"{label}: endpoint {endpoint.id}: code file {endpoint.code!r} is not in the bundle")
        for folder in _endpoint_folders(endpoint):
            problem = _name_problem(folder) or _folder_problem(folder, names)
            if problem:
                raise BundleError(f"{label}: endpoint {endpoint.id}: folder {folder!r} refused: {problem}")
    return definition


def _with_generation(definition: ServiceDef, files: Mapping[str, bytes | Path]) -> ServiceDef:
    """The definition with its generation set: derived from the content for a zip not made by
    `apinode build`."""
    if definition.generation is not None:
        return definition
    return replace(definition, generation=content_generation(StagedService(definition, files)))


def _folder_problem(folder: str, files: Collection[str]) -> str | None:
    """Why a declared folder cannot be made in the generation directory: it, or a folder above
    it, is one of the bundle's files."""
    if folder in files:
        return "a file, not a folder"
    for parent in PurePosixPath(folder).parents:
        if str(parent) in files:
            return f"{str(parent)!r} is a file, not a folder"
    return None


def _endpoint_folders(endpoint: EndpointDef) -> tuple[str, ...]:
    """The folders an endpoint needs in its generation directory: its own and its wheelhouse."""
    wheelhouse = endpoint.code_env.wheelhouse if endpoint.code_env else None
    return endpoint.folders if wheelhouse is None else (*endpoint.folders, wheelhouse)


def open_bundle(source: Path | bytes, limits: BundleLimits = DEFAULT_LIMITS) -> StagedService:
    """A bundle as a staged service, in memory (to serve it, or to bundle it again)."""
    files = read_bundle(source, limits)
    definition = _definition(files.pop(SERVICE_JSON), files.keys(), _label(source))
    return StagedService(_with_generation(definition, files), files)


def extract_bundle(source: Path | bytes, dest: Path, limits: BundleLimits = DEFAULT_LIMITS) -> ServiceDef:
    """Check a bundle, then extract it to `dest` (which must not exist) all at once.

    Every entry's name, kind and declared size, and the definition, are checked before a byte
    is written. Entries are then streamed to a temporary directory next to `dest`, a chunk at
    a time (memory stays flat whatever the bundle holds), within the size budget whatever the
    headers declared; that directory is renamed to `dest` at the end, or removed on any
    failure (with the parents this call made), so `dest` is either absent or complete.
    """
    if dest.exists() or dest.is_symlink():
        raise FileExistsError(f"{dest}: already exists")
    label = _label(source)
    with _open_archive(source, limits) as archive:
        entries = {info.filename: info for info in _checked_files(archive.infolist(), label, limits)}
        budget = _Budget(limits)
        service_json = _entry_bytes(archive, entries.pop(SERVICE_JSON), label, budget)
        definition = _definition(service_json, entries.keys(), label)
        created = next((parent for parent in reversed(dest.parents) if not parent.exists()), None)
        dest.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
        try:
            for name, info in entries.items():
                target = temp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as out:
                    _copy_entry(archive, info, out, label, budget)
            definition = _with_generation(definition, {name: temp / name for name in entries})
            (temp / SERVICE_JSON).write_bytes(dump_service(definition))
            for endpoint in definition.endpoints:
                for folder in _endpoint_folders(endpoint):  # an empty one has no entry, yet is expected
                    (temp / folder).mkdir(parents=True, exist_ok=True)
            os.replace(temp, dest)
        except BaseException:
            shutil.rmtree(created or temp, ignore_errors=True)  # what this call made, and only that
            raise
    return definition
