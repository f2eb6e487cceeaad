"""The dev server's life: started once on demand, found by kernels through the runtime file,
stopped with the Jupyter server, and no process left behind, whatever the node does."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path

import pytest
from support import alive, children, cmdline, eventually, write_notebook

from apinode.client import NodeClient, NodeError
from apinode.jupyter_ext.designer_link import designer_link
from apinode.jupyter_ext.devclient import deploy_to_dev, kernel_dev_server
from apinode.jupyter_ext.devserver import DevServer, DevServerError, find_dev_server
from apinode.jupyter_ext.kernel_endpoints import KernelEndpoints
from apinode.packaging.codeenvs import CodeEnvCache
from apinode.packaging.magic_syntax import parse_endpoint_magic

pytest_plugins = ("pytest_jupyter.jupyter_server",)

pytestmark = pytest.mark.timeout(120)

ECHO = "%%api_endpoint echo/say --function say\ndef say(text='hello'):\n    return text\n"
HELLO_SIX = "import six\n\ndef hello():\n    return six.__version__\n"


@pytest.fixture
def extension(jp_serverapp):
    return jp_serverapp.web_app.settings["apinode"]


async def deploy(jp_fetch, path: str) -> dict:
    response = await jp_fetch("apinode", "api", "dev", "deploy", method="POST", body=json.dumps({"path": path}))
    return json.loads(response.body)


async def test_one_dev_server_serves_every_deploy_and_kernel_then_stops_with_jupyter(
    jp_fetch, jp_serverapp, jp_root_dir, jp_runtime_dir, extension
):
    write_notebook(jp_root_dir / "echo.ipynb", ECHO)
    assert not list(jp_runtime_dir.glob("apinode-devserver-*"))  # on demand: nothing before a deploy
    first = await deploy(jp_fetch, "echo.ipynb")
    info = extension.dev_server.running
    second = await deploy(jp_fetch, "echo.ipynb")
    assert extension.dev_server.running == info  # the same node: same pid, URL and key
    assert first["devServer"] == second["devServer"] == info.url
    assert first["services"][0]["generation"] != second["services"][0]["generation"]  # reloaded

    runtime_file = jp_runtime_dir / f"apinode-devserver-{os.getpid()}.json"
    assert stat.S_IMODE(runtime_file.stat().st_mode) == 0o600  # it holds the admin key
    assert json.loads(runtime_file.read_text()) == {
        "url": info.url,
        "adminKey": info.admin_key,
        "pid": info.pid,
        "log": str(info.log),
    }
    assert find_dev_server(os.getpid()) == info  # what a kernel of this server finds
    assert await asyncio.to_thread(kernel_dev_server, os.getpid()) == info

    pipelines = children(info.pid)
    assert pipelines
    argv = cmdline(info.pid)
    data_dir = Path(argv[argv.index("--data-dir") + 1])
    assert (data_dir / "services" / "echo").is_dir()
    await jp_serverapp._cleanup()  # what Jupyter does when it stops
    assert not alive(info.pid)
    assert not [pid for pid in pipelines if alive(pid)]
    assert not runtime_file.exists()
    assert find_dev_server(os.getpid()) is None
    assert not data_dir.parent.exists()  # the dev server's data goes with it


async def test_a_kernel_asks_its_jupyter_server_to_start_the_dev_server(jp_fetch, extension):
    await jp_fetch("api", "status")  # the server listens
    assert extension.dev_server.running is None
    info = await asyncio.to_thread(kernel_dev_server, os.getpid())
    assert extension.dev_server.running == info


async def test_a_kernel_of_this_server_deploys_with_api_dev(jp_fetch, jp_serverapp, jp_root_dir, extension):
    await jp_fetch("api", "status")
    manager = jp_serverapp.kernel_manager
    kernel_id = await manager.start_kernel(kernel_name="python3", path="")
    client = manager.get_kernel(kernel_id).client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        outputs: list[str] = []

        def collect(message):
            content = message["content"]
            outputs.append(
                content.get("text")
                or content.get("data", {}).get("text/plain", "")
                or "\n".join(content.get("traceback", []))
            )

        for code in ("%load_ext apinode", ECHO, "%api_dev echo"):
            reply = await client.execute_interactive(code, output_hook=collect, timeout=60)
            assert reply["content"]["status"] == "ok", outputs
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(kernel_id, now=True)
    info = extension.dev_server.running
    assert info is not None, outputs
    shown = "".join(outputs)
    assert f"service echo deployed to the dev server at {info.url}" in shown
    assert "switching echo to generation dev-" in shown  # its steps showed as it went
    assert "say       yes" in shown
    # a kernel started without a session (no notebook): the designer, which asks for one
    assert shown.endswith(f"API designer: {jp_serverapp.connection_url}apinode/designer")


SERVER = {"url": "http://localhost:8888/x%20y/", "base_url": "/x%20y/", "root_dir": "/home/me/work"}


@pytest.mark.parametrize(
    ("session_name", "query"),
    [
        ("/home/me/work/sub dir/nb.ipynb", "?path=sub%20dir/nb.ipynb"),  # a session with a name
        ("sub/nb.ipynb", "?path=sub/nb.ipynb"),  # without one: the API path
        ("/elsewhere/nb.ipynb", ""),  # outside the root
        ("/home/me/work/Console 1-5f0c", ""),  # a console's session
        (None, ""),
    ],
)
def test_the_designer_link_names_the_kernels_notebook_when_it_knows_it(session_name, query):
    link = designer_link(SERVER, session_name)
    assert repr(link) == f"API designer: http://localhost:8888/x%20y/apinode/designer{query}"
    assert f'href="/x%20y/apinode/designer{query}"' in link._repr_html_()


async def test_a_dev_server_that_died_is_started_again(jp_fetch, jp_root_dir, extension):
    write_notebook(jp_root_dir / "echo.ipynb", ECHO)
    await deploy(jp_fetch, "echo.ipynb")
    dead = extension.dev_server.running
    pipelines = children(dead.pid)
    os.kill(dead.pid, 9)
    eventually(lambda: extension.dev_server.running is None)
    eventually(lambda: not [pid for pid in pipelines if alive(pid)])  # no orphan: they exit on EOF
    deployed = await deploy(jp_fetch, "echo.ipynb")
    assert extension.dev_server.running.pid != dead.pid
    assert deployed["services"][0]["switched"] is True


def zombie(pid: int) -> bool:
    """Whether our child `pid` exited and waits to be reaped (asked without reaping it)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None


