"""Pipelines in production, against real nodes: fork after init, execution timeouts, recycling,
retried starts, bounded output and results, and no process outliving the node."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import statistics
import threading
import time
from pathlib import Path

import pytest
import requests
from support import NodeProcess, alive, children, eventually

ENDPOINTS = {
    # name: (code, pool)
    "hang": (
        "import os\n\ndef hang(started=None):\n    if started:\n        open(started, 'w').close()\n"
        "    while started:\n        pass\n    return os.getpid()\n",
        {"floor": 2, "cruise": 2, "ceil": 2, "executionTimeout": 1000},
    ),
    "slowinit": (
        "import os, time\n"
        "with open(os.environ['INIT_LOG'], 'a') as log:\n    log.write(f'slowinit {os.getpid()}\\n')\n"
        "time.sleep(3)\n\n"
        "def slowinit(delay=0.0):\n    time.sleep(delay)\n    return os.getpid()\n",
        {"floor": 1, "cruise": 1, "ceil": 4},
    ),
    "spawned": (
        "import os, time\n"
        "with open(os.environ['INIT_LOG'], 'a') as log:\n    log.write(f'spawned {os.getpid()}\\n')\n\n"
        "def spawned(delay=0.0):\n    time.sleep(delay)\n    return os.getpid()\n",
        {"floor": 1, "cruise": 1, "ceil": 3, "start": "spawn"},
    ),
    "recycled": (
        "import os\n\ndef recycled():\n    return os.getpid()\n",
        {"floor": 2, "cruise": 2, "ceil": 2, "maxRequests": 5},
    ),
    "leaky": (
        "import os\nLEAK = []\n\ndef leaky():\n    LEAK.append(b'x' * (40 << 20))\n    return os.getpid()\n",
        {"floor": 1, "cruise": 1, "ceil": 1, "maxMemoryMb": 150},
    ),
    "threaded": (
        "import os, threading, time\n"
        "threading.Thread(target=time.sleep, args=(3600,), name='poller', daemon=True).start()\n\n"
        "def threaded():\n    return os.getpid()\n",
        {},
    ),
    "flaky": (
        # its second initialization fails, as a transient ConnectionError would
        "import os\n"
        "with open(os.environ['INIT_LOG'], 'a') as log:\n    log.write(f'flaky {os.getpid()}\\n')\n"
        "with open(os.environ['INIT_LOG']) as log:\n"
        "    if sum(line.startswith('flaky') for line in log) == 2:\n"
        "        raise ConnectionError('the model store did not answer')\n\n"
        "def flaky(delay=0.0):\n    import time\n    time.sleep(delay)\n    return os.getpid()\n",
        {"floor": 1, "cruise": 1, "ceil": 2, "start": "spawn", "timeout": 20000},
    ),
    "noisy": (
        "def noisy(megabytes=50):\n"
        "    line = 'x' * 99\n"
        "    for _ in range(megabytes * 10000):\n        print(line)\n"
        "    return megabytes\n",
        {},
    ),
    "quick": ("def quick():\n    return 1\n", {}),
    "echo": ("def echo(n):\n    return n\n", {"floor": 1, "cruise": 1, "ceil": 1, "queue": 64}),
    "sturdy": (
        "import os, time\n\ndef sturdy(delay=0.0):\n    time.sleep(delay)\n    return os.getpid()\n",
        {"floor": 1, "cruise": 1, "ceil": 3, "scaleDownDelay": 0},
    ),
    "big": (
        "def big(megabytes=1):\n    return 'x' * (megabytes << 20)\n",
        {"maxResultMb": 40},
    ),
    "sklearn": (
        "import os\nimport numpy as np\nfrom sklearn.linear_model import LogisticRegression\n"
        "X = np.random.default_rng(0).normal(size=(500, 20))\ny = (X[:, 0] > 0).astype(int)\n"
        "MODEL = LogisticRegression().fit(X, y)\nM = np.random.default_rng(1).normal(size=(300, 300))\n\n"
        "def sklearn(x0=1.0):\n"
        "    row = np.zeros((1, 20))\n    row[0, 0] = x0\n"
        "    return {'label': int(MODEL.predict(row)[0]), 'trace': float(np.trace(M @ M.T)), 'pid': os.getpid()}\n",
        {"floor": 2, "cruise": 2, "ceil": 2},
    ),
}


def write_service(directory: Path, service_id: str, endpoints: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    definitions = []
    for name, (code, pool) in endpoints.items():
        (directory / f"{name}.py").write_text(code)
        definitions.append({"id": name, "code": f"{name}.py", "function": name, "pool": pool})
    (directory / "service.json").write_text(json.dumps({"id": service_id, "endpoints": definitions}))
    return directory


@pytest.fixture(scope="module")
def init_log(tmp_path_factory):
    return tmp_path_factory.mktemp("inits") / "inits.txt"


@pytest.fixture(scope="module")
def node(tmp_path_factory, init_log):
    source = write_service(tmp_path_factory.mktemp("svc") / "prod", "prod", ENDPOINTS)
    node = NodeProcess("run", str(source), env={"INIT_LOG": str(init_log)}, ready_timeout=120)
    yield node
    assert node.stop() == 0


def call(node, endpoint, body=None, service="prod", timeout=60):
    return requests.post(f"{node.url}/public/api/v1/{service}/{endpoint}/run", json=body or {}, timeout=timeout)


def inits(init_log: Path, endpoint: str) -> list[int]:
    return [int(line.split()[1]) for line in init_log.read_text().splitlines() if line.split()[0] == endpoint]


def metric(node, name: str, endpoint: str, **labels: str) -> float:
    wanted = {"endpoint": endpoint, **labels}
    for line in requests.get(f"{node.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{"):
            label_text, value = line[len(name) + 1 :].rsplit("} ", 1)
            found = dict(item.split("=", 1) for item in label_text.split(","))
            if all(found.get(key) == json.dumps(value_) for key, value_ in wanted.items()):
                return float(value)
    raise AssertionError(f"no {name} for {wanted}")


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def test_a_hung_call_is_answered_504_at_the_timeout_and_its_pipeline_replaced(node, tmp_path):
    before = set(node.pipelines("prod/hang"))
    assert len(before) == 2
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        hung = pool.submit(call, node, "hang", {"started": str(tmp_path / "spinning")})
        eventually((tmp_path / "spinning").exists)
        others = {call(node, "hang").json()["response"] for _ in range(20)}  # the other pipeline answers
        response = hung.result()
        elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert response.json()["errorType"] == "ExecutionTimeout"
    assert "executionTimeout of 1000 ms" in response.json()["message"]
    assert 0.9 <= elapsed < 5
    assert len(others) == 1 and others < before
    [stuck] = before - others
    eventually(lambda: not alive(stuck))
    eventually(lambda: len(node.pipelines("prod/hang")) == 2)
    assert others < set(node.pipelines("prod/hang"))
    assert metric(node, "apinode_execution_timeouts_total", "hang") == 1


def test_a_dead_template_is_started_again_and_its_pipelines_serve_on(node):
    [template] = node.templates("prod/sturdy")
    [pipeline] = node.pipelines("prod/sturdy")
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        running = pool.submit(call, node, "sturdy", {"delay": 1.0})
        eventually(lambda: metric(node, "apinode_pipelines_busy", "sturdy") == 1)
        os.kill(template, signal.SIGKILL)
        assert running.result().json()["response"] == pipeline
        node.wait_for_output(f"prod/sturdy template pid {template} exited with code -9")
        responses = list(pool.map(lambda _: call(node, "sturdy", {"delay": 0.5}), range(3)))  # scale-ups
    assert [response.status_code for response in responses] == [200] * 3
    node.wait_for_output(f"prod/sturdy: its template pid {template} has ended; starting another")
    [new_template] = node.templates("prod/sturdy")
    assert new_template != template


def test_a_scale_up_forks_without_running_the_initialization_again(node, init_log):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        started = time.monotonic()
        responses = list(pool.map(lambda _: call(node, "slowinit", {"delay": 0.5}), range(4)))
        elapsed = time.monotonic() - started
    assert [response.status_code for response in responses] == [200] * 4
    assert len({response.json()["response"] for response in responses}) == 4
    assert elapsed < 2.5  # a 3 s initialization would show
    assert inits(init_log, "slowinit") == node.templates("prod/slowinit")


def test_spawned_pipelines_each_run_the_initialization(node, init_log):
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(lambda _: call(node, "spawned", {"delay": 1.0}), range(3)))
    pids = {response.json()["response"] for response in responses}
    assert len(pids) == 3
    assert pids <= set(inits(init_log, "spawned"))
    assert node.templates("prod/spawned") == []
    assert metric(node, "apinode_pipeline_starts_total", "spawned", how="spawn") >= 3


def test_pipelines_are_recycled_by_requests_without_failing_one(node):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: call(node, "recycled"), range(60)))
    assert [response.status_code for response in responses] == [200] * 60
    assert len({response.json()["response"] for response in responses}) >= 6  # 2 pipelines, ~5 requests each
    assert metric(node, "apinode_pipelines_recycled_total", "recycled", reason="requests") >= 4


def test_calls_sent_ahead_to_a_busy_pipeline_each_get_their_own_answer(node):
    """At ceil, short calls wait in the busy pipeline's socket rather than in the queue (once
    the endpoint's calls have all been short for 2 s): with 8 clients and one pipeline, many
    are sent ahead, and every answer is its own request's."""
    deadline = time.monotonic() + 30
    url = f"{node.url}/public/api/v1/prod/echo/run"
    with concurrent.futures.ThreadPoolExecutor(8) as pool, requests.Session() as session:
        while metric(node, "apinode_calls_sent_ahead_total", "echo") < 100:
            assert time.monotonic() < deadline, "no call was sent ahead"
            responses = list(pool.map(lambda n: session.post(url, json={"n": n}, timeout=60), range(400)))
            assert [response.json()["response"] for response in responses] == list(range(400))


