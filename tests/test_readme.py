"""README's blocks run as printed: the full node's, word for word, in a scratch directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from support import eventually

REPO = Path(__file__).resolve().parent.parent


def indented_block(text: str, containing: str) -> str:
    """The README code block (lines indented by four spaces) that holds `containing`."""
    blocks, current = [], []
    for line in text.splitlines():
        if line.startswith("    "):
            current.append(line[4:])
        elif current:
            blocks.append("\n".join(current) + "\n")
            current = []
    (block,) = [block for block in blocks if containing in block]
    return block


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_full_node_block_runs_as_printed(tmp_path):
    block = indented_block((REPO / "README.md").read_text(), "apinode serve --data-dir")
    shutil.copytree(REPO / "examples", tmp_path / "examples")  # what the block reads of the repository
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("APINODE_ADMIN_KEY", None)
    shell = subprocess.Popen(
        ["bash", "-e", "-c", block],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the node it starts in the background is in this group too
    )
    try:
        out, err = shell.communicate(timeout=120)
        assert shell.returncode == 0, f"{out}\n{err}\n{(tmp_path / 'node.log').read_text()}"
        eventually(lambda: not group_alive(shell.pid), timeout=30)  # `kill $!` stopped the node
    finally:
        if group_alive(shell.pid):
            os.killpg(shell.pid, signal.SIGKILL)
    answer = json.loads(out.splitlines()[-1])  # curl's, the last thing printed
    assert answer["response"] == 0.4152
    assert answer["apiContext"]["serviceId"] == "churn"
    assert "stopped" in (tmp_path / "node.log").read_text()
