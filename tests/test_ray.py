"""Pipelines on a Ray cluster (apinode.node.ray): a head and two worker nodes on loopback, one
cluster for the module (starting one costs ~15 s), nodes started with `--ray`.

A pipeline says where it runs by walking up its ancestors to its Ray node's raylet: the test
maps that pid to the worker node it started. Each worker node has a code env cache of its own
($APINODE_RAY_CODE_ENVS, set where it starts), so that a test can tell which one built an env
although they share this machine's disk; worker 1 declares two GPUs (none is needed: Ray only
counts them).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import zipfile
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
from support import WHERE, NodeProcess, eventually, free_port, make_admin_key, raylet_pid

from apinode.packaging.bundles import write_bundle
from apinode.packaging.staging import stage_directory

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
    # one GPU each, on worker 1 of two GPUs
    "gpu": (
        "import os, time\n\ndef gpu(delay=0.0):\n"
        "    time.sleep(delay)\n    return os.environ.get('CUDA_VISIBLE_DEVICES')\n",
        {"floor": 2, "ceil": 2, "cruise": 2},
        {"cpus": 0, "gpus": 1},
    ),
    # keeps what it is asked to allocate, and says which pipeline it is
    "grow": (
        "import os\n\nkept = []\n\ndef grow(mb=0):\n    kept.append(b'x' * (mb << 20))\n    return os.getpid()\n",
        {"floor": 1, "ceil": 1, "cruise": 1, "maxMemoryMb": 100},
        {"cpus": 0},
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
    cluster.temp_dir = temp
    workers = [
        add_worker(cluster, f"w{index}", num_cpus=3, num_gpus=2 * index, resources={f"w{index}": 1})
        for index in range(2)
    ]
    cluster.wait_for_nodes()
    yield cluster, workers
    cluster.shutdown()


def add_worker(cluster, name: str, **resources):
    """A worker node whose code env cache is <temp>/envs-<name> (its processes inherit this
    process's environment as it is when the node starts)."""
    saved = os.environ.get("APINODE_RAY_CODE_ENVS")
    os.environ["APINODE_RAY_CODE_ENVS"] = str(ray_env_cache(cluster, name))
    try:
        return cluster.add_node(include_dashboard=False, temp_dir=cluster.temp_dir, **resources)
    finally:
        if saved is None:
            del os.environ["APINODE_RAY_CODE_ENVS"]
        else:
            os.environ["APINODE_RAY_CODE_ENVS"] = saved


def ray_env_cache(cluster, name: str) -> Path:
    return Path(cluster.temp_dir) / f"envs-{name}"


@pytest.fixture(scope="module")
def node(cluster, tmp_path_factory):
    source = write_service(tmp_path_factory.mktemp("svc") / "onray")
    node = NodeProcess("run", str(source), "--ray", cluster[0].address, ready_timeout=120)
    yield node
    node.stop()


def call(node, endpoint, body=None, service="onray"):
    return requests.post(f"{node.url}/public/api/v1/{service}/{endpoint}/run", json=body or {}, timeout=60)


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


def test_each_pipeline_sees_the_gpus_of_its_own_reservation(node):
    """Two pipelines of a one-GPU endpoint on a Ray node of two GPUs: forks of one template,
    each with the GPU id Ray gave its placement bundle."""
    with ThreadPoolExecutor(2) as threads:  # two at once: both pipelines
        responses = list(threads.map(lambda _: call(node, "gpu", {"delay": 0.5}), range(2)))
    assert sorted(response.json()["response"] for response in responses) == ["0", "1"], [r.text for r in responses]


def test_max_memory_mb_recycles_a_pipeline_on_the_cluster(node):
    grown = call(node, "grow", {"mb": 150})
    assert grown.status_code == 200, grown.text
    first = grown.json()["response"]  # now over its 100 MiB limit
    # its host reads its memory every second: one of the next requests is its last
    eventually(lambda: call(node, "grow").json()["response"] != first, timeout=30, interval=0.2)
    assert metric(node, "apinode_pipelines_recycled_total", "grow", 'reason="memory"') == 1


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


def ray_actor_processes() -> set[int]:
    """The template hosts of this test's cluster (not those of another test run on the machine)."""
    found = set()
    for process in psutil.Process().children(recursive=True):
        try:
            if "TemplateHost" in " ".join(process.cmdline()):
                found.add(process.pid)
        except psutil.Error:
            pass
    return found


def test_the_node_s_sigterm_leaves_no_actor_alive(cluster, tmp_path):
    source = write_service(tmp_path / "onray", {"spread": (ENDPOINTS["spread"][0], {"floor": 2}, {"cpus": 0.5})})
    before = ray_actor_processes()
    node = NodeProcess("run", str(source), "--ray", cluster[0].address, ready_timeout=120)
    assert call(node, "spread").status_code == 200
    assert ray_actor_processes() - before
    node.process.send_signal(signal.SIGTERM)
    node.process.wait(60)
    eventually(lambda: not ray_actor_processes() - before, timeout=30)


def tiny_wheel(directory: Path) -> Path:
    """A wheel of one module, written as pip writes one (no build backend, no index needed)."""
    files = {
        "apinode_ray_tiny.py": b'VERSION = "0.1"\n',
        "apinode_ray_tiny-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: apinode-ray-tiny\nVersion: 0.1\n",
        "apinode_ray_tiny-0.1.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: apinode-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    files["apinode_ray_tiny-0.1.dist-info/RECORD"] = "\n".join(
        [*record, "apinode_ray_tiny-0.1.dist-info/RECORD,,"]
    ).encode()
    directory.mkdir(parents=True)
    wheel = directory / "apinode_ray_tiny-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


ENVIRONMENT = (
    WHERE + "import sys\nimport apinode_ray_tiny\n\n"
    "def inenv(delay=0.0):\n    time.sleep(delay)\n    return [raylet(), sys.prefix, apinode_ray_tiny.VERSION]\n"
)


def test_a_code_env_is_built_offline_on_each_ray_node_that_runs_the_endpoint(cluster, tmp_path):
    """From the service's wheelhouse, which reaches each Ray node with the generation's files;
    in that Ray node's own cache, none on the node's. An env that cannot be built fails its
    endpoint only, saying on which Ray node and why."""
    _, workers = cluster
    raylets = {raylet_pid(worker): f"w{index}" for index, worker in enumerate(workers)}
    source = tmp_path / "envs"
    tiny_wheel(source / "wheelhouse")
    (source / "inenv.py").write_text(ENVIRONMENT)
    (source / "service.json").write_text(
        json.dumps(
            {
                "id": "envs",
                "endpoints": [
                    {
                        "id": "inenv",
                        "code": "inenv.py",
                        "function": "inenv",
                        "pool": {"floor": 2, "ceil": 2, "cruise": 2},
                        "resources": {"cpus": 1},  # with the module's node: one per worker node
                        "codeEnv": {"requirements": ["apinode-ray-tiny==0.1"], "wheelhouse": "wheelhouse"},
                    },
                    {
                        "id": "missing",
                        "code": "inenv.py",
                        "function": "inenv",
                        "pool": {"floor": 1},
                        "resources": {"cpus": 0},
                        "codeEnv": {"requirements": ["apinode-ray-missing==1.0"], "wheelhouse": "wheelhouse"},
                    },
                ],
            }
        )
    )
    node_cache = tmp_path / "node-envs"
    node = NodeProcess(
        "run",
        str(source),
        "--ray",
        cluster[0].address,
        ready_timeout=240,
        env={"APINODE_CODE_ENVS": str(node_cache)},
    )
    try:
        with ThreadPoolExecutor(2) as threads:
            responses = list(threads.map(lambda _: call(node, "inenv", {"delay": 0.5}, "envs"), range(2)))
        assert all(response.status_code == 200 for response in responses), [r.text for r in responses]
        for raylet, prefix, version in (response.json()["response"] for response in responses):
            assert version == "0.1"
            assert Path(prefix).parent == ray_env_cache(cluster[0], raylets[raylet])  # its Ray node's cache
        assert not node_cache.exists()  # the node built nothing

        failed = call(node, "missing", service="envs")
        assert failed.status_code == 500
        message = failed.json()["message"]
        assert "EndpointLoadFailed" in failed.text and "on Ray node" in message and "apinode-ray-missing" in message
        assert call(node, "inenv", service="envs").status_code == 200  # the other endpoint serves on
    finally:
        node.stop()


def test_a_cluster_that_cannot_be_reached_is_said_and_the_node_exits_non_zero(tmp_path):
    port = free_port()  # nothing listens there
    source = write_service(tmp_path / "onray")
    ran = subprocess.run(
        [sys.executable, "-m", "apinode.cli", "run", str(source), "--ray", f"127.0.0.1:{port}", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode != 0
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in ran.stderr


def generation_bundle(directory: Path, generation: str, requirement: str | None = None) -> Path:
    """A generation of service "busy", with a code env of `requirement` from a wheelhouse of
    tiny_wheel if given."""
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
    if requirement is not None:
        tiny_wheel(source / "wheelhouse")
        endpoint["codeEnv"] = {"requirements": [requirement], "wheelhouse": "wheelhouse"}
    (source / "service.json").write_text(json.dumps({"id": "busy", "endpoints": [endpoint]}))
    bundle = directory / f"{generation}.zip"
    write_bundle(stage_directory(source), bundle, generation)
    return bundle


def test_the_admin_switch_under_load_loses_nothing_and_stops_the_old_generation_s_hosts(cluster, tmp_path):
    """And a generation whose code env cannot be built on a Ray node is refused, while the
    one serving serves on."""
    data_dir = tmp_path / "data"
    key = make_admin_key(data_dir)
    others = ray_actor_processes()  # other nodes' hosts (the module's node)
    node = NodeProcess("serve", "--data-dir", str(data_dir), "--ray", cluster[0].address, ready_timeout=120)
    try:
        admin = dataikuapi.APINodeAdminClient(node.url, key)
        admin.create_service("busy")
        for generation in ("g1", "g2"):
            admin.service("busy").import_generation_from_archive(str(generation_bundle(tmp_path, generation)))
        broken = generation_bundle(tmp_path, "g3", "apinode-ray-missing==1.0")
        admin.service("busy").import_generation_from_archive(str(broken))
        admin.service("busy").switch_to_single_generation("g1")
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
                    earlier = ray_actor_processes() - others  # those of the generations served so far
                    admin.service("busy").switch_to_single_generation(generation)
                    # traffic moved once the floor was forked, not merely asked of Ray
                    assert forks(node, generation) >= 2
                    seen = len(outcomes)
                    eventually(lambda seen=seen: len(outcomes) >= seen + 40, timeout=30)
                serving = ray_actor_processes() - others - earlier  # the last g2's
                with pytest.raises(Exception, match="on Ray node .*apinode-ray-missing"):
                    admin.service("busy").switch_to_single_generation("g3")
                seen = len(outcomes)
                eventually(lambda: len(outcomes) >= seen + 40, timeout=30)
            finally:
                stop.set()
                for future in running:
                    future.result()
        assert [outcome for outcome in outcomes if outcome.startswith("FAILED")] == []
        assert outcomes[-1] == "g2"
        # the hosts of the generations switched from (g1, g2, g1) and of g3, which did not load,
        # are stopped; the last g2's serve
        assert earlier and serving
        eventually(lambda: ray_actor_processes() - others == serving, timeout=30)
    finally:
        node.stop()


def metric(node, name: str, endpoint: str, label: str = "") -> float:
    for line in requests.get(f"{node.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") and f'endpoint="{endpoint}"' in line and label in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} for {endpoint} {label}")


def forks(node, generation: str) -> float:
    """Pipelines started so far for `generation` of any endpoint."""
    lines = requests.get(f"{node.url}/metrics", timeout=10).text.splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("apinode_pipeline_starts_total{") and f'generation="{generation}"' in line
    )


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
