"""`%api_deploy`: upload a service's bundle to a node and make it the active generation.

Three calls to the node's admin API, with the admin key as HTTP Basic user name:

    POST {url}/admin/api/services/                                {"serviceId": id}  (409: exists)
    POST {url}/admin/api/services/<id>/generations/actions/upload  the zip -> {"generation": g}
                                                                   (409: that generation exists)
    POST {url}/admin/api/services/<id>/actions/switchTo/<g>

Blocking, stdlib only (urllib). A failed call stops the sequence with a one-line NodeError
holding the node's own `message`.
"""

from __future__ import annotations

import json

from ..packaging.bundles import bundle_bytes
from ..playback import NodeError, decode_answer, describe_error, post
from .kernel_endpoints import KernelEndpoints, Shipped

UPLOAD_TIMEOUT = 300.0  # a bundle with its data folders can take a while to send


def deploy_bundle(url: str, key: str, service: str, bundle: bytes, generation: str | None = None) -> Shipped:
    """Create the service if needed, upload `bundle` and switch to it. Given the bundle's
    `generation`, deploying the same bundle again switches to the generation already there."""
    services = f"{url.rstrip('/')}/admin/api/services"

    def call(
        what: str, path: str, body: bytes, content_type: str = "application/json", conflict_ok: bool = False
    ) -> object:
        status, answer = post(f"{services}{path}", body, key, content_type, UPLOAD_TIMEOUT)
        decoded = decode_answer(answer) if answer.strip() else None
        if not (200 <= status < 300 or (status == 409 and conflict_ok)):
            raise NodeError(f"{what} on {url} failed (HTTP {status}): {describe_error(decoded)}")
        return decoded if status != 409 else None

    # 409 Conflict: the service is there already, or this very generation (same content, same id).
    call(f"creating service {service!r}", "/", json.dumps({"serviceId": service}).encode(), conflict_ok=True)
    uploaded = call(
        f"uploading the bundle of {service!r}",
        f"/{service}/generations/actions/upload",
        bundle,
        "application/zip",
        conflict_ok=generation is not None,
    )
    if isinstance(uploaded, dict) and isinstance(uploaded.get("generation"), str):
        generation = uploaded["generation"]
    if generation is None:
        raise NodeError(
            f"uploading the bundle of {service!r} to {url}: the node did not say "
            f"which generation it made (answer: {uploaded!r})"
        )
    call(f"switching {service!r} to generation {generation}", f"/{service}/actions/switchTo/{generation}", b"")
    return Shipped(service, generation, "deployed, active on", url)


def deploy_service(registry: KernelEndpoints, service: str, url: str, key: str) -> Shipped:
    """Bundle a registered service (as `%api_export` would) and deploy it on the node at `url`."""
    return deploy_bundle(url, key, service, *bundle_bytes(registry.stage(service)))
