"""Starting and stopping: SIGTERM and Ctrl-C drain what is in flight and leave no process."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import subprocess
import sys

import pytest
import requests
from support import SERVICES, NodeProcess, alive, eventually


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_drains_in_flight_requests_and_leaves_no_process(tmp_path, signum):
    node = NodeProcess("run", str(SERVICES / "testsvc"), env={"APINODE_TEST_INIT_LOG": str(tmp_path / "inits")})
    pipelines = node.pipelines()
    assert pipelines
    started = tmp_path / "started"
    url = f"{node.url}/public/api/v1/testsvc/narrow/run"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(requests.post, url, json={"delay": 1, "started": str(started)}, timeout=30)
        eventually(started.exists)
        node.process.send_signal(signum)
        response = in_flight.result()
    assert response.status_code == 200, response.text
    assert node.stop() == 0
    assert not [pid for pid in pipelines if alive(pid)]


def test_build_twice_gives_the_same_bytes(tmp_path):
    outputs = [tmp_path / "first.zip", tmp_path / "second.zip"]
    for output in outputs:
        subprocess.run(
            [sys.executable, "-m", "apinode.cli", "build", str(SERVICES / "testsvc"), "-o", str(output)],
            check=True,
            capture_output=True,
            timeout=60,
        )
    assert outputs[0].read_bytes() == outputs[1].read_bytes()


def test_a_bad_source_is_one_clear_line(tmp_path):
    (tmp_path / "service.json").write_text('{"id": "x", "endpoints": [{"id": "e", "code": "e.py"}]}')
    result = subprocess.run(
        [sys.executable, "-m", "apinode.cli", "run", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "function" in result.stderr and "Traceback" not in result.stderr


def test_a_zip_slip_bundle_is_refused_with_nothing_written(tmp_path):
    import zipfile

    bundle = tmp_path / "evil.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("service.json", '{"id": "evil", "endpoints": [{"id": "e", "code": "e.py", "function": "f"}]}')
        archive.writestr("e.py", "def f():\n    return 1\n")
        archive.writestr("../../escaped.txt", "gotcha")
    result = subprocess.run(
        [sys.executable, "-m", "apinode.cli", "run", str(bundle), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert ".." in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path.parent.parent / "escaped.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.zip"]


def test_an_initialization_that_hangs_fails_to_load_at_the_timeout(tmp_path):
    (tmp_path / "service.json").write_text(
        json.dumps(
            {
                "id": "slow",
                "endpoints": [
                    {"id": "hangs", "code": "hangs.py", "function": "f"},
                    {"id": "fine", "code": "fine.py", "function": "f"},
                ],
            }
        )
    )
    (tmp_path / "hangs.py").write_text("import time\ntime.sleep(3600)\n\ndef f():\n    return 1\n")
    (tmp_path / "fine.py").write_text("def f():\n    return 2\n")
    node = NodeProcess("run", str(tmp_path), env={"APINODE_LOAD_TIMEOUT": "1"})
    try:
        assert "did not finish loading within 1 s" in node.output
        hung = requests.post(f"{node.url}/public/api/v1/slow/hangs/run", json={}, timeout=10)
        assert hung.status_code == 500 and hung.json()["errorType"] == "EndpointLoadFailed"
        assert requests.post(f"{node.url}/public/api/v1/slow/fine/run", json={}, timeout=10).json()["response"] == 2
        assert node.pipelines("slow/hangs") == []
    finally:
        assert node.stop() == 0
