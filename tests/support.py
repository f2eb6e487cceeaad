"""Run a real node as a child process on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

SERVICES = Path(__file__).parent / "services"
READY = re.compile(r"^apinode: serving .* at (http://\S+)$")


class NodeProcess:
    """`apinode <command> ... --port 0`; `url` once it announced itself; its log in `output`.

    `program` replaces `python -m apinode.cli` for a baseline server that announces itself alike.
    """

    def __init__(self, *args: str, env: dict[str, str] | None = None, ready_timeout: float = 60,
                 program: tuple[str, ...] = (sys.executable, "-m", "apinode.cli")) -> None:
        self.process = subprocess.Popen(
            [*program, *args, "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self._url: str | None = None
        self._announced = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._announced.wait(ready_timeout) or self._url is None:
            self.stop()
            raise RuntimeError("the node did not start:\n" + self.output)
        self.url = self._url

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            match = READY.match(line.strip())
            if match and self._url is None:
                self._url = match.group(1)
                self._announced.set()
        self._announced.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_output(self, text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared in the node's output:\n{self.output}")
            time.sleep(0.02)

    def pipelines(self, endpoint: str | None = None) -> list[int]:
        """Pids of the node's pipeline processes (of one endpoint, `service/endpoint`)."""
        pids = []
        for child in children(self.process.pid):
            argv = cmdline(child)
            if "--endpoint" in argv and (endpoint is None or argv[argv.index("--endpoint") + 1] == endpoint):
                pids.append(child)
        return pids

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        finally:
            self._reader.join(5)


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
