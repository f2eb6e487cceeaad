"""Pipelines on a Ray cluster, behind the same `Pipeline` interface as local ones.

A pipeline is: a placement group of one bundle (the endpoint's `resources`: what it reserves;
Ray picks the node), a fork of the endpoint's template on that node (apinode.node.ray.host),
and one authenticated TCP connection from the node to it, which carries the same frames as a
local pipeline's socketpair. The pool does not know the difference.

Adding a pipeline: reserve the bundle (5-8 ms once resources are free; until then it waits, and
`waiting` says how many do), start the endpoint's `TemplateHost` on that Ray node if it has
none (its code env is built there if needed, and the initialization runs, once per Ray node),
learn the ids of the accelerators the bundle holds if it holds any (a Ray task in the bundle:
Ray tells a process its GPUs only when it starts that process, and a fork is not one of
those), fork (a few ms) with those ids in its environment. Stopping one closes its
connection (the pipeline ends at its next read, its watchdog ends its group) and removes its
placement group. A pipeline ends for the pool when its connection closes, or when its host's
`lifeline` fails: the actor died or its Ray node was lost; the request it was running fails
with PipelineDied, and the pool starts a replacement wherever Ray finds room.

`maxMemoryMb`: the node cannot read a Ray node's /proc, so once the pool first asks for a
pipeline's memory, its host is asked for the memory of all its pipelines every
MEMORY_SAMPLE_PERIOD seconds; the pool's check after each request reads the last figure. A
pipeline that crosses the limit is thus recycled after the first request it ends at least one
period later, where a local pipeline is recycled after the request that crossed it.

Concurrency model: on the node's event loop; Ray calls are awaited, never blocking `ray.get`.
Concurrent starts on one Ray node share one template start.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import socket
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import ray
from ray._private.accelerators import get_all_accelerator_resource_names
from ray.exceptions import RayError, RayTaskError
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from ...packaging.definitions import EndpointDef, Resources
from ..errors import EndpointLoadFailed, PipelineDied
from ..process import Channel, ItemSink, PipelineSpec, ProcessDied, Reply
from ..stats import PipelineCounts
from ..template import FORK_READY_TIMEOUT
from .host import NONCE_BYTES, TemplateHost, answer, visible_accelerators

log = logging.getLogger("apinode.pool")
KEY_BYTES = 32
MEMORY_SAMPLE_PERIOD = 1.0
PLACEMENT_POLL = 0.2  # seconds between two looks at a placement that is not done yet
"""Seconds between two readings of a Ray node's pipelines' memory (one Ray call per host, about
1 ms of the node's time), once the endpoint has a maxMemoryMb: how late a pipeline over it may
be recycled."""
LEAST_CPU = 0.0001  # Ray's resource granularity
ACCELERATORS = frozenset(get_all_accelerator_resource_names())  # "GPU", "neuron_cores", "TPU"...
_RemoteHost = ray.remote(TemplateHost)
_visible_accelerators = ray.remote(visible_accelerators)


class _WatchedChannel(Channel):
    """A channel that says when its connection is gone."""

    on_lost: Callable[[], None] | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.on_lost is not None:
            self.on_lost()


class RayPipeline:
    """One pipeline on a Ray node, as the pool sees it."""

    def __init__(self, name: str, pid: int, group: PlacementGroup, channel: _WatchedChannel, host: _Host) -> None:
        self.name = name
        self.pid = pid
        self.label = f"{name} pid {pid} on Ray node {host.node_id[:8]}"
        self._host = host
        self._group: PlacementGroup | None = group
        self._channel = channel
        self._on_exit: Callable[[RayPipeline], None] | None = None
        self._ended = False
        channel.on_lost = self._lost

    def __repr__(self) -> str:
        return f"<RayPipeline {self.label}>"

    async def call(self, body: bytes, on_item: ItemSink | None = None) -> Reply:
        """As a local pipeline's call (Channel.call), streamed calls included."""
        try:
            return await self._channel.call(body, on_item)
        except ProcessDied as exc:
            raise PipelineDied(f"{self.name}: the pipeline died while handling the request") from exc

    async def stop(self) -> None:
        self._channel.close()
        self._release()

    async def kill(self) -> None:
        """Close its connection: the pipeline's watchdog ends its group even while user code runs."""
        await self.stop()

    def memory_mb(self) -> float:
        """Its resident memory as its host last read it (0 until the first reading)."""
        return self._host.memory_of(self.pid)

    def set_exit_callback(self, callback: Callable[[RayPipeline], None]) -> None:
        self._on_exit = callback
        if self._ended:  # its connection closed before the pool took it
            callback(self)

    def lost(self) -> None:
        """Its Ray node or host is gone: end it as if its connection had closed."""
        self._channel.close()

    def _lost(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._host.pipelines.discard(self)
        self._release()
        if self._on_exit is not None:
            self._on_exit(self)

    def _release(self) -> None:
        group, self._group = self._group, None
        if group is not None:
            remove_placement_group(group)


class _Host:
    """The node's handle on one TemplateHost: the actor, and the pipelines forked there."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.actor: Any = _RemoteHost.options(
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote()
        self.pipelines: set[RayPipeline] = set()
        self.ready_payload = b""
        self.gone = False
        self._lifeline: asyncio.Task[None] | None = None
        self._memory: dict[int, float] = {}
        self._sampling: asyncio.Task[None] | None = None

    async def start(self, spec: PipelineSpec, endpoint: EndpointDef, archive: tuple[str, list[Any]]) -> None:
        self.ready_payload = await _remote(self.actor.start.remote(spec, endpoint, *archive))
        self._lifeline = asyncio.ensure_future(self._watch())

    def memory_of(self, pid: int) -> float:
        """A pipeline's memory as last read (MiB); the first call starts the readings."""
        if self._sampling is None and not self.gone:
            self._sampling = asyncio.ensure_future(self._sample())
        return self._memory.get(pid, 0.0)

    async def _sample(self) -> None:
        while not self.gone:
            pids = [pipeline.pid for pipeline in self.pipelines]
            if pids:
                try:
                    self._memory = dict(zip(pids, await self.actor.memory.remote(pids)))
                except RayError:
                    return  # the host is gone: its lifeline says so
            await asyncio.sleep(MEMORY_SAMPLE_PERIOD)

    async def _watch(self) -> None:
        try:
            await self.actor.lifeline.remote()
        except RayError as exc:
            if not self.gone:
                log.warning("the template host on Ray node %s is gone: %s", self.node_id[:8], type(exc).__name__)
        self.gone = True
        for pipeline in list(self.pipelines):
            pipeline.lost()

    async def fork(self, name: str, group: PlacementGroup, environment: dict[str, str]) -> RayPipeline:
        host, port = await _remote(self.actor.listen.remote())
        key = os.urandom(KEY_BYTES)
        forked = self.actor.fork.remote(port, key, environment)  # it gives up after ACCEPT_TIMEOUT if we never connect
        sock = await _connect(host, port, key)
        pid = await _remote(forked)
        _, channel = await asyncio.get_running_loop().create_connection(_WatchedChannel, sock=sock)
        assert isinstance(channel, _WatchedChannel)
        pipeline = RayPipeline(name, pid, group, channel, self)
        try:
            await asyncio.wait_for(channel.expect(), FORK_READY_TIMEOUT)
        except (ProcessDied, asyncio.TimeoutError):
            await pipeline.kill()
            raise EndpointLoadFailed(f"{pipeline.label}: forked, it did not start") from None
        self.pipelines.add(pipeline)
        return pipeline

    async def stop(self) -> None:
        self.gone = True
        for task in (self._lifeline, self._sampling):
            if task is not None:
                task.cancel()
        ray.kill(self.actor)


async def _connect(host: str, port: int, key: bytes) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (host, port))
        nonce = b""
        while len(nonce) < NONCE_BYTES:
            chunk = await loop.sock_recv(sock, NONCE_BYTES - len(nonce))
            if not chunk:
                raise ConnectionError("the pipeline's listener closed")
            nonce += chunk
        await loop.sock_sendall(sock, answer(key, nonce))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s", task.exception())


async def _remote(ref: Any) -> Any:
    """Await a Ray call; an error raised by our own code there comes back as itself."""
    try:
        return await ref
    except RayTaskError as exc:
        if isinstance(exc.cause, EndpointLoadFailed):
            raise exc.cause from None
        raise


def _tar(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(directory, arcname=".")
    return buffer.getvalue()


def _lacks_resources(group: PlacementGroup) -> bool:
    """Whether Ray holds the group back for want of room (not merely while placing it)."""
    return placement_group_table(group)["stats"]["scheduling_state"] in ("NO_RESOURCES", "INFEASIBLE")


def bundle(resources: Resources) -> dict[str, float]:
    """What one pipeline reserves, in Ray's names (zero amounts left out: Ray refuses them); the
    least CPU Ray counts when that leaves nothing (Ray refuses an empty bundle too)."""
    reserved = {"CPU": resources.cpus, "GPU": resources.gpus, "memory": float(resources.memory_mb << 20)}
    reserved.update(resources.custom)
    return {name: amount for name, amount in reserved.items() if amount} or {"CPU": LEAST_CPU}


async def accelerator_environment(group: PlacementGroup, reserved: dict[str, float]) -> dict[str, str]:
    """The variables that show a pipeline the accelerators of its bundle (CUDA_VISIBLE_DEVICES
    for GPUs...), from a task holding them in the bundle; none when it reserves none."""
    accelerators = {name: amount for name, amount in reserved.items() if name in ACCELERATORS}
    if not accelerators:
        return {}
    probe = _visible_accelerators.options(
        scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0),
        num_cpus=0,
        num_gpus=accelerators.pop("GPU", 0),
        resources=accelerators,
    )
    found: dict[str, str] = await probe.remote()
    return found


class RayPipelineFactory:
    """Makes an endpoint's pipelines on the cluster; the Endpoint uses it like PipelineFactory."""

    start = "fork"
    fallback: str | None = None

    def __init__(self, spec: PipelineSpec, counts: PipelineCounts, endpoint: EndpointDef) -> None:
        """`spec`'s interpreter is chosen on each Ray node (`endpoint`'s code env, built there)."""
        self.spec = spec
        self.counts = counts
        self.endpoint = endpoint
        self.bundle = bundle(endpoint.resources)
        self.ready_payload: bytes | None = None
        self._starting = 0
        self._archived: tuple[str, list[Any]] | None = None
        self._changed = asyncio.Event()  # a start began, ended or got its resources
        self._hosts: dict[str, asyncio.Future[_Host]] = {}
        self._groups: set[PlacementGroup] = set()

    async def __call__(self) -> RayPipeline:
        group = placement_group([self.bundle])
        self._groups.add(group)
        self._starting += 1
        try:
            await self._placed(group)
            node_id = placement_group_table(group)["bundles_to_node_id"][0]
            host = await self._host_on(node_id)
            environment = await accelerator_environment(group, self.bundle)
            pipeline = await host.fork(self.spec.name, group, environment)
        except BaseException:
            remove_placement_group(group)
            raise
        finally:
            self._groups.discard(group)
            self._starting -= 1
            self._changed.set()
        self.counts.forks += 1
        return pipeline

    async def _placed(self, group: PlacementGroup) -> None:
        """Await the group's placement. It counts as waiting for resources only while Ray says
        no node has room for it: a placement merely under way (5-8 ms, longer on a busy head)
        is not, or a switch would move traffic to a generation before its pipelines exist."""
        ready = asyncio.ensure_future(group.ready())
        waiting = False
        try:
            while not (await asyncio.wait({ready}, timeout=PLACEMENT_POLL))[0]:
                lacks = await asyncio.to_thread(_lacks_resources, group)
                if lacks != waiting:
                    waiting = lacks
                    self._count_waiting(+1 if waiting else -1)
            ready.result()
        finally:
            ready.cancel()
            if waiting:
                self._count_waiting(-1)

    def _count_waiting(self, change: int) -> None:
        self.counts.waiting_for_resources += change
        self._changed.set()

    async def until_placed(self, starting: Awaitable[None]) -> None:
        """Await `starting` (the pool's start) until it is done, or until every start still under
        way is waiting for resources: that one goes on in the background."""
        task = asyncio.ensure_future(starting)
        while not task.done():
            if self._starting and self._starting == self.counts.waiting_for_resources:
                log.warning(
                    "%s: %d pipeline(s) wait for the Ray cluster to have %s free; serving without them meanwhile",
                    self.spec.name,
                    self._starting,
                    self.bundle,
                )
                task.add_done_callback(_retrieve)
                return
            self._changed.clear()
            changed = asyncio.ensure_future(self._changed.wait())
            await asyncio.wait({task, changed}, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
        task.result()

    async def _host_on(self, node_id: str) -> _Host:
        started = self._hosts.get(node_id)
        if started is not None and started.done() and (started.exception() or started.result().gone):
            started = None
        if started is None:
            started = asyncio.ensure_future(self._start_host(node_id))
            self._hosts[node_id] = started
        return await asyncio.shield(started)

    async def _start_host(self, node_id: str) -> _Host:
        host = _Host(node_id)
        try:
            await host.start(self.spec, self.endpoint, await self._archive())
        except BaseException:
            await host.stop()
            raise
        if self.ready_payload is None:
            self.ready_payload = host.ready_payload
        return host

    async def _archive(self) -> tuple[str, list[Any]]:
        """(digest, [ObjectRef]) of the generation's directory as a tar, put once in the object
        store (in a list, so that a host fetches it only if it needs it)."""
        if self._archived is None:
            assert self.spec.cwd is not None
            data = await asyncio.to_thread(_tar, self.spec.cwd)
            self._archived = (hashlib.sha256(data).hexdigest(), [ray.put(data)])
        return self._archived

    async def close(self) -> None:
        """Stop the template hosts and give back what is reserved, once the pool has stopped the pipelines."""
        for group in self._groups:
            remove_placement_group(group)
        starts = list(self._hosts.values())
        self._hosts.clear()
        for host in await asyncio.gather(*starts, return_exceptions=True):
            if isinstance(host, _Host):
                await host.stop()