def test_a_pipeline_over_its_memory_limit_is_recycled_after_answering(node):
    responses = [call(node, "leaky") for _ in range(8)]
    assert [response.status_code for response in responses] == [200] * 8
    assert len({response.json()["response"] for response in responses}) >= 2
    assert metric(node, "apinode_pipelines_recycled_total", "leaky", reason="memory") >= 1


def test_a_thread_alive_after_initialization_falls_back_to_spawn(node):
    assert call(node, "threaded").status_code == 200
    node.wait_for_output('prod/threaded: falling back to "start": "spawn"')
    node.wait_for_output("1 thread still running after the initialization (poller)")
    assert node.templates("prod/threaded") == []
    assert metric(node, "apinode_pipeline_starts_total", "threaded", how="spawn") >= 1


def test_a_start_failing_after_the_load_is_retried(node, init_log):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda _: call(node, "flaky", {"delay": 1.0}), range(2)))
    assert [response.status_code for response in responses] == [200, 200]
    node.wait_for_output("prod/flaky: a pipeline failed to start; the others serve on")
    assert call(node, "flaky").status_code == 200
    assert metric(node, "apinode_pipeline_start_failures_total", "flaky") == 1


def test_megabytes_of_prints_do_not_slow_other_endpoints(node):
    def p50() -> float:
        times = []
        for _ in range(40):
            started = time.perf_counter()
            assert call(node, "quick").status_code == 200
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    quiet = p50()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        printing = pool.submit(call, node, "noisy", {"megabytes": 50})
        noisy = p50()
        assert printing.result().status_code == 200
    assert noisy < max(3 * quiet, quiet + 0.02), (quiet, noisy)
    node.wait_for_output("of output dropped: over 256 KiB a second")


