"""Shared fixtures. Async tests run on pytest-jupyter's event loop (the plugin the Jupyter
extension tests need anyway)."""

import os
from pathlib import Path

import pytest
from support import SERVICES, UV, NodeProcess

pytest_plugins = ("pytest_jupyter.jupyter_core",)


@pytest.fixture(scope="session")
def datatypes_node():
    """A node running tests/services/datatypes (what functions return, hinted functions), shared
    by the results, validation and OpenAPI tests."""
    node = NodeProcess("run", str(SERVICES / "datatypes"))
    yield node
    assert node.stop() == 0


@pytest.fixture
def uv_path(monkeypatch):
    """PATH with uv on it, when this interpreter's environment has uv (code envs build faster)."""
    if UV is not None:
        monkeypatch.setenv("PATH", f"{Path(UV).parent}{os.pathsep}{os.environ['PATH']}")
    return os.environ["PATH"]


@pytest.fixture
def jp_server_config():
    """The Jupyter servers of the tests (pytest-jupyter's) run the apinode extension."""
    return {"ServerApp": {"jpserver_extensions": {"apinode": True}}}


@pytest.fixture
def jp_base_url():
    """Under a prefix with escaped characters, as a proxy may add: what catches URLs joined by hand."""
    return "/a%40b/lab%20x/"
