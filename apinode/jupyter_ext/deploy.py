"""`%api_deploy`: upload a service's bundle to a node and make it the active generation.

Three calls to the node's admin API (apinode.client), with the admin key as HTTP Basic user name:

    POST {url}/admin/api/services/                                {"serviceId": id}  (409: exists)
    POST {url}/admin/api/services/<id>/generations/actions/upload  the zip -> {"generation": g}
                                                                   (409: that generation exists)
    POST {url}/admin/api/services/<id>/actions/switchTo/<g>

Blocking. A failed call stops the sequence with a one-line NodeError holding the node's own
`message`.
"""

from __future__ import annotations

from collections.abc import Callable

from ..client import NodeClient, NodeError
from ..packaging.bundles import bundle_bytes
from .kernel_endpoints import KernelEndpoints, Shipped


def no_step(_step: str) -> None:
    """An `on_step` for a caller that shows no progress."""


def deploy_bundle(
    url: str,
    key: str,
    service: str,
    bundle: bytes,
    generation: str | None = None,
    on_step: Callable[[str], None] = no_step,
) -> Shipped:
    """Create the service if needed, upload `bundle` and switch to it. Given the bundle's
    `generation`, deploying the same bundle again switches to the generation already there.
    `on_step` hears of the upload and of the switch (the long one: code envs build then)."""
    node = NodeClient(url, key)
    on_step(f"uploading the bundle of {service} ({len(bundle) / 1000:.0f} kB)")
    # 409 Conflict: the service is there already, or this very generation (same content, same id).
    try:
        node.create_service(service, context=f"creating service {service!r} on {url} failed")
    except NodeError as error:
        if error.status != 409:
            raise
    try:
        generation = node.upload(service, bundle, context=f"uploading the bundle of {service!r} on {url} failed")
    except NodeError as error:
        if error.status != 409 or generation is None:
            raise
    on_step(f"switching {service} to generation {generation}: building its new code envs, loading its endpoints")
    node.switch_to(service, generation, context=f"switching {service!r} to generation {generation} on {url} failed")
    return Shipped(service, generation, "deployed, active on", url)


def deploy_service(registry: KernelEndpoints, service: str, url: str, key: str) -> Shipped:
    """Bundle a registered service (as `%api_export` would) and deploy it on the node at `url`."""
    return deploy_bundle(url, key, service, *bundle_bytes(registry.stage(service)))