def test_results_over_the_limit_are_refused_naming_their_size(node):
    response = call(node, "big", {"megabytes": 30})
    assert response.status_code == 200 and len(response.json()["response"]) == 30 << 20
    response = call(node, "big", {"megabytes": 41})
    assert response.status_code == 500
    body = response.json()
    assert body["errorType"] == "ResultTooLarge"
    assert "41.0 MiB" in body["message"] and "limit of 40 MiB" in body["message"]


def test_numpy_and_scikit_learn_work_after_fork(node):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda x: call(node, "sklearn", {"x0": x}), [1.0, -1.0] * 4))
    bodies = [response.json()["response"] for response in responses]
    assert [body["label"] for body in bodies] == [1, 0] * 4
    assert len({body["trace"] for body in bodies}) == 1
    assert {body["pid"] for body in bodies} <= set(node.pipelines("prod/sklearn"))
    assert len(node.templates("prod/sklearn")) == 1


def pss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no Pss for {pid}")


def test_four_pipelines_share_the_memory_of_their_initialization(tmp_path):
    code = "import os\nMODEL = b'm' * (300 << 20)\n\ndef model():\n    return [os.getpid(), len(MODEL)]\n"
    source = write_service(tmp_path / "mem", "mem", {"model": (code, {"floor": 4, "cruise": 4, "ceil": 4})})
    node = NodeProcess("run", str(source))
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert all(r.status_code == 200 for r in pool.map(lambda _: call(node, "model", service="mem"), range(8)))
        processes = node.pipelines("mem/model") + node.templates("mem/model")
        assert len(processes) == 5
        total = sum(pss_mb(pid) for pid in processes)
        assert total < 450, total  # 4 copies would be 1,200 MB and more
    finally:
        assert node.stop() == 0


