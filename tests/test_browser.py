"""A real browser (Debian's chromium, driven by Playwright) on a real Jupyter server started as a
subprocess: the API designer page end to end, and `%api_panel` in JupyterLab."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import eventually, free_port, write_notebook

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BASE_URL = "/a%40b/"  # an escaped character in the prefix, as a proxy in front of Jupyter may add
SHOTS = Path("/tmp")

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"no {CHROMIUM}: the browser tests drive Debian's chromium (apt-get install chromium)",
    ),
]

ADD = "%%api_endpoint demo/add --function add\ndef add(a, b):\n    return a + b\n"
ADD_QUERIES = (
    '%%api_test_queries demo/add\n[{"name": "three", "query": {"a": 1, "b": 2}, "expected": 3},\n'
    ' {"name": "wrong", "query": {"a": 1, "b": 1}, "expected": 3}]'
)
COUNT = """%%api_endpoint demo/count --function count
import os, time

def count(n, gate):
    for i in range(n):
        yield {"i": i}
        deadline = time.monotonic() + 60
        while i == 0 and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
"""
BROKEN = "%%api_endpoint demo/broken --function f\nimport no_such_module_here\n\ndef f():\n    return 1\n"


@contextmanager
def jupyter(tmp_path: Path, app: str) -> Iterator[tuple[str, str]]:
    """`python -m <app>` (jupyter_server, jupyterlab) with the extension, on a free loopback port,
    in Jupyter directories of its own; yields (its URL, its token); stops it with SIGTERM, as a
    user's Ctrl-C would, and checks that its dev server went with it."""
    runtime = tmp_path / "runtime"
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    token = secrets.token_hex(16)
    with (tmp_path / f"{app}.log").open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                app,
                "--no-browser",
                "--allow-root",
                "--ip=127.0.0.1",
                f"--port={free_port()}",
                "--port-retries=0",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={tmp_path / 'root'}",
                f"--ServerApp.base_url={BASE_URL}",
                '--ServerApp.jpserver_extensions={"apinode": True}',
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        info = runtime / f"jpserver-{process.pid}.json"
        eventually(lambda: info.exists() or process.poll() is not None, timeout=60, interval=0.1)
        assert process.poll() is None, (tmp_path / f"{app}.log").read_text()
        yield json.loads(info.read_text())["url"], token
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert not list(runtime.glob("apinode-devserver-*")), "the dev server outlived Jupyter"


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_the_designer_deploys_shows_load_status_plays_and_downloads(tmp_path, browser):
    root = tmp_path / "root"
    (root / "work").mkdir(parents=True)
    write_notebook(root / "work" / "demo.ipynb", ADD, ADD_QUERIES, BROKEN)
    with jupyter(tmp_path, "jupyter_server") as (url, token):
        page = browser.new_page(viewport={"width": 1200, "height": 900}, accept_downloads=True)
        page.set_default_timeout(30_000)
        page_errors: list[str] = []
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        page.goto(f"{url}apinode/designer?token={token}&path=work/demo.ipynb")
        page.wait_for_selector('[data-service="demo"]')
        assert "token" not in page.url  # the page drops the token from the address bar
        assert page.locator('tr[data-endpoint="demo/broken"] .load').inner_text() == "not deployed yet"

        page.click("#deploy")
        broken = page.locator('tr[data-endpoint="demo/broken"] .load.bad')
        broken.wait_for()
        assert "no_such_module_here" in broken.inner_text()
        assert page.locator('tr[data-endpoint="demo/add"] .load').inner_text() == "✓ loads"
        assert "NOT switched" in page.locator("#status").inner_text()

        gate = tmp_path / "gate"
        count_query = {"name": "counts", "query": {"n": 3, "gate": str(gate)}, "expected": [{"i": i} for i in range(3)]}
        count_queries = f"%%api_test_queries demo/count\n{json.dumps([count_query])}"
        write_notebook(root / "work" / "demo.ipynb", ADD, ADD_QUERIES, COUNT, count_queries)  # the author fixes it
        page.click("#open")
        page.wait_for_selector('tr[data-endpoint="demo/broken"]', state="detached")
        page.click("#deploy")
        page.wait_for_selector('tr[data-endpoint="demo/add"] .load.ok')
        page.click('button.play[data-endpoint="demo/add"]')
        page.wait_for_selector("#results tr[data-query='wrong']")
        assert page.locator("#results tr[data-query='three'] td").all_inner_texts()[-1] == "PASS"
        assert page.locator("#results tr[data-query='wrong'] td").all_inner_texts()[-1] == "FAIL"
        assert "2 queries, 1 FAILED" in page.locator("#results caption").inner_text()

        # a generator's items show as they arrive: the first while the generator waits for the gate
        page.wait_for_selector('tr[data-endpoint="demo/count"] .load.ok')
        page.click('button.play[data-endpoint="demo/count"]')
        page.wait_for_selector("#items li.item")
        assert page.locator("#items li.item").all_inner_texts() == ['{"i":0}']
        assert page.locator("#results tr[data-query='counts']").count() == 0  # the play goes on
        gate.touch()
        page.wait_for_selector("#results tr[data-query='counts']")
        assert page.locator("#items li.item").all_inner_texts() == ['{"i":0}', '{"i":1}', '{"i":2}']
        assert page.locator("#results tr[data-query='counts'] td").all_inner_texts()[-1] == "PASS"
        page.screenshot(path=str(SHOTS / "apinode-designer.png"), full_page=True)

        with page.expect_download() as download:
            page.click('[data-service="demo"] a.bundle')
        assert download.value.suggested_filename.startswith("demo-g-")
        assert page_errors == []


