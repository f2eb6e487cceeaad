"""Code envs: one virtualenv per distinct (Python version, requirements), built once and kept.

Layout under the cache root:

    <key>/                     the virtualenv, built in place (virtualenvs are not relocatable:
                               their scripts and pyvenv.cfg hold absolute paths)
    <key>/.apinode-complete    written last, atomically: the env is whole (JSON: requirements,
                               Python version, installer, build time)
    <key>.lock                 flock()ed by whoever checks, builds or removes <key>/
    <key>.in-use               share-flock()ed by each process that uses <key>/, while it runs

The key is the first 16 hex digits of the sha256 of the Python version and the normalized
requirements. A wheelhouse is not part of it: it is where the same requirements come from.

An env sees the standard library, its own packages and nothing of the node's environment: it is
created without system site-packages, and processes run in it (the installer, pipelines) get
the node's environment variables minus those that would put other packages on their path
(`BuiltEnv.env_vars`).

Concurrency model: `ensure` blocks (a node calls it from a worker thread). Threads and processes
alike (two endpoints loading at once, two nodes sharing a root) take an exclusive flock on
<key>.lock before they look at <key>/: the first builds, the others wait, then find the marker.
The kernel drops a lock with its holder, so a build killed halfway leaves a directory without
marker, which the next `ensure` removes and builds again. Different keys build in parallel.
`remove` takes the lock only if it is free, so it never waits for a build nor breaks one. A lock
file goes with its env (a failed build or `remove` deletes it while holding it), which
apinode.packaging.filelock allows for.

A cache may be shared by several nodes (`apinode run`, the Jupyter dev server and `apinode
serve --code-envs DIR` can all use the user's cache), so what a data directory's generations
use does not say what is in use. Hence `<key>.in-use`: `ensure` takes a shared flock on it, under
<key>.lock and kept until the process ends, and `remove` removes an env only if it gets both
locks at once without waiting: never one that a running process uses or builds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .definitions import CodeEnv
from .filelock import hold_shared, locked
from .installers import (
    INSTALLERS,
    Progress,
    build_commands,
    default_installer,
    env_python,
    failure_report,
    run_streamed,
)

MARKER = ".apinode-complete"
PYTHON_TAG = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}"
_KEY = re.compile(r"[0-9a-f]{16}")
_NODE_PATH_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")
# A project name followed by the end or what may follow a name in a requirement (PEP 508).
_NAMED = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?=$|[\s\[(<>=!~;@,])")
_ARCHIVE = re.compile(r"\.(whl|zip|tar\.gz|tgz|tar\.bz2)$", re.IGNORECASE)  # a file, not a name

log = logging.getLogger("apinode.codeenvs")


class CodeEnvError(Exception):
    """A code env that could not be built; the message names its requirements and says why."""


@dataclass(frozen=True)
class BuiltEnv:
    """A complete code env: the interpreter pipelines run with, and their environment."""

    key: str
    directory: Path
    python: Path
    env_vars: dict[str, str] = field(compare=False, repr=False)


@dataclass(frozen=True)
class CachedEnv:
    """An env found under a cache root (complete or not), for listing and pruning."""

    key: str
    directory: Path
    requirements: tuple[str, ...]
    complete: bool
    size_bytes: int


def normalize_requirements(requirements: Iterable[str]) -> tuple[str, ...]:
    """Requirements stripped, blanks dropped, project names in canonical form ("Six" and "six"
    are one env), deduplicated and sorted: the order they are written in means nothing."""
    return tuple(sorted({_canonical(text.strip()) for text in requirements if text.strip()}))


def _canonical(requirement: str) -> str:
    match = _NAMED.match(requirement)
    if match is None or _ARCHIVE.search(match.group(1)):
        return requirement  # a path or a URL: left as written
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return name + requirement[match.end() :]


def env_key(requirements: tuple[str, ...]) -> str:
    """The key of the env of normalized `requirements`, for this Python version."""
    text = json.dumps({"python": PYTHON_TAG, "requirements": list(requirements)})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def isolated_environment(directory: Path | None = None) -> dict[str, str]:
    """This process's environment variables without those that point Python at other packages;
    with `directory`, set up for the virtualenv there (VIRTUAL_ENV, its bin first on PATH)."""
    env = {name: value for name, value in os.environ.items() if name not in _NODE_PATH_VARIABLES}
    if directory is not None:
        env["VIRTUAL_ENV"] = str(directory)
        env["PATH"] = os.pathsep.join((str(directory / "bin"), os.environ.get("PATH", os.defpath)))
    return env


class CodeEnvCache:
    """The code envs under `root`. `installer` is "uv", "pip", or None: uv when it is on PATH.

    `root` is absolute: an env is built by commands run in another directory, and its
    interpreter is started by pipelines that run in their generation's directory."""

    def __init__(self, root: Path, installer: str | None = None) -> None:
        if installer not in (None, *INSTALLERS):
            raise ValueError(f"installer: expected one of {INSTALLERS}, got {installer!r}")
        if not root.is_absolute():
            raise ValueError(f"a code env cache needs an absolute path, got {str(root)!r}")
        self.root = root
        self.installer = installer
        self._in_use: dict[str, int] = {}  # key -> descriptor holding <key>.in-use shared

    def key(self, code_env: CodeEnv) -> str:
        return env_key(normalize_requirements(code_env.requirements))

    def ensure(self, code_env: CodeEnv, wheelhouse: Path | None = None, progress: Progress | None = None) -> BuiltEnv:
        """The env of `code_env`, built first if needed: from `wheelhouse` alone when given,
        else from the package index. Installer output goes line by line to `progress` (default:
        the 'apinode.codeenvs' log at INFO). CodeEnvError if it cannot be built."""
        requirements = normalize_requirements(code_env.requirements)
        key = env_key(requirements)
        directory = self.root / key
        say = progress or (lambda line: log.info("code env %s: %s", key, line))
        self.root.mkdir(parents=True, exist_ok=True)
        lock = self.root / f"{key}.lock"
        with locked(lock, wait=True, on_wait=lambda: say("waiting: another process is building or checking it")):
            if not _is_complete(directory):
                if directory.exists():
                    say("removing a half-built env")
                    shutil.rmtree(directory)
                try:
                    try:
                        self._build(directory, requirements, wheelhouse, say)
                    except OSError as error:  # the disk, not the installer: say so, by name
                        raise CodeEnvError(f"code env {key}: cannot build it in {directory}: {error}") from error
                except BaseException:
                    shutil.rmtree(directory, ignore_errors=True)
                    lock.unlink(missing_ok=True)
                    raise
            if key not in self._in_use:  # under <key>.lock: `remove` cannot be between its two locks
                self._in_use[key] = hold_shared(self.root / f"{key}.in-use")
        return BuiltEnv(key, directory, env_python(directory), isolated_environment(directory))

    def _build(self, directory: Path, requirements: tuple[str, ...], wheelhouse: Path | None, say: Progress) -> None:
        """Build the env in place, marking it complete last."""
        installer = self.installer or default_installer()
        listed = ", ".join(requirements) or "no requirements"
        what = f"code env {directory.name} ({listed})"
        if wheelhouse is not None and not wheelhouse.is_dir():
            raise CodeEnvError(f"{what}: wheelhouse not found: {wheelhouse}")
        count = f"{len(requirements)} requirement{'s' * (len(requirements) != 1)}"
        say(f"building for {count} with {installer}{f' from {wheelhouse}' if wheelhouse else ''}: {listed}")
        started = time.monotonic()
        for argv in build_commands(installer, directory, requirements, wheelhouse):
            try:
                code, tail = run_streamed(argv, say, isolated_environment(), cwd=self.root)
            except OSError as error:
                raise CodeEnvError(f"{what}: cannot run {argv[0]}: {error}") from error
            if code != 0:
                raise CodeEnvError(f"{what}: {failure_report(installer, code, tail)}")
        seconds = round(time.monotonic() - started, 3)
        _write_marker(
            directory,
            {"requirements": list(requirements), "python": PYTHON_TAG, "installer": installer, "seconds": seconds},
        )
        say(f"built in {seconds:.1f} s")

    def close(self) -> None:
        """Stop marking this process's envs in use (it no longer runs anything in them)."""
        for fd in self._in_use.values():
            os.close(fd)
        self._in_use.clear()

    def entries(self) -> list[CachedEnv]:
        """Every env under the root, by key."""
        if not self.root.is_dir():
            return []
        found = []
        for directory in sorted(self.root.iterdir()):
            if directory.is_dir() and _KEY.fullmatch(directory.name):
                marker = _read_marker(directory)
                found.append(
                    CachedEnv(
                        key=directory.name,
                        directory=directory,
                        requirements=tuple(map(str, marker.get("requirements", ()))) if marker else (),
                        complete=marker is not None and _is_complete(directory),
                        size_bytes=_tree_size(directory),
                    )
                )
        return found

    def remove(self, key: str) -> str | None:
        """Remove the env `key`; None when removed, else why it was kept: a process is building
        or checking it right now, or a running process uses it."""
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a code env key: {key!r}")
        lock, in_use = self.root / f"{key}.lock", self.root / f"{key}.in-use"
        with locked(lock, wait=False) as held:
            if not held:
                return "being built"
            with locked(in_use, wait=False) as unused:
                if not unused:
                    return "in use by a running node"
                shutil.rmtree(self.root / key, ignore_errors=True)
                in_use.unlink(missing_ok=True)
                lock.unlink(missing_ok=True)
        return None


def _is_complete(directory: Path) -> bool:
    """Marked complete, and its interpreter still there (its base Python may have gone)."""
    return (directory / MARKER).is_file() and env_python(directory).exists()


def _write_marker(directory: Path, content: dict[str, object]) -> None:
    temp = directory / f"{MARKER}.tmp"
    temp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(temp, directory / MARKER)


def _read_marker(directory: Path) -> dict[str, Any] | None:
    try:
        content = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def _tree_size(directory: Path) -> int:
    total = 0
    for parent, _, files in os.walk(directory):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(parent, name)).st_size
    return total