GRANDCHILD = (
    "import os, subprocess\n\n"
    "def grandchild(spin=False):\n"
    "    child = subprocess.Popen(['sleep', '3600'])\n"
    "    with open(os.environ['CHILD_PIDS'], 'a') as pids:\n        pids.write(f'{child.pid}\\n')\n"
    "    while spin:\n        pass\n"
    "    return child.pid\n"
)


def test_sigkill_of_the_node_leaves_no_process(tmp_path):
    source = write_service(tmp_path / "gc", "gc", {"grandchild": (GRANDCHILD, {"floor": 2, "cruise": 2, "ceil": 2})})
    child_pids = tmp_path / "children.txt"
    node = NodeProcess("run", str(source), env={"CHILD_PIDS": str(child_pids)})
    assert call(node, "grandchild", service="gc").status_code == 200  # an idle pipeline with a grandchild

    def spin() -> None:
        with pytest.raises(requests.ConnectionError):  # the node dies under it
            call(node, "grandchild", {"spin": True}, "gc")

    threading.Thread(target=spin, daemon=True).start()
    eventually(lambda: len(child_pids.read_text().split()) == 2 if child_pids.exists() else False)
    everything = descendants(node.process.pid) + [int(pid) for pid in child_pids.read_text().split()]
    assert len(everything) >= 5  # template, two pipelines, two sleeps
    node.process.send_signal(signal.SIGKILL)
    node.process.wait(10)
    eventually(lambda: not any(alive(pid) for pid in everything), timeout=3)


def test_sigterm_finishes_with_a_grandchild_alive(tmp_path):
    source = write_service(tmp_path / "gc", "gc", {"grandchild": (GRANDCHILD, {})})
    child_pids = tmp_path / "children.txt"
    node = NodeProcess("run", str(source), env={"CHILD_PIDS": str(child_pids)})
    grandchild = call(node, "grandchild", service="gc").json()["response"]
    assert alive(grandchild)
    started = time.monotonic()
    assert node.stop(timeout=20) == 0
    assert time.monotonic() - started < 10
    eventually(lambda: not alive(grandchild), timeout=3)
    assert os.path.exists(child_pids)
