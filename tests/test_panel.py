"""`%api_panel` driven headless: construct it over a registry, click its buttons, read its widgets."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time

import pytest
from support import eventually

from apinode.jupyter_ext.deploy_progress import LogTail, code_env_lines
from apinode.jupyter_ext.devserver import DevServer, DevServerError
from apinode.jupyter_ext.kernel_endpoints import KernelEndpoints
from apinode.jupyter_ext.kernel_queries import run_queries
from apinode.jupyter_ext.panel import ApiPanel
from apinode.packaging.codeenvs import env_key, normalize_requirements
from apinode.packaging.filelock import locked
from apinode.packaging.magic_syntax import MagicUsageError, parse_endpoint_magic

pytestmark = pytest.mark.timeout(60)

QUERIES = [
    {"name": "three", "query": {"a": 1, "b": 2}, "expected": 3},
    {"name": "wrong", "query": {"a": 1, "b": 1}, "expected": 3},
]


COUNT = """import os, time

def count(n, gate):
    for i in range(n):
        yield {"i": i}
        deadline = time.monotonic() + 30
        while i == 0 and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
"""


def register_count(registry: KernelEndpoints, gate) -> None:
    """calc/count: a generator that waits for the file `gate` after its first item."""
    registry.register(parse_endpoint_magic("calc/count --function count"), COUNT)
    query = {"name": "counts", "query": {"n": 3, "gate": str(gate)}, "expected": [{"i": 0}, {"i": 1}, {"i": 2}]}
    registry.set_test_queries("calc", "count", json.dumps([query]))


def play_streamed(panel: ApiPanel, gate) -> None:
    """Play calc/count: its first item shows while the generator waits for `gate`, then the table."""
    panel.endpoint.value = ("calc", "count")
    playing = threading.Thread(target=panel.play_button.click)
    playing.start()
    try:
        eventually(lambda: "1 items so far" in panel.results.value, timeout=30)
        assert "counts" in panel.results.value and "{&quot;i&quot;: 0}" in panel.results.value
    finally:
        gate.touch()
        playing.join(timeout=30)
    assert errors(panel) == "" and not playing.is_alive()
    assert ">PASS<" in panel.results.value and "1 query, all passed" in panel.status.value


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory):
    server = DevServer(os.getpid(), tmp_path_factory.mktemp("runtime"), start_timeout=60, stop_timeout=10)
    yield server
    server.stop()


@pytest.fixture
def registry(tmp_path):
    registry = KernelEndpoints(tmp_path)
    registry.register(parse_endpoint_magic("calc/add --function add"), "def add(a, b):\n    return a + b\n")
    registry.set_test_queries("calc", "add", json.dumps(QUERIES))
    registry.register(
        parse_endpoint_magic("calc/broken --function f"), "import no_such_module_here\n\ndef f():\n    pass\n"
    )
    return registry


@pytest.fixture
def panel(registry, dev_server):
    return ApiPanel(registry, dev_server=dev_server.ensure)


def deploy(panel: ApiPanel) -> None:
    """Click Deploy, and wait for the deploy it starts in the background."""
    panel.deploy_button.click()
    panel.background.join(timeout=60)
    assert not panel.background.is_alive()


def errors(panel: ApiPanel) -> str:
    return "".join(output["text"] for output in panel.errors.outputs)


def test_it_lists_the_kernels_endpoints_and_shows_the_selected_ones_queries(panel):
    assert [label for label, _ in panel.endpoint.options] == ["calc/add", "calc/broken"]
    assert panel.endpoint.value == ("calc", "add")
    assert json.loads(panel.queries.value) == QUERIES
    assert "2 test queries" in panel.queries_status.value and not panel.play_button.disabled
    panel.endpoint.value = ("calc", "broken")
    assert json.loads(panel.queries.value) == [] and "0 test queries" in panel.queries_status.value


def test_queries_are_checked_as_you_type(panel):
    panel.queries.value = '[{"name": "x", "query": {"a": 1'
    assert "not valid JSON" in panel.queries_status.value and panel.play_button.disabled
    panel.queries.value = '[{"query": {"a": 1}}]'
    assert "[0].name" in panel.queries_status.value and panel.play_button.disabled
    panel.queries.value = '[{"name": "x", "query": {"a": 1, "b": 1}}]'
    assert "1 test queries" in panel.queries_status.value and not panel.play_button.disabled


def test_play_in_the_kernel_saves_the_edited_queries_and_shows_the_results(panel, registry):
    panel.queries.value = json.dumps([*QUERIES, {"name": "missing b", "query": {"a": 1}}])
    panel.play_button.click()
    assert errors(panel) == ""
    assert (panel.progress.value, panel.progress.max) == (3, 3)
    table = panel.results.value
    assert table.count("<tr>") == 4  # a header and three queries
    assert "three" in table and "PASS" in table and "missing parameter" in table
    assert "3 queries, 2 FAILED" in panel.status.value
    assert [q.name for q in registry.registration("calc", "add").test_queries] == ["three", "wrong", "missing b"]
    assert not panel.play_button.disabled and not panel.deploy_button.disabled


def test_play_in_the_kernel_shows_a_generators_items_as_they_arrive(panel, registry, tmp_path):
    register_count(registry, tmp_path / "gate")
    panel.refresh()
    play_streamed(panel, tmp_path / "gate")


def test_deploy_shows_which_functions_load_then_play_on_the_dev_server(panel, registry, tmp_path):
    panel.where.value = "dev server"
    panel.play_button.click()
    assert errors(panel) == "the dev server serves nothing of service 'calc' yet: deploy it first\n"

    deploy(panel)
    assert errors(panel) == ""
    assert "NOT switched: broken did not load" in panel.status.value
    assert "serves nothing of it yet" in panel.status.value  # the first deploy: nothing served before
    assert "no_such_module_here" in panel.loads.value and "ModuleNotFoundError" in panel.loads.value

    registry.register(parse_endpoint_magic("calc/broken --function f"), "def f():\n    return 1\n")
    register_count(registry, tmp_path / "gate")
    deploy(panel)
    assert "deployed to the dev server" in panel.status.value
    assert panel.loads.value.count(">yes<") == 3

    panel.play_button.click()
    assert errors(panel) == ""
    assert (panel.progress.value, panel.progress.max) == (2, 2)
    assert "on the dev server: 2 queries, 1 FAILED" in panel.status.value
    assert ">PASS<" in panel.results.value and ">FAIL<" in panel.results.value
    panel.refresh()
    play_streamed(panel, tmp_path / "gate")  # streamed from the dev server as server-sent events
    panel.endpoint.value = ("calc", "add")

    registry.register(
        parse_endpoint_magic("calc/broken --function f"), "import no_such_module_here\n\ndef f():\n    pass\n"
    )
    deploy(panel)
    assert "did not load; the dev server at" in panel.status.value
    assert "still serves its generation dev-" in panel.status.value


def test_refresh_finds_new_endpoints_and_keeps_the_selection(panel, registry):
    panel.endpoint.value = ("calc", "broken")
    registry.register(parse_endpoint_magic("calc/sub --function sub"), "def sub(a, b):\n    return a - b\n")
    panel.refresh_button.click()
    assert [label for label, _ in panel.endpoint.options] == ["calc/add", "calc/broken", "calc/sub"]
    assert panel.endpoint.value == ("calc", "broken")


def test_refresh_keeps_the_queries_being_edited(registry):
    panel = ApiPanel(registry)
    edited = '[{"name": "mine", "query": {"a": 5, "b": 5}}]'
    panel.queries.value = edited
    registry.register(parse_endpoint_magic("calc/sub --function sub"), "def sub(a, b):\n    return a - b\n")
    panel.refresh_button.click()
    assert panel.endpoint.value == ("calc", "add") and panel.queries.value == edited
    assert "1 test queries" in panel.queries_status.value and not panel.play_button.disabled
    panel.endpoint.value = ("calc", "sub")  # another endpoint: its own queries
    assert json.loads(panel.queries.value) == []
    registry.set_test_queries("calc", "sub", json.dumps(QUERIES[:1]))
    panel.refresh()  # unedited: shows what the kernel now has
    assert json.loads(panel.queries.value) == QUERIES[:1]


def test_errors_land_in_the_output_widget_one_line_or_a_traceback(registry):
    def no_dev_server():
        raise DevServerError("no dev server: this kernel's Jupyter server has no apinode extension")

    panel = ApiPanel(registry, dev_server=no_dev_server)
    deploy(panel)
    assert errors(panel) == "no dev server: this kernel's Jupyter server has no apinode extension\n"
    assert "failed" in panel.status.value and not panel.deploy_button.disabled

    def bug():
        raise ZeroDivisionError("oops")

    panel = ApiPanel(registry, dev_server=bug)
    deploy(panel)
    assert "Traceback (most recent call last)" in errors(panel) and "ZeroDivisionError: oops" in errors(panel)
    panel.play_button.click()  # the next click starts with a clean slate
    assert "Traceback" not in errors(panel)

    def usage():  # what the magics show as one line, the panel does too
        raise MagicUsageError("expected SERVICE/ENDPOINT; usage: ...")

    panel = ApiPanel(registry, dev_server=usage)
    deploy(panel)
    assert errors(panel) == "expected SERVICE/ENDPOINT; usage: ...\n"


def test_an_empty_kernel_says_what_to_do(tmp_path):
    panel = ApiPanel(KernelEndpoints(tmp_path), dev_server=lambda: None)
    assert panel.endpoint.options == () and panel.play_button.disabled
    assert "run a %%api_endpoint cell" in panel.status.value
    panel.deploy_button.click()
    assert "no endpoint selected" in errors(panel)


@contextlib.contextmanager
def built_elsewhere(lock, longest: float = 20):
    """Hold a code env's build lock in another thread, as another node building that env would,
    until the block ends (or `longest` seconds: a deploy that blocks the test cannot hang it)."""
    taken, release = threading.Event(), threading.Event()

    def hold():
        with locked(lock):
            taken.set()
            release.wait(longest)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert taken.wait(10)
    try:
        yield
    finally:
        release.set()
        holder.join(10)


@pytest.mark.timeout(180)
def test_deploy_runs_in_the_background_showing_the_installers_lines(tmp_path, registry, uv_path, monkeypatch):
    cache = tmp_path / "user-cache"
    monkeypatch.setenv("APINODE_CODE_ENVS", str(cache))
    (tmp_path / "runtime").mkdir()
    server = DevServer(os.getpid(), tmp_path / "runtime", start_timeout=60, stop_timeout=10)
    registry.register(
        parse_endpoint_magic("slow/version --function version --requirement six==1.16.0"),
        "import six\n\ndef version():\n    return six.__version__\n",
    )
    panel = ApiPanel(registry, dev_server=server.ensure)
    panel.endpoint.value = ("slow", "version")
    cache.mkdir()
    try:
        with built_elsewhere(cache / f"{env_key(normalize_requirements(['six==1.16.0']))}.lock"):
            started = time.monotonic()
            panel.deploy_button.click()
            assert time.monotonic() - started < 5  # the click returns at once...
            assert panel.background.is_alive() and panel.deploy_button.disabled
            assert run_queries(registry, "calc", "add").results[0].passed  # ...and the kernel runs a cell
            eventually(lambda: "waiting: another process is building" in panel.build_log.value, timeout=60)
            assert "switching slow to generation" in panel.status.value  # shown while it waits
            assert (panel.progress.value, panel.progress.max) == (3, 4)
        panel.background.join(timeout=120)
        assert not panel.background.is_alive()
    finally:
        server.stop()
    assert errors(panel) == ""
    assert "service slow deployed to the dev server" in panel.status.value
    assert (panel.progress.value, panel.progress.max) == (4, 4)
    lines = panel.build_log.value
    assert "building for 1 requirement" in lines and "built in" in lines
    assert re.search(r"Installed 1 package|Successfully installed six-1\.16\.0", lines), lines  # uv or pip
    assert not panel.deploy_button.disabled and not panel.play_button.disabled


def test_the_log_tail_gives_the_code_env_lines_written_since_it_started_whole(tmp_path):
    log = tmp_path / "node.log"
    log.write_text("t INFO apinode.codeenvs: code env k: an earlier build\n")
    tail, unborn = LogTail(log), LogTail(tmp_path / "later.log")
    assert tail.new_lines() == [] and unborn.new_lines() == []
    with log.open("a") as out:
        out.write("t INFO apinode.codeenvs: code env k: Resolved 1 package\nt INFO apinode.pool: x\n")
        out.write("t INFO apinode.codeenvs: code env k: Insta")  # a line being written
    assert code_env_lines(tail.new_lines()) == ["code env k: Resolved 1 package"]
    with log.open("a") as out:
        out.write("lled 1 package\n")
    assert code_env_lines(tail.new_lines()) == ["code env k: Installed 1 package"]
    (tmp_path / "later.log").write_text("t INFO apinode.codeenvs: code env k: first\n")
    assert code_env_lines(unborn.new_lines()) == ["code env k: first"]
