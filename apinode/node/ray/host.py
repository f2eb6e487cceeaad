"""The Ray side of an endpoint: one `TemplateHost` actor per (endpoint generation, Ray node).

It runs the endpoint's template (apinode.node.template, the same code as on a local node) on
its Ray node, and forks pipelines from it on request. A pipeline's channel is a TCP connection
from the node, not a socketpair: Ray actor calls cost 1.3 ms each (p50, measured), a direct
socket 0.03 ms on loopback, so calls never go through Ray.

Opening a pipeline takes two calls: `listen` opens a listener on this Ray node's address (an
ephemeral port, never 0.0.0.0) and answers (host, port); `fork` accepts one connection on it,
proves it comes from the node that holds the pipeline's key (a nonce, answered with
HMAC-SHA256 of the key, `answer`), closes the listener and hands the connection to a forked
pipeline as its channel. Anyone else reaching the port is dropped.

No shared file system is needed: the node puts the generation's directory, as a tar, in Ray's
object store once; a host fetches it only when its Ray node does not have it yet (by digest),
so it crosses the network once per Ray node, not once per pipeline. A bundled wheelhouse is in
that directory, so it travels the same way. An endpoint's code env is built here, on the Ray
node, by the code a local node builds it with (apinode.node.interpreters), in this Ray node's
own cache (`ray_node_cache`), before the template starts; a build that fails fails the start
with EndpointLoadFailed, as code that does not load would.

The host also reads its pipelines' resident memory for the node (`memory`), which cannot read
another machine's /proc: that is how `maxMemoryMb` applies on the cluster.

The actor reserves nothing (`num_cpus=0`): a pipeline's resources are held by its placement
group, which the node created and owns. `lifeline` never returns: the node awaits it, and its
failure (the actor died, its Ray node was lost) is how the node learns that every pipeline here
is gone, even when a vanished machine sends no FIN.

Concurrency model: an async actor; everything runs on its one event-loop thread, which lives as
long as the actor (the template is started from it), except a code env's build, which blocks
(minutes, the first time) and so runs on a worker thread; hosts building the same env on one
Ray node wait for each other on the cache's file lock. When the actor ends, the template's
control socket closes and it ends its group; each pipeline ends when the node closes its
connection, or the node itself goes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import io
import os
import shutil
import socket
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from ...packaging.codeenvs import CodeEnvError
from ...packaging.definitions import EndpointDef
from ..errors import EndpointLoadFailed
from ..interpreters import codeenv_python, ray_node_cache
from ..process import PipelineSpec, resident_mb
from ..template import Template

BUNDLES = Path(tempfile.gettempdir()) / "apinode-ray-bundles"
"""Where generations' files are unpacked on a Ray node, one directory per content digest."""
NONCE_BYTES = 16
ACCEPT_TIMEOUT = 30.0  # seconds for the node to connect to a pipeline's listener (one round trip)


def answer(key: bytes, nonce: bytes) -> bytes:
    """What proves knowledge of `key` for this nonce."""
    return hmac.new(key, nonce, hashlib.sha256).digest()


