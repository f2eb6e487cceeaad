"""`apinode openapi SOURCE`: a service's OpenAPI document without a node, for CI and registries.

A function is described where it lives (DESIGN.md): each endpoint is loaded once in one
pipeline, exactly as a node loads it (its code env, its folders, its initialization), the
description is read from its READY frame, and the pipeline is stopped. So the document is the
one a node would serve, and the command runs each endpoint's initialization once, as
`apinode run` does. An endpoint that fails to load is an error: a document that silently
describes it as "any object" would mislead CI.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..packaging.bundles import bundle_bytes, extract_bundle
from ..packaging.codeenvs import CodeEnvCache
from ..packaging.staging import StagedService
from .errors import EndpointLoadFailed
from .interpreters import codeenv_python
from .openapi import service_document
from .services import LoadedGeneration


async def offline_document(staged: StagedService, code_envs: CodeEnvCache) -> dict[str, Any]:
    """The document a node would serve for `staged`; EndpointLoadFailed for one that does not load."""
    bundle, generation_id = bundle_bytes(staged)
    with tempfile.TemporaryDirectory(prefix="apinode-openapi-") as temp:
        directory = Path(temp) / "generation"
        definition = extract_bundle(bundle, directory)
        interpreters = {e.id: codeenv_python(code_envs, e, directory) for e in definition.endpoints}
        one_pipeline = {
            e.id: replace(e.pool, floor=1, cruise=max(1, e.pool.cruise), ceil=max(1, e.pool.ceil))
            for e in definition.endpoints
        }
        generation = LoadedGeneration(definition, directory, interpreters, one_pipeline)
        try:
            failures = await generation.start()
        finally:
            await generation.close()
        if failures:
            raise EndpointLoadFailed("; ".join(failure.message for failure in failures.values()))
        descriptions = {endpoint_id: e.description for endpoint_id, e in generation.endpoints.items()}
    return service_document(definition, descriptions, definition.generation or generation_id)
