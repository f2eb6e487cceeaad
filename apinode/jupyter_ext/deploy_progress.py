"""Following a deploy to the dev server as it goes: its steps, and the installer's lines.

A deploy spends most of its time in the switch, where the dev server builds the code envs it
has not built yet (tens of seconds for a few packages) before loading the endpoints. The node
logs each line of the installer's output (logger `apinode.codeenvs`) to its log file, whose
path the dev server's runtime file gives (DevServerInfo.log); `follow_deploy` runs the deploy in
a worker thread and reads the lines the log gains meanwhile. Lines of code env builds that
other deploys start at the same time show too: the log does not say whose build a line is for.

Concurrency: `follow_deploy` blocks its caller until the deploy ends, and calls `on_change` on
the caller's thread only (every `POLL_SECONDS` while something changed), so a caller that owns
widgets or a display updates them from one thread. The deploy's own thread only queues steps.
"""

from __future__ import annotations

import concurrent.futures
import html
import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..packaging.staging import StagedService
from .devclient import DevDeployment, deploy_to_dev
from .devserver import DevServerInfo

POLL_SECONDS = 0.25
"""How often the log is read during a deploy: a person sees a line within a quarter second, and
reading the few bytes a log gains costs nothing."""
SHOWN_LINES = 30
"""Installer lines shown: the last screenful, where uv's or pip's progress and errors are."""
_CODE_ENV_LOGGER = " apinode.codeenvs: "  # the node's log format: "<time> <LEVEL> <logger>: <message>"


@dataclass
class DeployProgress:
    """What a deploy has done so far: its steps (the last one under way) and the installer's lines."""

    service: str
    steps: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return "\n".join([*self.steps[-1:], *self.lines[-SHOWN_LINES:]])

    def _repr_html_(self) -> str:
        return (f"<p>{html.escape(self.steps[-1])}…</p>" if self.steps else "") + self.lines_html()

    def lines_html(self) -> str:
        """The last installer lines, as a scrolling block of preformatted text (empty if none)."""
        shown = "\n".join(self.lines[-SHOWN_LINES:])
        return f'<pre style="max-height: 16em; overflow-y: auto">{html.escape(shown)}</pre>' if shown else ""


class LogTail:
    """The lines a log file gains from the moment this is made; the file may not exist yet."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._offset = path.stat().st_size
        except OSError:
            self._offset = 0
        self._partial = b""

    def new_lines(self) -> list[str]:
        """The whole lines written since the last call (a line being written waits for its end)."""
        try:
            with self.path.open("rb") as log:
                log.seek(self._offset)
                data = log.read()
        except OSError:
            return []
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        return [line.decode(errors="replace") for line in lines]


def code_env_lines(lines: list[str]) -> list[str]:
    """The messages of the node's code env logger among log lines ("code env <key>: ...")."""
    return [line.split(_CODE_ENV_LOGGER, 1)[1] for line in lines if _CODE_ENV_LOGGER in line]


def follow_deploy(
    info: DevServerInfo, staged: StagedService, on_change: Callable[[DeployProgress], None]
) -> DevDeployment:
    """deploy_to_dev, with `on_change(progress)` called on this thread as steps and installer
    lines come; the deployment, or the deploy's error."""
    progress = DeployProgress(staged.definition.id)
    steps: queue.SimpleQueue[str] = queue.SimpleQueue()
    tail = LogTail(info.log)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="apinode-deploy") as pool:
        deploying = pool.submit(deploy_to_dev, info, staged, steps.put)
        while True:
            concurrent.futures.wait([deploying], timeout=POLL_SECONDS)
            done = deploying.done()  # before reading: what the log has then is all of it
            changed = False
            while not steps.empty():
                progress.steps.append(steps.get())
                changed = True
            lines = code_env_lines(tail.new_lines())
            if lines:
                progress.lines.extend(lines)
                changed = True
            if changed:
                on_change(progress)
            if done:
                return deploying.result()
