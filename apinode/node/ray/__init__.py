"""Pipelines on a Ray cluster (`apinode run|serve ... --ray ADDRESS`, the `apinode[ray]` extra).

The node stays what it is (HTTP front, admin API, one pool per endpoint, DSS's pool rules); Ray
only places pipelines, runs their templates and watches its nodes. `connect` joins the cluster
once, before the node serves; from then on every endpoint's pipelines come from a
`RayPipelineFactory` (apinode.node.ray.factory) instead of the local one. Nothing here imports
Ray until `connect` is called: a node without `--ray` never needs it.

Why the checks around `ray.init` (measured, Ray 2.x): against an address where nothing listens
it retries for good (over 7 minutes) and delays SIGTERM meanwhile, so the GCS address is first
tried with a plain TCP connect, and `ray.init` itself is bounded by a deadline. It installs its
own SIGTERM handler: the node installs its graceful one afterwards (apinode.node.app does, on
its event loop). Each node gets a Ray namespace of its own, so two nodes sharing a cluster
never see (or lose) each other's named actors.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid

CONNECT_TIMEOUT = 30.0
"""Seconds `ray.init` may take once the GCS answers TCP (it takes 0.05-0.13 s on a healthy
cluster; a cluster that accepts but never answers would otherwise hang the node's start)."""
PROBE_TIMEOUT = 5.0  # seconds for the GCS port to accept a TCP connection

_connected = False


class ClusterUnreachable(Exception):
    """The node cannot join the Ray cluster; str() says why and what to check."""


def connected() -> bool:
    """Whether this node places its pipelines on a Ray cluster."""
    return _connected


def connect(address: str) -> None:
    """Join the cluster at `address` (`auto`, `HOST:PORT` or `ray://HOST:PORT`), or raise
    ClusterUnreachable."""
    global _connected
    try:
        import ray
    except ImportError:
        raise ClusterUnreachable("--ray needs Ray, which is not installed: pip install 'apinode[ray]'") from None
    if address != "auto":
        _probe(address)
    failure: list[BaseException] = []

    def init() -> None:
        try:
            ray.init(
                address=address,
                namespace=f"apinode-{uuid.uuid4().hex[:12]}",
                logging_level=logging.WARNING,
                configure_logging=False,
            )
        except BaseException as exc:  # reported by the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=init, name="ray-init", daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT)
    if thread.is_alive():
        raise ClusterUnreachable(
            f"the Ray cluster at {address} accepted a connection but did not answer within "
            f"{CONNECT_TIMEOUT:g} s: is it a Ray head node (`ray start --head`), of the same Ray version?"
        )
    if failure:
        raise ClusterUnreachable(f"cannot join the Ray cluster at {address}: {failure[0]}")
    _connected = True


def _probe(address: str) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnreachable(
            f"--ray {address!r}: expected auto, HOST:PORT (the head's GCS port, 6379 by default) "
            "or ray://HOST:PORT (a Ray Client server, 10001 by default)"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), PROBE_TIMEOUT).close()
    except OSError as exc:
        raise ClusterUnreachable(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}. Is the head node "
            "running (`ray start --head`) and this address reachable from here?"
        ) from None


def stop_on_exit() -> None:
    """Leave the cluster: Ray stops every actor and placement group this node made."""
    if _connected:
        import ray

        ray.shutdown()