def test_api_panel_in_jupyterlab_plays_queries_and_deploys_and_api_dev_links_to_the_designer(tmp_path, browser):
    root = tmp_path / "root"
    (root / "work").mkdir(parents=True)
    notebook = write_notebook(
        root / "work" / "panel.ipynb", "%load_ext apinode", ADD, ADD_QUERIES, "%api_dev demo", "%api_panel"
    )
    content = json.loads(notebook.read_text())
    content["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.write_text(json.dumps(content))
    with jupyter(tmp_path, "jupyterlab") as (url, token):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(f"{url}lab/tree/work/panel.ipynb?token={token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell")
        # Idle in the status bar once the kernel is connected; cells run earlier are dropped.
        page.locator(".jp-StatusBar-Widget").get_by_text("Python 3 (ipykernel) | Idle").wait_for()
        page.get_by_role("menuitem", name="Run").click()
        page.get_by_text("Run All Cells", exact=True).click()
        play = page.get_by_role("button", name="Play test queries")
        play.wait_for()

        play.click()
        page.get_by_role("caption").filter(has_text="demo/add in the kernel: 2 queries, 1 FAILED").wait_for()
        page.get_by_role("button", name="Deploy to dev server").click()
        page.locator(".jupyter-widgets p").filter(has_text="service demo deployed to the dev server").wait_for()
        page.get_by_role("button", name="on the dev server").click()
        play.click()
        page.get_by_role("caption").filter(has_text="demo/add on the dev server: 2 queries, 1 FAILED").wait_for()
        results = page.locator(".jupyter-widgets table").last
        assert results.get_by_text("PASS", exact=True).count() == 1
        assert results.get_by_text("FAIL", exact=True).count() == 1
        page.locator(".jp-OutputArea-output .widget-vbox").last.scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "apinode-panel.png"))

        # %api_dev's link: the designer, on the notebook JupyterLab started the kernel for
        designer = "apinode/designer?path=work/panel.ipynb"
        link = page.locator(f'a[href="{BASE_URL}{designer}"]')
        assert link.inner_text() == f"{url}{designer}"
        with page.context.expect_page() as opened:
            link.click()
        opened.value.wait_for_selector('tr[data-endpoint="demo/add"]')
