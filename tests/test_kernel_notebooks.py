"""The magics in a real kernel (nbclient + ipykernel): notebooks run top to bottom, cell outputs
checked. One kernel per notebook: the scenario notebook runs once for the whole module."""

from __future__ import annotations

import re

import nbformat
import pytest
from support import cell_text, execute_notebook

from apinode.cli import main

SCENARIO = {
    "load": "%load_ext apinode",
    "global": "OFFSET = 10",
    "add": "%%api_endpoint t/add --function add\ndef add(a, b):\n    return a + b",
    "call add": "add(1, 2)",
    "test add": '%api_test t/add {"a": 1, "b": 2}',
    "test add missing b": '%api_test t/add {"a": 1}',
    "shift": "%%api_endpoint t/shift --function shift\ndef shift(x):\n    return x + OFFSET",
    "call shift": "shift(1)",
    "test shift": '%api_test t/shift {"x": 1}',
    "word": "%%api_endpoint t/word --function word --folder data --ceil 2\n"
    "with open(folders[0] + '/word.txt') as file:\n    WORD = file.read().strip()\n\n\n"
    "def word():\n    return WORD\n",
    "test word": "%api_test t/word {}",
    "scaled": "def scaled(x):\n    return x * OFFSET",
    "line form refused": "%api_endpoint t2/scaled scaled",
    "line form": 'def double(x):\n    return 2 * x\n\n%api_endpoint t2/double double\n%api_test t2/double {"x": 21}',
    "queries": '%%api_test_queries t/add\n[{"name": "three", "query": {"a": 1, "b": 2}, '
    '"expected": 3},\n {"name": "wrong", "query": {"a": 1, "b": 1}, "expected": 3},\n'
    ' {"name": "close", "query": {"a": 0.1, "b": 0.2}, "expected": 0.3}]',
    "test saved": "%api_test t/add",
    # Called as the magic syntax expands, so that `apinode build` does not read these cells.
    "bad option": "get_ipython().run_cell_magic('api_endpoint', 't/add --function add --ceil 0', 'x')",
    "bad queries": "get_ipython().run_cell_magic('api_test_queries', 't/add', '[{\"query\": {}}]')",
    "async": "%%api_endpoint t/later --function later\nimport asyncio\n\nasync def later(x):\n"
    "    await asyncio.sleep(0.01)\n    return {'x': x, 'loop': id(asyncio.get_running_loop())}",
    "test async": '%api_test t/later {"x": 5}',
    "test async again": '%api_test t/later {"x": 6}',
    "generator": "%%api_endpoint t/tokens --function tokens\nasync def tokens(text):\n    for word in text.split():\n"
    "        yield word",
    "test generator": '%api_test t/tokens {"text": "a b c"}',
    "batched": "%%api_endpoint t/doubled --function doubled --batch-size 8 --batch-wait-ms 5\n"
    "def doubled(batch):\n    return [2 * params['x'] for params in batch]",
    "test batched": '%api_test t/doubled {"x": 21}',
    "services": "%api_services",
    "export": "%api_export t -o t.zip",
}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    directory = tmp_path_factory.mktemp("scenario")
    (directory / "data").mkdir()
    (directory / "data" / "word.txt").write_text("hello\n")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in SCENARIO.values()]
    nbformat.write(notebook, directory / "nb.ipynb")
    cells = dict(zip(SCENARIO, execute_notebook(directory / "nb.ipynb", allow_errors=True)))
    return directory, cells


def test_an_endpoint_cell_runs_in_the_kernel_and_a_query_passes(scenario):
    _, cells = scenario
    assert cell_text(cells["call add"], "result") == "3"
    shown = cells["test add"].outputs[0]
    assert "<table" in shown.data["text/html"] and "OK" in shown.data["text/html"]
    lines = shown.data["text/plain"].splitlines()
    assert lines[1].split() == ["add", "query", "200", lines[1].split()[3], "3", "OK"]
    assert lines[-1] == "t/add in the kernel: 1 query, all passed"


def test_a_failing_query_shows_what_the_node_would_answer(scenario):
    shown = cell_text(scenario[1]["test add missing b"], "result")
    assert "400" in shown and "InvalidParameters: missing parameter 'b'" in shown
    assert "FAIL" in shown and shown.endswith("1 query, 1 FAILED")


