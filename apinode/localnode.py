"""Start a node as a child process, and know from a machine-readable signal when it serves.

The child is the command users run (`apinode run SOURCE` or `apinode serve --data-dir DIR`)
with `--port 0 --ready-file PATH`: once it listens (its services loaded, its port bound), the
node writes `{"url": ..., "pid": ...}` to PATH, as a temporary file renamed into place, so a
reader sees the whole file or none. Nothing reads the lines it prints for people.

`apinode test` (without --url), the dev server and the tests start nodes with `LocalNode`. Its
output goes to a log file (never a pipe, which could fill up and block the node); a child that
exits before it is ready, or is not ready in time, is a NodeStartError with its exit code and
the end of that log.

Concurrency: everything here blocks the calling thread. Starting polls for the ready file at
short intervals while waiting on the child, up to a deadline; `stop` sends SIGTERM (the node
drains and stops its pipelines), waits, then SIGKILL (its pipelines exit when their channel to
it closes), and reaps the child.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .client import NodeError

READY_FILE_OPTION = "--ready-file"
NODE_PROGRAM = (sys.executable, "-m", "apinode.cli")
START_TIMEOUT = 60.0
"""Seconds a node may take to be ready: its services load and their floor pipelines start."""
STOP_TIMEOUT = 30.0
"""Seconds a node may take to drain after SIGTERM before it is killed."""
_POLL_INTERVAL = 0.02
_TAIL_LINES = 20


class NodeStartError(NodeError):
    """A node that exited before it was ready, or was not ready in time; `why` says which and
    `tail` is the end of its output."""

    def __init__(self, why: str, tail: str) -> None:
        super().__init__(f"the node {why}:\n{tail}")
        self.why = why
        self.tail = tail


def write_ready_file(path: Path, url: str) -> None:
    """Say that this process serves at `url`: `{"url", "pid"}` in `path`, written atomically."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    os.replace(temporary, path)


def read_ready_file(path: Path) -> dict[str, Any] | None:
    """What a node wrote in its ready file; None while there is none."""
    try:
        ready = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    if not isinstance(ready, dict) or not isinstance(ready.get("url"), str):
        raise NodeError(f'{path}: expected {{"url": ..., "pid": ...}}, found {ready!r}')
    return ready


class LocalNode:
    """`program *args --port 0 --ready-file PATH` as a child process; ready once constructed.

    `url` is where it serves, `process` the child, `output` its log so far (in `log`, by
    default in a temporary directory that `stop` removes, keeping the output in memory).
    `new_session` keeps a Ctrl-C meant for the parent away from the node.
    """

    def __init__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = START_TIMEOUT,
        log: Path | None = None,
        new_session: bool = False,
        program: Sequence[str] = NODE_PROGRAM,
    ) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="apinode-node-"))
        self._stopped_output: str | None = None
        self.log = log or self._workdir / "node.log"
        ready_file = self._workdir / "ready.json"
        try:
            with self.log.open("wb") as output:
                self.process = subprocess.Popen(
                    [*program, *args, "--port", "0", READY_FILE_OPTION, str(ready_file)],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=None if env is None else {**os.environ, **env},
                    start_new_session=new_session,
                )
        except BaseException:  # no child: nothing to stop, only the directory to remove
            shutil.rmtree(self._workdir, ignore_errors=True)
            raise
        try:
            ready = self._wait_ready(ready_file, ready_timeout)
        except BaseException:
            self.stop()
            raise
        self.url: str = ready["url"]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        """Everything the node printed so far (all of it, once stopped)."""
        if self._stopped_output is not None:
            return self._stopped_output
        return self.log.read_text(errors="replace")

    def _wait_ready(self, ready_file: Path, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            ready = read_ready_file(ready_file)
            if ready is not None:
                return ready
            try:
                code = self.process.wait(_POLL_INTERVAL)
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    raise NodeStartError(f"was not ready within {timeout:g} s", self._tail()) from None
                continue
            ready = read_ready_file(ready_file)  # it may have written it, then exited cleanly
            if ready is not None and code == 0:  # not a node killed once ready: that one is gone
                return ready
            raise NodeStartError(f"exited with code {code}", self._tail())

    def _tail(self) -> str:
        return "\n".join(self.output.splitlines()[-_TAIL_LINES:]) or "no output"

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """Stop the node (SIGTERM, then SIGKILL after `timeout` seconds); its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if self._stopped_output is None:
            self._stopped_output = self.output
            shutil.rmtree(self._workdir, ignore_errors=True)
        return code

    def __enter__(self) -> LocalNode:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