class TemplateHost:
    def __init__(self) -> None:
        self._template: Template | None = None
        self._listeners: dict[int, socket.socket] = {}
        self._code_envs = ray_node_cache()

    async def start(self, spec: PipelineSpec, endpoint: EndpointDef, digest: str, archive: list[Any]) -> bytes:
        """Start the template and load the endpoint from its generation's files (`archive`, a
        tar in the object store, fetched only if this Ray node lacks `digest`), with its code
        env, built here first if needed; READY's payload (EndpointLoadFailed)."""
        assert spec.cwd is not None
        here = await _unpacked(digest, archive[0])

        def say(line: str) -> None:  # the actor's output, which Ray forwards to the node
            print(f"{spec.name}: code env: {line}", file=sys.stderr, flush=True)

        try:
            python, env = await asyncio.to_thread(codeenv_python, self._code_envs, endpoint, here, say)
        except CodeEnvError as error:
            raise EndpointLoadFailed(f"{spec.name}: on Ray node {self.node_name()}: {error}") from None
        spec = dataclasses.replace(
            spec,
            code=here / spec.code.relative_to(spec.cwd),
            folders=tuple(here / folder.relative_to(spec.cwd) for folder in spec.folders),
            cwd=here,
            python=python,
            env=env,
        )
        self._template = await Template.start(spec)
        return bytes(self._template.ready_payload)

    def node_address(self) -> str:
        import ray

        return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]

    def node_name(self) -> str:
        """This Ray node as the node's logs name it: its id's first digits, and its address."""
        import ray

        return f"{ray.get_runtime_context().get_node_id()[:8]} ({self.node_address()})"

    def memory(self, pids: list[int]) -> list[float]:
        """The resident memory of these pipelines (MiB; 0 for one that has ended)."""
        return [resident_mb(pid) for pid in pids]

    async def listen(self) -> tuple[str, int]:
        host = self.node_address()
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        listener.bind((host, 0))
        listener.listen(1)
        listener.setblocking(False)
        port = int(listener.getsockname()[1])
        self._listeners[port] = listener
        return host, port

    async def fork(self, port: int, key: bytes, environment: dict[str, str]) -> int:
        """Accept the node's connection on `port`, check it, fork a pipeline onto it, with
        `environment` set in it: its pid."""
        assert self._template is not None, "start() first"
        listener = self._listeners.pop(port)
        try:
            connection = await asyncio.wait_for(self._accept(listener, key), ACCEPT_TIMEOUT)
        finally:
            listener.close()
        output = os.dup(2)  # what the pipeline prints: this actor's log, which Ray forwards to the node
        try:
            return await self._template.fork_onto(connection.fileno(), output, environment)
        finally:
            connection.close()
            os.close(output)

    async def _accept(self, listener: socket.socket, key: bytes) -> socket.socket:
        loop = asyncio.get_running_loop()
        while True:
            connection, _ = await loop.sock_accept(listener)
            nonce = os.urandom(NONCE_BYTES)
            try:
                await loop.sock_sendall(connection, nonce)
                proof = await asyncio.wait_for(_receive(loop, connection, hashlib.sha256().digest_size), 5.0)
            except (OSError, EOFError, asyncio.TimeoutError):
                connection.close()
                continue
            if hmac.compare_digest(proof, answer(key, nonce)):
                connection.setblocking(True)
                return connection
            connection.close()

    async def lifeline(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None:
        if self._template is not None:
            await self._template.stop()
        self._code_envs.close()


def visible_accelerators() -> dict[str, str]:
    """The variables through which Ray shows a process the accelerators it holds
    (CUDA_VISIBLE_DEVICES for GPUs, and the like for other kinds), as Ray set them for the task
    that calls this. Run as a task in a pipeline's placement bundle, it tells the ids of that
    bundle's accelerators, which the pipeline's fork then gets (Ray sets none for a process it
    did not start)."""
    import ray
    from ray._private.accelerators import get_accelerator_manager_for_resource  # Ray's own mapping

    found = {}
    for resource, ids in ray.get_runtime_context().get_accelerator_ids().items():
        manager = get_accelerator_manager_for_resource(resource)
        variable = manager.get_visible_accelerator_ids_env_var() if ids and manager is not None else None
        if variable is not None and variable in os.environ:
            found[variable] = os.environ[variable]
    return found


async def _unpacked(digest: str, archive: Any) -> Path:
    """The generation's files on this Ray node, under BUNDLES/digest: fetched and unpacked by
    the first host that needs them (a rename makes them appear whole), found by the others."""
    target = BUNDLES / digest
    if target.is_dir():
        return target
    data = await archive
    BUNDLES.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=BUNDLES, prefix=".unpacking-"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(staging, filter="data")
    try:
        staging.rename(target)
    except OSError:  # another host unpacked it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return target


async def _receive(loop: asyncio.AbstractEventLoop, connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(connection, size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data
