"""Pipelines on a Ray cluster against local ones, side by side in one run (issue 11).

- identity on 2 local pipelines and on 2 pipelines on the cluster, at c=1 and c=16 (wrk):
  the added p50 at c=1 is what the cluster costs a call. Target: at most 1 ms.
- a function sleeping 20 ms on 1, 2 and 4 cluster pipelines over two Ray nodes, one request in
  flight per pipeline: throughput should grow nearly linearly. Target: 4 pipelines >= 3.5x one.
  Under each line, the Ray node each pipeline runs on (each answers its pid and its raylet's).

The cluster is a head and two worker nodes on loopback (ray.cluster_utils), so "the network"
is the loopback device: on real machines add one round trip per call.

    python bench/bench_ray.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every Ray address 127.0.0.1; read at import
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from bench_node import closed_loop, wrk  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from support import WHERE, NodeProcess, raylet_pid  # noqa: E402

IDENTITY = "def identity(**data):\n    return data\n"
SLEEPY = "def {name}(**data):\n    time.sleep(0.02)\n    return [os.getpid(), raylet()]\n"
SLEEPERS = (1, 2, 4)


def write_service(directory: Path, with_sleepers: bool) -> Path:
    directory.mkdir(parents=True)
    (directory / "identity.py").write_text(IDENTITY)
    definitions = [
        {
            "id": "identity",
            "code": "identity.py",
            "function": "identity",
            "pool": {"floor": 2, "cruise": 2, "ceil": 2, "queue": 64},
        },
    ]
    for count in SLEEPERS if with_sleepers else ():
        name = f"sleep{count}"
        (directory / f"{name}.py").write_text(WHERE + SLEEPY.format(name=name))
        definitions.append(
            {
                "id": name,
                "code": f"{name}.py",
                "function": name,
                "pool": {"floor": count, "cruise": count, "ceil": count, "queue": 64},
                "resources": {"cpus": 0.5},
            }
        )
    (directory / "service.json").write_text(json.dumps({"id": "bench", "endpoints": definitions}))
    return directory


def start_cluster() -> Cluster:
    temp = tempfile.mkdtemp(prefix="rb", dir="/tmp")  # short: Ray puts unix sockets in it
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, "temp_dir": temp}
    )
    for _ in range(2):
        cluster.add_node(num_cpus=4, include_dashboard=False, temp_dir=temp)
    cluster.wait_for_nodes()
    return cluster


def placement(url: str, path: str, count: int, names: dict[int, str]) -> str:
    """Where an endpoint's `count` pipelines run, as "w0: 2, w1: 2": from rounds of `count`
    concurrent requests, which take one idle pipeline each."""
    seen: dict[int, str] = {}
    with ThreadPoolExecutor(count) as threads:
        for _ in range(5):
            for pid, raylet in threads.map(
                lambda _: requests.post(url + path, json={}, timeout=30).json()["response"], range(count)
            ):
                seen[pid] = names.get(raylet, f"raylet {raylet}")
    return ", ".join(f"{name}: {number}" for name, number in sorted(Counter(seen.values()).items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (default 5)")
    seconds = parser.parse_args().seconds
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    with contextlib.ExitStack() as started:  # whatever started is stopped, even if the next start fails
        cluster = start_cluster()
        started.callback(cluster.shutdown)
        local = started.enter_context(NodeProcess("run", str(write_service(work / "local", False)), ready_timeout=120))
        onray = write_service(work / "onray", True)
        remote = started.enter_context(NodeProcess("run", str(onray), "--ray", cluster.address, ready_timeout=300))
        measure(cluster, local, remote, seconds)


def measure(cluster: Cluster, local: NodeProcess, remote: NodeProcess, seconds: float) -> None:
    """Print the table: the same endpoints on `local` and on `remote`, whose pipelines are on `cluster`."""
    print("identity, 2 pipelines        req/s     p50 ms   p99 ms")
    p50 = {}
    for where, node in (("local", local), ("cluster", remote)):
        for connections in (1, 16):
            wrk(node.url, connections, 1, "/public/api/v1/bench/identity/run")  # warm-up
            rate, median, p99 = wrk(node.url, connections, seconds, "/public/api/v1/bench/identity/run")
            p50[where, connections] = median
            print(f"  {where:8} c={connections:<3}          {rate:9.0f} {median:8.3f} {p99:8.3f}")
    print(f"added p50 at c=1 on the cluster: {p50['cluster', 1] - p50['local', 1]:.3f} ms (target <= 1 ms)")
    print("sleep 20 ms, cluster pipelines  req/s   x one")
    rates = {}
    names = {
        raylet_pid(worker): f"w{index}" for index, worker in enumerate(sorted(cluster.worker_nodes, key=raylet_pid))
    }
    for count in SLEEPERS:
        path = f"/public/api/v1/bench/sleep{count}/run"
        rates[count], _, _ = closed_loop(remote.url, count, seconds, path)
        print(f"  {count} pipeline(s)                 {rates[count]:7.1f} {rates[count] / rates[1]:6.2f}")
        print(f"    on Ray nodes {placement(remote.url, path, count, names)}")
    print(f"4 pipelines / 1: {rates[4] / rates[1]:.2f}x (target >= 3.5x)")


if __name__ == "__main__":
    main()
