"""Pipelines on a Ray cluster (apinode.node.ray): a head and two worker nodes on loopback, one
cluster for the module (starting one costs ~15 s), nodes started with `--ray`.

A pipeline says where it runs by walking up its ancestors to its Ray node's raylet: the test
maps that pid to the worker node it started.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dataikuapi
import psutil
import pytest
import requests

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every Ray address 127.0.0.1; read at import
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
pytest.importorskip("ray")
from ray.cluster_utils import Cluster
from support import NodeProcess, eventually, make_admin_key

from apinode.packaging.bundles import write_bundle
from apinode.packaging.staging import stage_directory

WHERE = (
    "import os, time\n\n"
    "def raylet():\n"
    "    pid = os.getpid()\n"
    "    while pid > 1:\n"
    "        with open(f'/proc/{pid}/cmdline', 'rb') as f:\n"
    "            if b'raylet' in f.read().split(b'\\0')[0]:\n"
    "                return pid\n"
    "        with open(f'/proc/{pid}/stat') as f:\n"
    "            pid = int(f.read().rsplit(')', 1)[1].split()[1])\n"
    "    return None\n\n"
)
ENDPOINTS = {
    # two CPUs each, on workers of three: one per worker node
    "spread": (
        WHERE + "def spread(delay=0.0):\n    time.sleep(delay)\n    return raylet()\n",
        {"floor": 2, "ceil": 2, "cruise": 2},
        {"cpus": 2},
    ),
    # a custom resource only worker 1 has
    "pinned": (
        WHERE + "def pinned():\n    return [raylet(), os.getcwd()]\n",
        {"floor": 1, "ceil": 1, "cruise": 1},
        {"cpus": 0, "custom": {"w1": 1}},
    ),
}


def write_service(directory: Path, endpoints: dict = ENDPOINTS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    definitions = []
    for name, (code, pool, resources) in endpoints.items():
        (directory / f"{name}.py").write_text(code)
        definitions.append({"id": name, "code": f"{name}.py", "function": name, "pool": pool, "resources": resources})
    (directory / "service.json").write_text(json.dumps({"id": "onray", "endpoints": definitions}))
    return directory


@pytest.fixture(scope="module")
def cluster():
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray puts unix sockets in it
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": False,
            "temp_dir": temp,
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3},
        },
    )
    workers = [
        cluster.add_node(num_cpus=3, resources={f"w{index}": 1}, include_dashboard=False, temp_dir=temp)
        for index in range(2)
    ]
    cluster.wait_for_nodes()
    cluster.temp_dir = temp  # for nodes added later
    yield cluster, workers
    cluster.shutdown()


def raylet_pid(ray_node) -> int:
    return ray_node.all_processes["raylet"][0].process.pid


@pytest.fixture(scope="module")
def node(cluster, tmp_path_factory):
    source = write_service(tmp_path_factory.mktemp("svc") / "onray")
    node = NodeProcess("run", str(source), "--ray", cluster[0].address, ready_timeout=120)
    yield node
    node.stop()


def call(node, endpoint, body=None):
    return requests.post(f"{node.url}/public/api/v1/onray/{endpoint}/run", json=body or {}, timeout=60)


def test_pipelines_spread_over_ray_nodes_by_their_resources(node, cluster):
    _, workers = cluster
    raylets = {raylet_pid(worker): index for index, worker in enumerate(workers)}
    with ThreadPoolExecutor(2) as threads:  # two at once: both pipelines, one per worker
        responses = list(threads.map(lambda _: call(node, "spread", {"delay": 0.5}), range(2)))
    assert all(response.status_code == 200 for response in responses), [r.text for r in responses]
    seen = {raylets[response.json()["response"]] for response in responses}
    assert seen == {0, 1}  # two idle pipelines, one per worker: the pool uses both
    answers = [call(node, "pinned").json()["response"] for _ in range(5)]
    assert {raylets[raylet] for raylet, _ in answers} == {1}
    # its code came through the object store, unpacked on the Ray node, not read from the node's data dir
    assert all("/apinode-ray-bundles/" in cwd for _, cwd in answers), answers


def test_nothing_listens_beyond_loopback(node):
    """Ray's processes (all started from this one) and the node's listen on loopback only."""
    ours = {os.getpid()}
    for process in psutil.Process().children(recursive=True):
        ours.add(process.pid)
    listening = [
        connection
        for connection in psutil.net_connections("tcp")
        if connection.status == psutil.CONN_LISTEN and connection.pid in ours
    ]
    assert len({connection.pid for connection in listening}) > 3  # gcs, raylets, actors, the node
    beyond = [(connection.pid, connection.laddr) for connection in listening if not _loopback(connection.laddr.ip)]
    assert not beyond


def _loopback(address: str) -> bool:
    return ipaddress.ip_address(address.removeprefix("::ffff:")).is_loopback


def ray_actor_processes() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"TemplateHost" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_the_node_s_sigterm_leaves_no_actor_alive(cluster, tmp_path):
    source = write_service(tmp_path / "onray", {"spread": (ENDPOINTS["spread"][0], {"floor": 2}, {"cpus": 0.5})})
    before = set(ray_actor_processes())
    node = NodeProcess("run", str(source), "--ray", cluster[0].address, ready_timeout=120)
    assert call(node, "spread").status_code == 200
    assert set(ray_actor_processes()) - before
    node.process.send_signal(signal.SIGTERM)
    node.process.wait(60)
    eventually(lambda: not set(ray_actor_processes()) - before, timeout=30)


def test_a_cluster_that_cannot_be_reached_is_said_and_the_node_exits_non_zero(tmp_path):
    import socket

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    source = write_service(tmp_path / "onray")
    ran = subprocess.run(
        [sys.executable, "-m", "apinode.cli", "run", str(source), "--ray", f"127.0.0.1:{port}", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode != 0
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in ran.stderr


def generation_bundle(directory: Path, generation: str) -> Path:
    source = directory / generation
    source.mkdir(parents=True)
    (source / "which.py").write_text(
        f"import time\n\ndef which(delay=0.0):\n    time.sleep(delay)\n    return {generation!r}\n"
    )
    endpoint = {
        "id": "which",
        "code": "which.py",
        "function": "which",
        "pool": {"floor": 2, "cruise": 2, "ceil": 2},
        "resources": {"cpus": 0.25},
    }
    (source / "service.json").write_text(json.dumps({"id": "busy", "endpoints": [endpoint]}))
    bundle = directory / f"{generation}.zip"
    write_bundle(stage_directory(source), bundle, generation)
    return bundle


def test_the_admin_switch_under_load_loses_nothing_and_stops_the_old_generation_s_hosts(cluster, tmp_path):
    data_dir = tmp_path / "data"
    key = make_admin_key(data_dir)
    node = NodeProcess("serve", "--data-dir", str(data_dir), "--ray", cluster[0].address, ready_timeout=120)
    try:
        admin = dataikuapi.APINodeAdminClient(node.url, key)
        admin.create_service("busy")
        for generation in ("g1", "g2"):
            admin.service("busy").import_generation_from_archive(str(generation_bundle(tmp_path, generation)))
        admin.service("busy").switch_to_single_generation("g1")
        hosts = set(ray_actor_processes())
        stop = threading.Event()
        outcomes: list[str] = []

        def client() -> None:
            api = dataikuapi.APINodeClient(node.url, "busy")
            while not stop.is_set():
                try:
                    outcomes.append(api.run_function("which", delay=0.002)["response"])
                except Exception as error:
                    outcomes.append(f"FAILED: {error}")

        with ThreadPoolExecutor(4) as threads:
            running = [threads.submit(client) for _ in range(4)]
            try:
                eventually(lambda: len(outcomes) >= 40, timeout=30)
                for generation in ("g2", "g1", "g2"):
                    admin.service("busy").switch_to_single_generation(generation)
                    seen = len(outcomes)
                    eventually(lambda seen=seen: len(outcomes) >= seen + 40, timeout=30)
            finally:
                stop.set()
                for future in running:
                    future.result()
        assert [outcome for outcome in outcomes if outcome.startswith("FAILED")] == []
        assert outcomes[-1] == "g2"
        # g1's template hosts are stopped: as many hosts as before the switches, none of them g1's
        eventually(lambda: len(set(ray_actor_processes())) == len(hosts) and set(ray_actor_processes()) != hosts)
    finally:
        node.stop()


def metric(node, name: str, endpoint: str) -> float:
    for line in requests.get(f"{node.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") and f'endpoint="{endpoint}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} for {endpoint}")


def where_two_calls_run(node) -> set[int]:
    with ThreadPoolExecutor(2) as threads:
        responses = list(threads.map(lambda _: call(node, "spread", {"delay": 0.3}), range(2)))
    return {response.json()["response"] for response in responses if response.status_code == 200}


def test_a_ray_node_lost_under_load_fails_only_its_running_requests_and_a_node_added_is_used(node, cluster):
    """Last: it removes a worker. The lost pipeline's replacement waits for room (the other
    worker has one CPU free, the endpoint's pipelines take two), says so in the metrics, and
    lands on the node added afterwards."""
    ray_cluster, workers = cluster
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            response = call(node, "spread", {"delay": 0.05})
            answers.append((response.status_code, response.text))

    with ThreadPoolExecutor(4) as threads:
        for _ in range(4):
            threads.submit(load)
        eventually(lambda: len(answers) > 20, timeout=30)
        ray_cluster.remove_node(workers[0], allow_graceful=False)
        removed_at = len(answers)
        eventually(lambda: len(answers) > removed_at + 40, timeout=60)
        stop.set()
    failed = [(status, text) for status, text in answers if status != 200]
    assert len(failed) <= 1, failed  # one pipeline ran there: at most its one request
    assert all(status == 500 and "PipelineDied" in text for status, text in failed), failed
    eventually(lambda: metric(node, "apinode_pipelines_waiting_for_resources", "spread") == 1, timeout=30)
    assert where_two_calls_run(node) == {raylet_pid(workers[1])}  # served meanwhile, by the one left

    added = ray_cluster.add_node(num_cpus=3, include_dashboard=False, temp_dir=ray_cluster.temp_dir)
    eventually(lambda: metric(node, "apinode_pipelines_waiting_for_resources", "spread") == 0, timeout=60)
    both = {raylet_pid(workers[1]), raylet_pid(added)}
    eventually(lambda: where_two_calls_run(node) == both, timeout=30)  # once its template has loaded there
