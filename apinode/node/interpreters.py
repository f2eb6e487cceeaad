"""Which interpreter an endpoint's pipelines run: the node's own (the builtin env), or the code
env its definition asks for, from the node's cache of code envs.

Where a node creates the `Endpoint`s of a generation, it asks `codeenv_python` first and passes
the answer on: `Endpoint(..., python=python, env=env_vars)`. That call blocks while an env is
built (minutes, the first time; a CodeEnvError if it cannot be), so an event loop makes it from
a worker thread (`await asyncio.to_thread(codeenv_python, ...)`); an env already built costs a
lock and a stat.

Caches: `apinode run` keeps its envs across runs in $APINODE_CODE_ENVS (default
~/.cache/apinode/code-envs), the user's cache, which the Jupyter dev server shares; `apinode
serve --data-dir DIR` keeps them in DIR/code-envs, next to the generations that use them
(DIR/services/<id>/generations/<gen>/service.json), unless `--code-envs` names another cache.
On a Ray cluster (--ray) the node builds none: each Ray node that runs an endpoint's pipelines
builds its env there, with this same code, in its own cache (`ray_node_cache`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from ..packaging.codeenvs import CodeEnvCache
from ..packaging.definitions import DefinitionError, EndpointDef, load_service_file
from ..packaging.installers import Progress
from .errors import EndpointLoadFailed

log = logging.getLogger("apinode.codeenvs")

Interpreter = tuple[str, dict[str, str] | None]
"""What an endpoint's pipelines run with: (interpreter, environment variables or None for the
node's own)."""
Interpreters = Mapping[str, "Interpreter | EndpointLoadFailed"]
"""Interpreters by endpoint id, or why an endpoint's code env could not be built; endpoints not
in it run the node's own."""
BUILTIN: Interpreter = (sys.executable, None)


def codeenv_python(
    cache: CodeEnvCache, endpoint: EndpointDef, generation_dir: Path, progress: Progress | None = None
) -> Interpreter:
    """What the pipelines of `endpoint` of the generation extracted in `generation_dir` run
    with: its code env's interpreter and environment, or the node's (`BUILTIN`) when it has no
    code env. Builds the env if needed, from the generation's wheelhouse when it has one."""
    code_env = endpoint.code_env
    if code_env is None:
        return BUILTIN
    wheelhouse = None if code_env.wheelhouse is None else generation_dir / code_env.wheelhouse
    built = cache.ensure(code_env, wheelhouse, progress)
    return str(built.python), built.env_vars


def run_cache() -> CodeEnvCache:
    """The cache `apinode run` uses: it outlives each run, so a second run builds nothing.
    A relative `$APINODE_CODE_ENVS` is taken from the current directory, once, here."""
    root = os.environ.get("APINODE_CODE_ENVS")
    return CodeEnvCache(Path(root).expanduser().resolve() if root else Path.home() / ".cache" / "apinode" / "code-envs")


def ray_node_cache() -> CodeEnvCache:
    """The cache of a Ray node (apinode.node.ray.host): `$APINODE_RAY_CODE_ENVS` as set where
    that Ray node was started (`ray start`), else the user's cache, as `apinode run` finds it on
    that machine. A Ray node keeps its envs across Ray sessions, as a user's machine does."""
    root = os.environ.get("APINODE_RAY_CODE_ENVS")
    return CodeEnvCache(Path(root).expanduser().resolve()) if root else run_cache()


def data_dir_cache(data_dir: Path) -> CodeEnvCache:
    """The cache of the node serving `data_dir` (an absolute path, as the command line gives it)."""
    return CodeEnvCache(data_dir / "code-envs")


def env_users(data_dir: Path, cache: CodeEnvCache) -> dict[str, list[str]]:
    """For each env key, the generations on disk under `data_dir` that use it ("service/gen")."""
    users: dict[str, set[str]] = defaultdict(set)
    for service_file in sorted(data_dir.glob("services/*/generations/*/service.json")):
        try:
            definition = load_service_file(service_file)
        except DefinitionError as error:
            log.warning("skipped (its code envs are unknown): %s", error)
            continue
        generation = service_file.parent
        for endpoint in definition.endpoints:
            if endpoint.code_env is not None:
                users[cache.key(endpoint.code_env)].add(f"{generation.parent.parent.name}/{generation.name}")
    return {key: sorted(names) for key, names in users.items()}
