"""The quickstart notebook, run top to bottom as a newcomer runs it: in a Jupyter server with
the apinode extension, its kernel started for the notebook the way JupyterLab starts one (a
session), so that `%api_dev` deploys to the dev server and links to the API designer; and
outside Jupyter (nbclient alone, as `jupyter nbconvert --execute`), where the dev server's cell
is skipped. Both end with the bundle `apinode build` makes of the notebook."""

from __future__ import annotations

import json
import shutil
import urllib.parse
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from support import cell_text, execute_notebook

from apinode.cli import main

pytest_plugins = ("pytest_jupyter.jupyter_server",)

pytestmark = pytest.mark.timeout(180)

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


def copy_quickstart(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(NOTEBOOKS / "quickstart.ipynb", directory)
    shutil.copytree(NOTEBOOKS / "quickstart_data", directory / "quickstart_data")
    return directory / "quickstart.ipynb"


def shown_by(cells) -> dict[str, str]:
    """What each code cell shows (results, streams, errors), by its source."""
    code = [cell for cell in cells if cell.cell_type == "code"]
    return {cell.source: cell_text(cell, "result", "stdout", "stderr", "error") for cell in code}


def outputs(cells, source: str) -> list:
    """The outputs of the cell with that source."""
    return next(cell for cell in cells if cell.source == source).outputs


def check_the_walkthrough(shown: dict[str, str], notebook: Path) -> None:
    """What both runs show: no error, the saved queries pass, the export is `apinode build`'s."""
    assert not any("Error" in output for output in shown.values()), shown
    assert shown["%api_test quickstart/score"].count("PASS") == 2
    assert shown["%api_test quickstart/score"].endswith("2 queries, all passed")
    services = shown["%api_services"].splitlines()
    assert services[1].split()[:4] == ["quickstart", "score", "score", "quickstart_data"]
    assert main(["build", str(notebook), "-o", str(notebook.parent / "built.zip")]) == 0
    assert (notebook.parent / "quickstart.zip").read_bytes() == (notebook.parent / "built.zip").read_bytes()


def test_the_quickstart_runs_top_to_bottom_outside_jupyter(tmp_path, capsys):
    notebook = copy_quickstart(tmp_path)
    cells = execute_notebook(notebook, allow_errors=False)
    shown = shown_by(cells)
    check_the_walkthrough(shown, notebook)
    assert not outputs(cells, "%api_dev quickstart")  # skipped: there is no dev server
    assert "application/vnd.jupyter.widget-view+json" in outputs(cells, "%api_panel")[0].data


async def test_the_quickstart_in_jupyter_deploys_to_the_dev_server_and_links_to_the_designer(
    jp_fetch, jp_serverapp, jp_root_dir, jp_base_url, capsys
):
    notebook = copy_quickstart(jp_root_dir / "notebooks")
    session = await jp_fetch(
        "api",
        "sessions",
        method="POST",
        body=json.dumps(
            {
                "path": "notebooks/quickstart.ipynb",
                "name": "quickstart.ipynb",
                "type": "notebook",
                "kernel": {"name": "python3"},
            }
        ),
    )
    kernel = jp_serverapp.kernel_manager.get_kernel(json.loads(session.body)["kernel"]["id"])
    cells = nbformat.read(notebook, as_version=4)
    await NotebookClient(cells, km=kernel, timeout=60, allow_errors=False, skip_cells_with_tag="").async_execute()
    shown = shown_by(cells.cells)
    check_the_walkthrough(shown, notebook)

    dev_server = jp_serverapp.web_app.settings["apinode"].dev_server.running
    assert dev_server is not None
    deployment, link = outputs(cells.cells, "%api_dev quickstart")
    assert f"service quickstart deployed to the dev server at {dev_server.url}" in deployment.data["text/plain"]
    designer = "apinode/designer?path=notebooks/quickstart.ipynb"
    assert link.data["text/plain"] == f"API designer: {jp_serverapp.connection_url}{designer}"
    assert f'href="{jp_base_url}{designer}"' in link.data["text/html"]  # from the page's origin
    assert "application/vnd.jupyter.widget-view+json" in outputs(cells.cells, "%api_panel")[0].data

    path = urllib.parse.parse_qs(urllib.parse.urlsplit(designer).query)["path"][0]
    listed = json.loads((await jp_fetch("apinode", "api", "endpoints", params={"path": path})).body)
    assert [service["id"] for service in listed["services"]] == ["quickstart"]  # the link's notebook
