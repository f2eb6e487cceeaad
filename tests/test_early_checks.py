"""Mistakes caught before anything is served: `apinode build|run|test` check each endpoint's code
statically (packaging.code_check) for directories, notebooks and bundles; `apinode run` exits
when no endpoint loads and prints a curl line only for one that did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import SERVICES, NodeProcess, apinode, write_notebook

from apinode.packaging.bundles import write_bundle
from apinode.packaging.code_check import at_file, check_code
from apinode.packaging.definitions import DefinitionError
from apinode.packaging.staging import stage_directory


def refusal(code: str, function: str = "predict") -> str:
    with pytest.raises(DefinitionError) as raised:
        check_code(code, function, at_file("score.py"))
    return str(raised.value)


def test_a_syntax_error_is_named_with_its_line():
    assert refusal("import os\n\ndef predict(x)\n    return x\n") == (
        "score.py:3: SyntaxError: expected ':' ('def predict(x)')"
    )


def test_a_missing_function_names_what_the_code_defines():
    assert refusal("from sklearn import tree as t\n\ndef predict_proba(x):\n    pass\n\n_hidden = 1\n") == (
        "score.py:1: no function named 'predict'; it defines predict_proba, t"
    )
    assert refusal("") == "score.py:1: no function named 'predict'; it defines nothing at module level"


@pytest.mark.parametrize(
    "code",
    [
        "def predict(x):\n    pass\n",
        "async def predict(x):\n    pass\n",
        "import joblib\npredict = joblib.load('m').predict\n",
        "from model import predict\n",
        "from model import *\n",
        "try:\n    from fast import predict\nexcept ImportError:\n    def predict(x):\n        pass\n",
        "if True:\n    class predict:\n        pass\n",
        "with open('m') as predict:\n    pass\n",
        "(a, (b, predict)) = 1, (2, 3)\n",
    ],
)
def test_every_module_level_definition_counts(code):
    check_code(code, "predict", at_file("score.py"))


def service_dir(tmp_path: Path, code: str, function: str = "predict") -> Path:
    source = tmp_path / "svc"
    source.mkdir()
    (source / "score.py").write_text(code)
    endpoint = {"id": "score", "code": "score.py", "function": function}
    (source / "service.json").write_text(json.dumps({"id": "svc", "endpoints": [endpoint]}))
    return source


@pytest.mark.parametrize("command", ["build", "run", "test"])
def test_commands_refuse_a_directory_with_a_syntax_error(tmp_path, command):
    source = service_dir(tmp_path, "def predict(x):\n    return x +\n")
    extra = ["-o", str(tmp_path / "b.zip")] if command == "build" else ["--port", "0"] if command == "run" else []
    result = apinode(command, str(source), *extra, check=False)
    assert result.returncode == 1
    assert f"{source / 'score.py'}:2: SyntaxError: invalid syntax" in result.stderr
    assert not (tmp_path / "b.zip").exists()


def test_build_refuses_a_notebook_cell_without_its_function(tmp_path):
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        "import pandas",
        "%%api_endpoint svc/score --function predict\n\ndef predit(x):\n    return x\n",
    )
    result = apinode("build", str(notebook), "-o", str(tmp_path / "b.zip"), check=False)
    assert result.returncode == 1
    assert f"{notebook}: cell 2, line 2: no function named 'predict'; it defines predit" in result.stderr


def test_build_names_the_line_of_a_syntax_error_in_its_cell(tmp_path):
    notebook = write_notebook(tmp_path / "nb.ipynb", "\n%%api_endpoint svc/score --function f\nx = 1\ndef f(:\n")
    result = apinode("build", str(notebook), "-o", str(tmp_path / "b.zip"), check=False)
    assert result.returncode == 1 and f"{notebook}: cell 1, line 4: SyntaxError" in result.stderr


def test_run_refuses_a_bundle_whose_code_lacks_its_function(tmp_path):
    bundle = tmp_path / "svc.zip"
    write_bundle(stage_directory(service_dir(tmp_path, "def other():\n    pass\n")), bundle)
    result = apinode("run", str(bundle), "--port", "0", check=False)
    assert result.returncode == 1
    assert f"{bundle}:endpoints/score/score.py:1: no function named 'predict'; it defines other" in result.stderr


def test_run_exits_when_no_endpoint_loads(tmp_path):
    source = service_dir(tmp_path, "raise RuntimeError('no model file')\n\ndef predict():\n    pass\n")
    result = apinode("run", str(source), "--port", "0", check=False)
    assert result.returncode == 1
    assert "no model file" in result.stderr and "no endpoint of service 'svc' loaded" in result.stderr
    assert "curl" not in result.stdout


def test_run_prints_curl_for_a_loaded_endpoint_with_a_body_from_its_hints(tmp_path):
    source = service_dir(tmp_path, "def predict(age: int, name: str, ratio: float = 0.5):\n    return age\n")
    node = NodeProcess("run", str(source))
    try:
        node.wait_for_output("curl")
        assert '-d \'{"age":0,"name":""}\'' in node.output
        assert "documentation: " in node.output and "/public/api/v1/svc/docs" in node.output
    finally:
        node.stop()


def test_run_skips_a_failed_endpoint_in_its_curl_line():
    node = NodeProcess("run", str(SERVICES / "testsvc"))
    try:
        node.wait_for_output("curl")
        curl = node.output.split("try:\n", 1)[1].splitlines()[0]
        assert "/testsvc/add/run" in curl and '-d \'{"a":1,"b":2}\'' in curl  # its test query
    finally:
        node.stop()