def test_queries_run_in_a_fresh_namespace(scenario):
    _, cells = scenario
    assert cell_text(cells["call shift"], "result") == "11"  # the notebook has OFFSET ...
    shown = cell_text(cells["test shift"], "result")  # ... the endpoint's own module does not
    assert "500" in shown and "FunctionError: the function raised NameError" in shown
    assert "traceback of shift 'query'" in shown and "return x + OFFSET" in shown
    assert "NameError: name 'OFFSET' is not defined" in shown


def test_an_async_function_is_awaited_on_one_loop_kept_across_calls(scenario):
    first, again = (cell_text(scenario[1][name], "result") for name in ("test async", "test async again"))
    assert "200" in first and '"x": 5' in first and "OK" in first
    assert '"x": 6' in again
    loop_ids = [re.search(r'"loop": (\d+)', shown).group(1) for shown in (first, again)]
    assert loop_ids[0] == loop_ids[1]


def test_a_generator_shows_its_items(scenario):
    shown = cell_text(scenario[1]["test generator"], "result")
    assert "200" in shown and '["a", "b", "c"]' in shown and "OK" in shown


def test_a_batched_endpoint_takes_each_query_as_a_batch_of_one(scenario):
    shown = cell_text(scenario[1]["test batched"], "result")
    assert "200" in shown and "42" in shown and "OK" in shown


def test_folders_are_relative_to_the_notebook(scenario):
    shown = cell_text(scenario[1]["test word"], "result")
    assert '"hello"' in shown and "OK" in shown


def test_the_line_form_refuses_a_function_that_uses_notebook_globals(scenario):
    cell = scenario[1]["line form refused"]
    error = cell_text(cell, "stderr")
    assert error.startswith("UsageError: scaled uses OFFSET, which its source does not define")
    assert "%%api_endpoint SERVICE/ENDPOINT --function scaled" in error
    assert error.count("\n") == 1 and "Traceback" not in error


def test_the_line_form_registers_a_standalone_function(scenario):
    shown = cell_text(scenario[1]["line form"], "result", "stderr")
    assert shown.splitlines()[1].split()[:3] == ["double", "query", "200"]
    assert shown.splitlines()[1].split()[-2:] == ["42", "OK"]


def test_saved_queries_pass_and_fail_against_expected(scenario):
    shown = cell_text(scenario[1]["test saved"], "result")
    rows = {line.split()[1]: line.split() for line in shown.splitlines()[1:4]}
    assert rows["three"][-3:] == ["3", "3", "PASS"]
    assert rows["wrong"][-3:] == ["2", "3", "FAIL"]
    assert rows["close"][-1] == "PASS"  # 0.1 + 0.2 is 0.30000000000000004
    assert shown.endswith("t/add in the kernel: 3 queries, 1 FAILED")


@pytest.mark.parametrize(
    "name, message",
    [
        ("bad option", "UsageError: pool.ceil: expected an integer >= 1, got 0; usage: %%api_endpoint"),
        ("bad queries", "UsageError: %%api_test_queries t/add: testQueries[0].name: expected a non-empty string"),
    ],
)
def test_mistakes_are_one_line_usage_errors(scenario, name, message):
    error = cell_text(scenario[1][name], "stderr")
    assert error.startswith(message) and error.count("\n") == 1


def test_services_lists_the_registrations(scenario):
    shown = cell_text(scenario[1]["services"], "result")
    assert shown.splitlines()[0].split() == [
        "service",
        "endpoint",
        "function",
        "folders",
        "requirements",
        "pool",
        "pipelines",
        "test",
        "queries",
        "documentation",
    ]
    assert [line.split()[:3] for line in shown.splitlines()[1:]] == [
        ["t", "add", "add"],
        ["t", "shift", "shift"],
        ["t", "word", "word"],
        ["t", "later", "later"],
        ["t", "tokens", "tokens"],
        ["t", "doubled", "doubled"],
        ["t2", "double", "double"],
    ]
    assert "floor=1 ceil=2 cruise=2 queue=16 timeout=10000" in shown
    assert "/public/api/v1/t2/docs" in shown


def test_export_is_the_bundle_apinode_build_makes(scenario, capsys):
    directory, cells = scenario
    assert cell_text(cells["export"], "result").startswith("service 't', generation g-")
    assert main(["build", str(directory / "nb.ipynb"), "-o", str(directory / "built.zip")]) == 0
    assert (directory / "t.zip").read_bytes() == (directory / "built.zip").read_bytes()