async def test_a_kernel_does_not_take_a_dead_dev_server_for_a_running_one(jp_fetch, extension):
    await jp_fetch("api", "status")
    dead = await asyncio.to_thread(kernel_dev_server, os.getpid())
    os.kill(dead.pid, 9)
    eventually(lambda: zombie(dead.pid))
    os.kill(dead.pid, 0)  # not reaped yet: kill -0 still says it is there
    info = await asyncio.to_thread(kernel_dev_server, os.getpid())
    assert info.pid != dead.pid and info == extension.dev_server.running
    assert NodeClient(info.url, info.admin_key).create_service("x")["id"] == "x"


def test_ensure_after_stop_refuses_to_start_an_orphan(tmp_path):
    python = fake_python(tmp_path, f"{READY}; exec sleep 300")
    server = DevServer(os.getpid(), tmp_path, start_timeout=30, stop_timeout=5, python=python)
    server.stop()  # Jupyter stops before anyone used the dev server
    with pytest.raises(DevServerError, match="Jupyter is stopping"):
        server.ensure()
    assert server.running is None and not list(tmp_path.glob("apinode-devserver-*"))


# A stand-in for `python -m apinode.cli ...`: "$3" is the command, the last argument the ready file.
READY = 'for ready; do :; done; echo \'{"url": "http://127.0.0.1:9", "pid": 1}\' > "$ready"'
FAKE_PYTHON = """#!/bin/sh
case "$3" in
  admin-key-create) echo "the-key" ;;
  serve) {serve} ;;
esac
"""


def fake_python(tmp_path: Path, serve: str) -> str:
    path = tmp_path / "python"
    path.write_text(FAKE_PYTHON.format(serve=serve))
    path.chmod(0o755)
    return str(path)


def test_a_node_that_exits_at_start_is_reported_with_its_output(tmp_path):
    python = fake_python(tmp_path, 'echo "port already taken"; exit 3')
    server = DevServer(os.getpid(), tmp_path, start_timeout=30, stop_timeout=5, python=python)
    with pytest.raises(DevServerError, match=r"exited with code 3:\nport already taken"):
        server.ensure()
    assert not list(tmp_path.glob("apinode-devserver-*"))


def test_a_node_that_ignores_sigterm_is_killed(tmp_path):
    python = fake_python(tmp_path, f"trap '' TERM; {READY}; exec sleep 300")  # SIGTERM stays ignored
    server = DevServer(os.getpid(), tmp_path, start_timeout=30, stop_timeout=0.5, python=python)
    info = server.ensure()
    assert info.url == "http://127.0.0.1:9" and info.admin_key == "the-key"
    server.stop()
    assert not alive(info.pid)
    assert not (tmp_path / f"apinode-devserver-{os.getpid()}.json").exists()


def test_the_real_node_starts_and_stops_outside_jupyter(tmp_path):
    server = DevServer(os.getpid(), tmp_path, start_timeout=60, stop_timeout=10, python=sys.executable)
    info = server.ensure()
    assert server.ensure() == info
    assert find_dev_server(os.getpid(), tmp_path) == info
    server.stop()
    server.stop()  # twice is fine
    assert not alive(info.pid) and find_dev_server(os.getpid(), tmp_path) is None


def test_the_nodes_check_route_needs_the_admin_key_and_an_imported_generation(tmp_path):
    server = DevServer(os.getpid(), tmp_path, start_timeout=60, stop_timeout=10)
    info = server.ensure()
    try:
        admin = NodeClient(info.url, info.admin_key)
        admin.create_service("echo")
        with pytest.raises(NodeError) as unauthorized:
            NodeClient(info.url).check("echo", "g-nope")
        assert unauthorized.value.status == 401
        with pytest.raises(NodeError) as missing:
            admin.check("echo", "g-nope")
        assert missing.value.status == 404 and "no generation 'g-nope'" in missing.value.message
    finally:
        server.stop()


def test_dev_servers_share_the_users_code_env_cache(tmp_path, uv_path, monkeypatch):
    """Each Jupyter session has its own dev server; an env built for one is not built again."""
    cache = tmp_path / "user-cache"
    monkeypatch.setenv("APINODE_CODE_ENVS", str(cache))
    registry = KernelEndpoints(tmp_path)
    registry.register(parse_endpoint_magic("envs/hello --function hello --requirement six==1.16.0"), HELLO_SIX)
    logs = []
    for session in ("first", "second"):
        (tmp_path / session).mkdir()
        server = DevServer(os.getpid(), tmp_path / session, start_timeout=60, stop_timeout=10)
        try:
            deployment = deploy_to_dev(server.ensure(), registry.stage("envs"))
            assert deployment.switched, deployment
            logs.append(server.running.log.read_text())
        finally:
            server.stop()
    assert "building for 1 requirement" in logs[0]
    assert "building for" not in logs[1]
    assert [entry.requirements for entry in CodeEnvCache(cache).entries()] == [("six==1.16.0",)]
