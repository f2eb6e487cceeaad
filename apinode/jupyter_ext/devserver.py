"""The dev server: one API node per Jupyter server, started on demand and stopped with it.

The authoring loop deploys a notebook's services to a real node, the one `apinode serve` runs in
production, so that "does my function load, do my test queries pass" is answered by the code
that will serve them. One node per Jupyter server, shared by the extension (the API designer)
and that server's kernels (`%api_dev`, the panel):

- The owner, `DevServer`, lives in the Jupyter server process. Its first `ensure()` makes a
  data directory and an admin key (`apinode admin-key-create`), starts `apinode serve` on a free
  loopback port with apinode.localnode (output to `node.log` beside the data directory), its
  code envs in the user's cache (the one of `apinode run`: $APINODE_CODE_ENVS, default
  ~/.cache/apinode/code-envs), so that an env is built once, not in every Jupyter session; learns
  its URL from the node's ready file once it listens, and writes the runtime file
  `<jupyter runtime dir>/apinode-devserver-<jupyter server pid>.json` {url, adminKey, pid, log}.
  `stop()` (for good: `ensure()` raises after it) removes the runtime file, sends SIGTERM (the
  node drains and stops its pipelines), waits, kills the node if it is still there (its
  pipelines exit when their channel to it closes), and removes the data directory. The node
  runs in a session of its own, so a Ctrl-C meant for Jupyter reaches it only through `stop`;
  a Jupyter server killed with SIGKILL cannot stop it.
- Kernels ask their Jupyter server to start the node unless it runs, then read that file
  (apinode.jupyter_ext.devclient); `find_dev_server` alone cannot tell a dead node from a
  zombie.

Concurrency: everything here blocks. The extension calls it from worker threads; `ensure` and
`stop` hold one lock, so concurrent first calls start one node and a stop waits for a start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir, secure_write

from ..client import NodeError
from ..localnode import LocalNode, NodeStartError
from ..node.interpreters import run_cache


class DevServerError(NodeError):
    """The dev server cannot be started, found or used; the message says why and what to do."""


@dataclass(frozen=True)
class DevServerInfo:
    """How to reach a running dev server: its base URL, an admin key, the node's pid, and its log
    (where the installer's output goes while a code env builds)."""

    url: str
    admin_key: str
    pid: int
    log: Path

    def to_json(self) -> dict[str, object]:
        return {"url": self.url, "adminKey": self.admin_key, "pid": self.pid, "log": str(self.log)}

    @classmethod
    def from_json(cls, value: dict[str, object]) -> DevServerInfo:
        pid = int(value["pid"])  # type: ignore[call-overload]
        return cls(str(value["url"]), str(value["adminKey"]), pid, Path(str(value["log"])))


def runtime_file(server_pid: int, runtime_dir: Path | None = None) -> Path:
    """Where the Jupyter server with pid `server_pid` says how to reach its dev server."""
    directory = runtime_dir or Path(jupyter_runtime_dir())
    return directory / f"apinode-devserver-{server_pid}.json"


def find_dev_server(server_pid: int, runtime_dir: Path | None = None) -> DevServerInfo | None:
    """The running dev server of the Jupyter server `server_pid`, if it has one."""
    try:
        info = DevServerInfo.from_json(json.loads(runtime_file(server_pid, runtime_dir).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if _alive(info.pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or a recycled pid someone else owns
        return False
    return True


class DevServer:
    """The Jupyter server's own dev server (see the module docstring)."""

    def __init__(
        self,
        server_pid: int,
        runtime_dir: Path,
        start_timeout: float,
        stop_timeout: float,
        python: str = sys.executable,
    ) -> None:
        self.runtime_file = runtime_file(server_pid, runtime_dir)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.python = python
        self._lock = threading.Lock()
        self._node: LocalNode | None = None
        self._workdir: Path | None = None
        self._info: DevServerInfo | None = None
        self._closed = False  # set by stop(): Jupyter is stopping, start no node any more

    @property
    def running(self) -> DevServerInfo | None:
        """The node's info while it runs; None before the first `ensure` or after it died."""
        node, info = self._node, self._info
        return info if node is not None and node.process.poll() is None else None

    def ensure(self) -> DevServerInfo:
        """The running node, started now if it is not (or no longer) running."""
        with self._lock:
            if self._closed:
                raise DevServerError("Jupyter is stopping: its dev server is stopped and will not start again")
            info = self.running
            if info is None:
                self._stop_locked()  # a node that died leaves its files behind
                info = self._start_locked()
            return info

    def stop(self) -> None:
        """Stop the node and remove its runtime file and data, for good: a later `ensure` raises
        (Jupyter is stopping, and a node started now would outlive it)."""
        with self._lock:
            self._closed = True
            self._stop_locked()

    def _start_locked(self) -> DevServerInfo:
        self._workdir = workdir = Path(tempfile.mkdtemp(prefix="apinode-devserver-"))
        data_dir, log_path = workdir / "data", workdir / "node.log"
        try:
            key = self._admin_key(data_dir)
        except DevServerError:
            self._stop_locked()
            raise
        try:
            self._node = LocalNode(
                "serve",
                "--data-dir",
                str(data_dir),
                "--code-envs",
                str(run_cache().root),
                "--host",
                "127.0.0.1",
                ready_timeout=self.start_timeout,
                log=log_path,
                new_session=True,  # a Ctrl-C meant for Jupyter (which asks first) is not for it
                program=(self.python, "-m", "apinode.cli"),
            )
        except NodeStartError as error:
            self._stop_locked()
            raise DevServerError(f"the dev server {error.why}:\n{error.tail}") from None
        self._info = DevServerInfo(self._node.url, key, self._node.pid, log_path)
        with secure_write(str(self.runtime_file)) as file:  # 0600: it holds the admin key
            json.dump(self._info.to_json(), file)
        return self._info

    def _admin_key(self, data_dir: Path) -> str:
        try:
            done = subprocess.run(
                [self.python, "-m", "apinode.cli", "admin-key-create", "--data-dir", str(data_dir)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.start_timeout,
            )
        except subprocess.TimeoutExpired:
            raise DevServerError(f"making the dev server's admin key took over {self.start_timeout:g} s") from None
        lines = done.stdout.split()
        if done.returncode != 0 or not lines:
            raise DevServerError(
                f"the dev server's admin key could not be made (exit "
                f"{done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
            )
        return lines[-1]

    def _stop_locked(self) -> None:
        node, workdir = self._node, self._workdir
        self._node, self._workdir, self._info = None, None, None
        self.runtime_file.unlink(missing_ok=True)
        if node is not None:
            node.stop(self.stop_timeout)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
