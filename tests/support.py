"""Real nodes as child processes on free loopback ports, and other helpers of tests and benchmarks."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from apinode.localnode import LocalNode
from apinode.packaging.bundles import write_bundle
from apinode.packaging.staging import stage_directory

SERVICES = Path(__file__).parent / "services"
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
"""uv, when installed (next to this interpreter or on PATH): code envs build faster with it."""


class NodeProcess(LocalNode):
    """A node started as apinode.localnode does, with what tests look at: its output and its
    pipelines. `program` replaces `python -m apinode.cli` for a baseline server (it writes the
    ready file alike)."""

    def wait_for_output(self, text: str, timeout: float = 10) -> None:
        try:
            eventually(lambda: text in self.output, timeout)
        except AssertionError:
            raise AssertionError(f"{text!r} never appeared in the node's output:\n{self.output}") from None

    def pipelines(self, endpoint: str | None = None) -> list[int]:
        """Pids of the node's pipeline processes (of one endpoint, `service/endpoint`): the
        node's children, or its templates' children (forked pipelines)."""
        return [pid for pid, argv in self._runtime_processes(endpoint) if "--template" not in argv] + [
            pid for template in self.templates(endpoint) for pid in children(template)
        ]

    def templates(self, endpoint: str | None = None) -> list[int]:
        """Pids of the node's template processes (of one endpoint)."""
        return [pid for pid, argv in self._runtime_processes(endpoint) if "--template" in argv]

    def _runtime_processes(self, endpoint: str | None) -> list[tuple[int, list[str]]]:
        found = []
        for child in children(self.process.pid):
            argv = cmdline(child)
            if "--endpoint" in argv and (endpoint is None or argv[argv.index("--endpoint") + 1] == endpoint):
                found.append((child, argv))
        return found


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def connection_owner(client: socket.socket, pids: list[int]) -> int | None:
    """Which of `pids` holds the server's end of the loopback TCP connection `client`, once it
    was accepted (None until then), as /proc/net/tcp and each process's descriptors tell."""
    mine, theirs = client.getsockname()[1], client.getpeername()[1]
    inodes = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == theirs and int(fields[2].rsplit(":", 1)[1], 16) == mine:
            inodes.append(f"socket:[{fields[9]}]")
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:
                pass  # closed meanwhile
    return None


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, exited but not yet reaped, does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def free_port() -> int:
    """A loopback port nothing listens on now, for a program that takes its port as an option."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def eventually(check, timeout: float = 10, interval: float = 0.02):
    """Poll `check()` until it returns a truthy value (bounded); return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)


def apinode(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run an `apinode` command to its end; its stdout and stderr as text."""
    result = subprocess.run([sys.executable, "-m", "apinode.cli", *args], capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"apinode {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def make_admin_key(data_dir: Path) -> str:
    """A new admin key of the node serving `data_dir`, made with the command operators use."""
    lines = apinode("admin-key-create", "--data-dir", str(data_dir)).stdout.splitlines()
    assert len(lines) == 1, lines  # the key alone, so that KEY=$(apinode admin-key-create ...) works
    return lines[0]


def make_bundle(
    directory: Path, service_id: str, generation: str, code: str = "", *, pool: dict | None = None, **service: object
) -> Path:
    """A one-endpoint service (endpoint "which") built as a bundle `<directory>/<service>-<gen>.zip`.

    By default the endpoint answers {"generation": <gen>, "pid": ...}, after an optional `delay`.
    """
    source = directory / f"{service_id}-{generation}"
    source.mkdir(parents=True)
    (source / "which.py").write_text(
        code
        or (
            "import os, time\n\n"
            "def which(delay=0.0):\n    time.sleep(delay)\n"
            f"    return {{'generation': {generation!r}, 'pid': os.getpid()}}\n"
        )
    )
    endpoint = {"id": "which", "code": "which.py", "function": "which", "pool": pool or {}}
    (source / "service.json").write_text(json.dumps({"id": service_id, "endpoints": [endpoint], **service}))
    bundle = directory / f"{service_id}-{generation}.zip"
    write_bundle(stage_directory(source), bundle, generation)
    return bundle


def write_notebook(path: Path, *sources: str) -> Path:
    """A notebook of code cells with these sources (nbformat v4), for notebook-reading tests."""
    import nbformat

    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources]), path)
    return path


def cell_text(cell, *kinds: str) -> str:
    """The text a notebook cell shows, of the given output kinds (stdout, stderr, result, error)."""
    parts = []
    for output in cell.outputs:
        kind = output.output_type
        if kind == "stream" and output.name in kinds:
            parts.append(output.text)
        elif kind in ("execute_result", "display_data") and "result" in kinds:
            parts.append(output.data.get("text/plain", ""))
        elif kind == "error" and "error" in kinds:
            parts.append(f"{output.ename}: {output.evalue}")
    return "".join(parts)


def execute_notebook(path: Path, allow_errors: bool):
    """Run the notebook at `path` in a fresh kernel (nbclient), from its directory; its cells."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=60,
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    return notebook.cells


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
"""Endpoint code defining `raylet()`: in a pipeline on a Ray cluster of this machine, the pid of
its Ray node's raylet (its nearest raylet ancestor), which tells the Ray node it runs on."""


def raylet_pid(ray_node) -> int:
    """The pid of the raylet of a Ray node that `ray.cluster_utils.Cluster` started."""
    return ray_node.all_processes["raylet"][0].process.pid
