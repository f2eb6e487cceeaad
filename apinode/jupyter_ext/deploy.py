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

from ..client import NodeClient, NodeError
from ..packaging.bundles import bundle_bytes
from .kernel_endpoints import KernelEndpoints, Shipped


def deploy_bundle(url: str, key: str, service: str, bundle: bytes, generation: str | None = None) -> Shipped:
    """Create the service if needed, upload `bundle` and switch to it. Given the bundle's
    `generation`, deploying the same bundle again switches to the generation already there."""
    node = NodeClient(url, key)
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
    node.switch_to(service, generation, context=f"switching {service!r} to generation {generation} on {url} failed")
    return Shipped(service, generation, "deployed, active on", url)


def deploy_service(registry: KernelEndpoints, service: str, url: str, key: str) -> Shipped:
    """Bundle a registered service (as `%api_export` would) and deploy it on the node at `url`."""
    return deploy_bundle(url, key, service, *bundle_bytes(registry.stage(service)))
