"""Wheelhouses: the wheels of each code env, put into a bundle so that a node without access to a
package index builds the env from the bundle alone (`apinode build --wheelhouse`).

`pip wheel` resolves each distinct set of requirements once, dependencies included, into
`wheels/<id of the first endpoint using it>/`; published wheels are downloaded, source
distributions are built into wheels, so the node needs no compiler either. Wheels fit the
Python version and platform of the machine that builds the bundle: build it on the kind of
machine that serves it. The same wheel files give the same bundle.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path

from .codeenvs import CodeEnvError, normalize_requirements
from .installers import Progress, failure_report, run_streamed
from .staging import StagedService

WHEELS = "wheels"
log = logging.getLogger("apinode.codeenvs")


def with_wheelhouses(staged: StagedService, work_dir: Path, progress: Progress = log.info) -> StagedService:
    """`staged` with the wheels of every code env, fetched into `work_dir` (which must outlive
    the bundle's writing: staged files are read then), with this interpreter's `pip wheel`; its
    output goes line by line to `progress`. Wheelhouses `staged` had are replaced. CodeEnvError
    if pip cannot fetch them."""
    files = {name: content for name, content in staged.files.items() if not name.startswith(f"{WHEELS}/")}
    wheelhouses: dict[tuple[str, ...], str] = {}
    endpoints = []
    for endpoint in staged.definition.endpoints:
        code_env = endpoint.code_env
        if code_env is not None:
            requirements = normalize_requirements(code_env.requirements)
            if requirements and requirements not in wheelhouses:
                wheelhouses[requirements] = f"{WHEELS}/{endpoint.id}"
                files.update(_fetch(requirements, work_dir / endpoint.id, endpoint.id, progress))
            code_env = replace(code_env, wheelhouse=wheelhouses.get(requirements))
        endpoints.append(replace(endpoint, code_env=code_env))
    return StagedService(replace(staged.definition, endpoints=tuple(endpoints)), files)


def _fetch(
    requirements: tuple[str, ...], directory: Path, endpoint_id: str, progress: Progress
) -> dict[str, bytes | Path]:
    """Fetch the wheels into `directory`; their bundle paths."""
    listed = ", ".join(requirements)
    progress(f"fetching wheels for endpoint {endpoint_id}: {listed}")
    argv = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "--wheel-dir",
        str(directory),
        *requirements,
    ]
    try:
        code, tail = run_streamed(argv, progress)
    except OSError as error:
        raise CodeEnvError(f"endpoint {endpoint_id}: cannot run pip: {error}") from error
    if code != 0:
        raise CodeEnvError(
            f"endpoint {endpoint_id}: cannot fetch the wheels of {listed}: {failure_report('pip wheel', code, tail)}"
        )
    return {f"{WHEELS}/{endpoint_id}/{wheel.name}": wheel for wheel in sorted(directory.glob("*.whl"))}
