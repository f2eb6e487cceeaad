"""The commands that build a virtualenv and install requirements into it, with uv or with pip.

uv is preferred when it is on PATH: it resolves and installs in a fraction of pip's time. pip
is the fallback: the node's own pip installs into the new env (`pip --python`), or, when the
node has none recent enough, the pip that `python -m venv` seeds in it. Both read the same package
sources: pip reads its own configuration (pip.conf, PIP_* variables); uv reads neither, so
pip's configured index, extra indexes and find-links are passed to uv as options, with pip's
rule that every source is searched for the best match. With a wheelhouse, both run offline
(`--no-index --find-links DIR`).

Commands run with their output streamed line by line to a callback, and the end of it kept,
because when an install fails those last lines are the reason.
"""

from __future__ import annotations

import ast
import collections
import functools
import importlib.metadata
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

Progress = Callable[[str], None]

INSTALLERS = ("uv", "pip")
_PIP_SECTIONS = (":env:", "install", "global")  # where pip looks for a setting, strongest first
_UV_SOURCE_VARIABLES = (
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
)
_TAIL_LINES = 40
_SHOWN_ERROR_LINES = 12


def default_installer() -> str:
    """ "uv" when it is on PATH, else "pip"."""
    return "uv" if shutil.which("uv") else "pip"


def env_python(directory: Path) -> Path:
    """The interpreter of the virtualenv at `directory`."""
    return directory / "bin" / "python"


def build_commands(
    installer: str, directory: Path, requirements: Sequence[str], wheelhouse: Path | None
) -> list[list[str]]:
    """The commands that create a virtualenv at `directory` (from this interpreter, without its
    site-packages) and install `requirements` into it, in order."""
    python = str(env_python(directory))
    uv = shutil.which("uv") or "uv"
    if wheelhouse is not None:
        sources = ["--no-index", "--find-links", str(wheelhouse)]
    elif installer == "uv" and requirements:
        sources = uv_sources_from_pip()
    else:
        sources = []  # pip reads its own configuration
    if installer == "uv":
        create = [uv, "venv", "--quiet", "--python", sys.executable, str(directory)]
        install = [uv, "pip", "install", "--python", python]
    else:
        # this interpreter's pip installs into the new env (`pip --python`, pip 22.3+): seeding
        # the env with a pip of its own costs ~5 s of a build that otherwise takes ~0.3 s
        outside = _pip_installs_elsewhere()
        seeded = requirements and not outside
        create = [sys.executable, "-m", "venv", *([] if seeded else ["--without-pip"]), str(directory)]
        pip = [sys.executable, "-m", "pip", "--python", python] if outside else [python, "-m", "pip"]
        install = [*pip, "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
    return [create, [*install, *sources, *requirements]] if requirements else [create]


@functools.cache
def _pip_installs_elsewhere() -> bool:
    """Whether this interpreter has a pip that can install into another environment."""
    try:
        version = importlib.metadata.version("pip")
    except importlib.metadata.PackageNotFoundError:
        return False
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit()) >= (22, 3)


def run_streamed(
    argv: Sequence[str], progress: Progress, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, list[str]]:
    """Run a command, passing each non-blank output line (stdout and stderr) to `progress`;
    its exit code and its last lines. The command is killed if this is interrupted."""
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=None if env is None else dict(env),
        cwd=cwd,
    ) as process:
        assert process.stdout is not None
        try:
            for line in process.stdout:
                if line.strip():
                    tail.append(line.rstrip())
                    progress(line.rstrip())
        except BaseException:
            process.kill()  # leaving the `with` waits for it
            raise
        return process.wait(), list(tail)


def failure_report(command: str, code: int, tail: list[str]) -> str:
    """Why a command failed, from its last output lines: from its first error line on (pip says
    "ERROR:", uv "error:"), or else its last lines."""
    starts = [index for index, line in enumerate(tail) if line.lstrip().lower().startswith(("error", "×"))]
    shown = tail[starts[0] :] if starts else tail
    lines = [line.strip() for line in shown[-_SHOWN_ERROR_LINES:]] or ["(no output)"]
    return f"{command} failed (exit code {code}):\n  " + "\n  ".join(lines)


def uv_sources_from_pip() -> list[str]:
    """uv options naming the package sources pip is configured with (none if uv is configured
    itself through UV_* variables, or pip cannot tell)."""
    if any(name in os.environ for name in _UV_SOURCE_VARIABLES):
        return []
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return uv_sources_from_pip_config(listed.stdout) if listed.returncode == 0 else []


def uv_sources_from_pip_config(listing: str) -> list[str]:
    """uv options from the output of `pip config list` (lines `section.name='value'`)."""
    settings: dict[tuple[str, str], str] = {}
    for line in listing.splitlines():
        scoped, equals, quoted = line.partition("=")
        section, dot, name = scoped.rpartition(".")
        if not (equals and dot):
            continue
        try:
            value = ast.literal_eval(quoted)
        except (ValueError, SyntaxError):
            continue
        settings[section, name] = str(value)

    def setting(name: str) -> list[str]:
        for section in _PIP_SECTIONS:
            if (section, name) in settings:
                return settings[section, name].split()
        return []

    options: list[str] = []
    for name in ("index-url", "extra-index-url", "find-links"):
        for value in setting(name):
            options += [f"--{name}", value]
    if any(value.lower() in ("1", "true", "yes", "on") for value in setting("no-index")):
        options.append("--no-index")
    if setting("extra-index-url") or setting("find-links"):
        options += ["--index-strategy", "unsafe-best-match"]  # pip's rule: best match anywhere
    return options
