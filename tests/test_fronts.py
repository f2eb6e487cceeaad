"""`--fronts 2`: a front process shares the port with the core and relays to it, so the pool
rules, metrics, query logs and switches are the node's, and SIGTERM drains every front."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import signal
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import dataikuapi
import pytest
import requests
from support import NodeProcess, alive, children, cmdline, eventually, make_admin_key, make_bundle

CLIENTS = 16


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fronts") / "data"


@pytest.fixture(scope="module")
def node(data_dir):
    make_admin_key(data_dir)
    node = NodeProcess("serve", "--data-dir", str(data_dir), "--fronts", "2")
    eventually(lambda: len(fronts(node)) == 1)
    yield node
    assert node.stop() == 0


@pytest.fixture(scope="module")
def admin(node, data_dir):
    return dataikuapi.APINodeAdminClient(node.url, make_admin_key(data_dir))


def fronts(node) -> list[int]:
    return [pid for pid in children(node.process.pid) if "apinode.node.relay_front" in cmdline(pid)]


def sockets_of(pid: int) -> int:
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            pass  # closed meanwhile
    return count


def connection(node) -> http.client.HTTPConnection:
    parts = urlsplit(node.url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def post(conn: http.client.HTTPConnection, path: str, body: dict) -> tuple[int, dict]:
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def deploy(admin, bundles: Path, service_id: str, *generations: str, pool: dict) -> None:
    admin.create_service(service_id)
    for generation in generations:
        admin.service(service_id).import_generation_from_archive(
            str(make_bundle(bundles, service_id, generation, pool=pool))
        )
    admin.service(service_id).switch_to_single_generation(generations[0])


def run_path(service_id: str) -> str:
    return f"/public/api/v1/{service_id}/which/run"


def test_both_processes_accept_on_the_port(node, admin, tmp_path):
    deploy(admin, tmp_path, "spread", "g1", pool={"floor": 1, "cruise": 1, "ceil": 1})
    [front] = fronts(node)
    before = sockets_of(front)
    conns = [connection(node) for _ in range(40)]
    try:
        for conn in conns:  # one at a time, kept open: each is accepted by whichever process is first
            assert post(conn, run_path("spread"), {})[0] == 200
        assert sockets_of(front) > before  # some of them are the front process's
    finally:
        for conn in conns:
            conn.close()


def test_ceil_holds_across_fronts_and_metrics_add_up(node, admin, tmp_path):
    deploy(admin, tmp_path, "capped", "g1", pool={"floor": 1, "cruise": 1, "ceil": 2, "queue": 256})

    def client(_: int) -> list[int]:
        conn = connection(node)  # a new connection per client: spread over both processes
        try:
            pids = []
            for _ in range(10):
                status, body = post(conn, run_path("capped"), {"delay": 0.005})
                assert status == 200, body
                pids.append(body["response"]["pid"])
            return pids
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as threads:
        pids = {pid for answered in threads.map(client, range(CLIENTS)) for pid in answered}
    assert 1 <= len(pids) <= 2  # one pool for the node: per-front pools would have grown to 4
    endpoint = admin.get_metrics()["services"]["capped"]["generations"]["g1"]["endpoints"]["which"]
    assert endpoint["requests"] == {"200": CLIENTS * 10}
    assert endpoint["pipelines"]["alive"] <= 2
    prometheus = requests.get(f"{urlsplit(node.url)._replace(path='/metrics').geturl()}", timeout=10).text
    assert 'service="capped"' in prometheus


def test_a_switch_under_load_loses_nothing(node, admin, tmp_path):
    pool = {"floor": 2, "cruise": 2, "ceil": 2}
    deploy(admin, tmp_path, "switched", "g1", "g2", pool=pool)
    stop = threading.Event()
    outcomes: list[str] = []

    def client() -> None:
        conn = connection(node)
        try:
            while not stop.is_set():
                status, body = post(conn, run_path("switched"), {"delay": 0.002})
                outcomes.append(body["response"]["generation"] if status == 200 else f"FAILED {status}: {body}")
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(4) as threads:
        running = [threads.submit(client) for _ in range(4)]
        try:
            for generation in ("g2", "g1", "g2"):
                seen = len(outcomes)
                eventually(lambda seen=seen: len(outcomes) >= seen + 40)
                admin.service("switched").switch_to_single_generation(generation)
            seen = len(outcomes)
            eventually(lambda: len(outcomes) >= seen + 40)
        finally:
            stop.set()
            for future in running:
                future.result()
    assert [outcome for outcome in outcomes if outcome.startswith("FAILED")] == []
    assert set(outcomes) == {"g1", "g2"} and outcomes[-1] == "g2"


def test_a_front_that_dies_is_replaced(node, admin, tmp_path):
    deploy(admin, tmp_path, "steady", "g1", pool={"floor": 1, "cruise": 1, "ceil": 1})
    [front] = fronts(node)
    os.kill(front, signal.SIGKILL)
    eventually(lambda: fronts(node) not in ([], [front]), timeout=15)
    for _ in range(20):
        conn = connection(node)
        try:
            assert post(conn, run_path("steady"), {})[0] == 200
        finally:
            conn.close()


def test_sigterm_drains_every_front(tmp_path):
    data_dir = tmp_path / "data"
    key = make_admin_key(data_dir)
    node = NodeProcess("serve", "--data-dir", str(data_dir), "--fronts", "2")
    try:
        eventually(lambda: len(fronts(node)) == 1)
        [front] = fronts(node)
        admin = dataikuapi.APINodeAdminClient(node.url, key)
        deploy(admin, tmp_path, "draining", "g1", pool={"floor": 4, "cruise": 4, "ceil": 4, "queue": 64})
        started = time.perf_counter()
        before = sockets_of(front)
        conns = [connection(node) for _ in range(12)]
        for conn in conns:
            conn.request("POST", run_path("draining"), json.dumps({"delay": 1.0}))
        eventually(lambda: sockets_of(front) > before)  # the front holds some of them
        node.process.terminate()
        answers = [conn.getresponse() for conn in conns]
        assert [answer.status for answer in answers] == [200] * len(conns)
        assert node.process.wait(30) == 0
        assert not alive(front)
        assert time.perf_counter() - started < 20
    finally:
        node.stop()


def test_a_front_dies_with_its_node(tmp_path):
    node = NodeProcess("serve", "--data-dir", str(tmp_path / "data"), "--fronts", "2")
    try:
        eventually(lambda: len(fronts(node)) == 1)
        [front] = fronts(node)
        node.process.kill()
        eventually(lambda: not alive(front))
    finally:
        node.stop()


def test_small_and_large_bodies_cross_the_link_and_each_call_is_logged_once(node, admin, data_dir, tmp_path):
    """A body declared up to 64 KiB crosses to the core in the request's one frame, a larger one
    in pieces: both reach the function whole, whichever process accepted the connection, and
    the node's one query log has a line per call."""
    admin.create_service("sized")
    code = "def which(pad=''):\n    return {'size': len(pad)}\n"
    admin.service("sized").import_generation_from_archive(str(make_bundle(tmp_path, "sized", "g1", code)))
    admin.service("sized").switch_to_single_generation("g1")
    sizes = [0, 100, 60_000, 200_000]
    for _ in range(12):
        conn = connection(node)  # new connections: spread over both processes
        try:
            for size in sizes:
                status, body = post(conn, run_path("sized"), {"pad": "x" * size})
                assert (status, body["response"]) == (200, {"size": size})
        finally:
            conn.close()
    log = data_dir / "logs" / "queries" / "sized.log"
    eventually(lambda: log.exists() and len(log.read_text().splitlines()) == 12 * len(sizes))
