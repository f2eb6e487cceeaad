"""apinode.localnode: a node started as a child is known to serve from its ready file; a child
that dies first, or is not ready in time, is reported with its output; `--ready-file` itself."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import SERVICES, alive, eventually

from apinode.client import NodeClient, NodeError
from apinode.localnode import LocalNode, NodeStartError, read_ready_file, write_ready_file

pytestmark = pytest.mark.timeout(90)


def fake_node(tmp_path: Path, script: str) -> tuple[str, ...]:
    """A stand-in for `python -m apinode.cli`; `ready` is its ready file (its last argument)."""
    path = tmp_path / "fake.py"
    header = "import os, signal, sys, time\nfrom pathlib import Path\nfrom apinode.localnode import write_ready_file\n"
    path.write_text(f"{header}ready = Path(sys.argv[-1])\n{script}\n")
    return (sys.executable, str(path))


def test_a_node_is_ready_once_it_serves_and_still_prints_for_people():
    node = LocalNode("run", str(SERVICES / "testsvc"))
    try:
        assert node.url.startswith("http://127.0.0.1:")
        assert NodeClient(node.url).run("testsvc", "echo", b'{"x": 1}').status == 200
        assert "apinode: serving service 'testsvc' (generation" in node.output
        assert "try:\n  curl -s -X POST" in node.output
    finally:
        assert node.stop() == 0
    assert "apinode: serving" in node.output  # kept once stopped


def test_ready_file_option_replaces_a_stale_file_and_removes_it_at_exit(tmp_path):
    ready_file = tmp_path / "ready.json"
    write_ready_file(ready_file, "http://127.0.0.1:1")  # left by a node that was killed
    command = [sys.executable, "-m", "apinode.cli", "serve", "--data-dir", str(tmp_path / "data")]
    child = subprocess.Popen(
        [*command, "--port", "0", "--ready-file", str(ready_file)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        ready = eventually(lambda: (found := read_ready_file(ready_file)) and found["pid"] == child.pid and found, 60)
        assert NodeClient(ready["url"]).run("nope", "e", b"{}").status == 404  # it serves there
        assert [path.name for path in tmp_path.iterdir() if path.is_file()] == ["ready.json"]  # no temporary
    finally:
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0
    assert not ready_file.exists()


def test_a_child_that_exits_before_it_is_ready_says_how_and_what_it_printed(tmp_path):
    program = fake_node(tmp_path, "print('port already taken', flush=True)\nsys.exit(3)")
    with pytest.raises(NodeStartError) as caught:
        LocalNode("serve", program=program)
    assert caught.value.why == "exited with code 3" and caught.value.tail == "port already taken"
    assert str(caught.value) == "the node exited with code 3:\nport already taken"
    assert isinstance(caught.value, NodeError) and caught.value.status is None


def test_a_child_not_ready_in_time_is_stopped(tmp_path):
    program = fake_node(tmp_path, "print(os.getpid(), sys.argv[1:], flush=True)\ntime.sleep(300)")
    with pytest.raises(NodeStartError, match=r"^the node was not ready within 0.5 s:\n") as caught:
        LocalNode("serve", ready_timeout=0.5, program=program)
    pid, args = caught.value.tail.split(" ", 1)
    assert args.startswith("['serve', '--port', '0', '--ready-file', ")
    assert not alive(int(pid))  # stopped, not left behind


def test_a_child_that_writes_its_ready_file_then_exits_was_ready(tmp_path):
    node = LocalNode(program=fake_node(tmp_path, "write_ready_file(ready, 'http://h:1')"))
    assert node.url == "http://h:1" and node.process.wait(10) == 0 and node.stop() == 0


def test_a_node_that_ignores_sigterm_is_killed(tmp_path):
    ignore_sigterm = "signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    node = LocalNode(program=fake_node(tmp_path, f"{ignore_sigterm}\nwrite_ready_file(ready, 'h')\ntime.sleep(300)"))
    assert node.stop(timeout=0.5) == -signal.SIGKILL and not alive(node.pid)


def test_a_ready_file_that_is_not_one_is_an_error(tmp_path):
    path = tmp_path / "ready.json"
    assert read_ready_file(path) is None
    path.write_text("[1]")
    with pytest.raises(NodeError, match=r'expected \{"url": ..., "pid": ...\}, found \[1\]'):
        read_ready_file(path)
