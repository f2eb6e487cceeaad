"""What data scientists return, encoded alike by a real node and by `%api_test` in a real kernel
(tests/services/datatypes/results.py returns one kind of value per call)."""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

import nbformat
import pytest
import requests
from support import SERVICES, cell_text, execute_notebook

from apinode.runtime import results
from apinode.runtime.invoke import Invoker

SERVICE = SERVICES / "datatypes"
ENCODED = {
    "numpy_int": 3,
    "numpy_float": 0.5,
    "numpy_bool": True,
    "numpy_array": [[1, 2], [3, 4]],
    "series": {"a": 1.0, "b": None},
    "dataframe": [{"x": 1, "y": 0.5, "t": "2024-01-02T03:04:05"}, {"x": 2, "y": None, "t": None}],
    "timestamp": "2024-01-02T03:04:05+00:00",
    "datetime": "2024-01-02T03:04:05",
    "date": "2024-01-02",
    "time": "03:04:05",
    "decimal": 1.25,
    "uuid": "00000000-0000-0000-0000-000000000001",
    "set": [1, 2, 3],
    "dataclass": {"x": 1.5, "y": 2.0},
    "pydantic": {"name": "ada", "tags": ["x"]},
    "enum": "red",
    "nested": {"prediction": 0.25, "when": "2024-01-02", "ids": ["00000000-0000-0000-0000-000000000002"]},
}
OPAQUE_AT = 'response["a"][1] is a apinode_endpoint_datatypes_give.Opaque'


@pytest.fixture(scope="module")
def node(datatypes_node):
    return datatypes_node


def give(node, kind):
    return requests.post(f"{node.url}/public/api/v1/datatypes/give/run", json={"kind": kind}, timeout=30)


@pytest.mark.parametrize("kind", ENCODED)
def test_each_kind_through_a_node(node, kind):
    response = give(node, kind)
    assert response.status_code == 200, response.text
    assert response.json()["response"] == ENCODED[kind]


def test_what_cannot_be_encoded_is_named_with_its_path(node):
    response = give(node, "opaque")
    assert response.status_code == 500
    body = response.json()
    assert body["errorType"] == "ResultNotSerializable"
    assert OPAQUE_AT in body["message"] and "convert it" in body["message"]


@pytest.fixture(scope="module")
def kernel_answers(tmp_path_factory):
    """Every kind played with `%api_test` in a real kernel: {kind: [status, answer]}."""
    directory = tmp_path_factory.mktemp("kernel")
    code = (SERVICE / "results.py").read_text()
    kinds = [*ENCODED, "opaque"]
    play = (
        "import json\nanswers = {}\n"
        f"for kind in {kinds!r}:\n"
        "    report = get_ipython().run_line_magic('api_test', 'datatypes/give ' + json.dumps({'kind': kind}))\n"
        "    answers[kind] = [report.results[0].status, report.results[0].answer]\n"
        "print(json.dumps(answers))"
    )
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(source)
        for source in ("%load_ext apinode", f"%%api_endpoint datatypes/give --function give\n{code}", play)
    ]
    nbformat.write(notebook, directory / "nb.ipynb")
    cells = execute_notebook(directory / "nb.ipynb", allow_errors=False)
    return json.loads(cell_text(cells[2], "stdout"))


def test_the_kernel_answers_as_the_node_does(node, kernel_answers):
    for kind, encoded in ENCODED.items():
        assert kernel_answers[kind] == [200, encoded], kind
    status, answer = kernel_answers["opaque"]
    assert status == 500 and OPAQUE_AT in answer["message"]
    assert answer == give(node, "opaque").json()


def encode(value):
    return json.loads(results.encode(value))


def test_plain_json_is_encoded_as_before():
    value = {"a": [1, 2.5, "é", None, True], "b": {"c": []}}
    assert results.encode(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize(
    "value, where",
    [
        ({"x": float("nan")}, 'response["x"] is nan, which JSON cannot represent'),
        ([1, {"k": float("inf")}], 'response[1]["k"] is inf'),
        ({(1, 2): 3}, "response has a key that is a tuple ((1, 2))"),
        (b"bytes", "response is a bytes; convert it"),
        ({"s": "\ud800"}, 'response["s"] is a string with a lone surrogate'),
    ],
)
def test_each_failure_says_where(value, where):
    with pytest.raises(results.NotSerializable, match=None) as raised:
        results.encode(value)
    assert where in str(raised.value)


def test_a_circular_result_is_refused_without_recursing_forever():
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(results.NotSerializable, match="circular or nested too deeply"):
        results.encode(loop)


def test_nested_conversions_and_odd_keys():
    @dataclasses.dataclass
    class Inner:
        when: datetime.date
        tags: frozenset

    assert encode({"i": Inner(datetime.date(2024, 5, 6), frozenset({"b", "a"}))}) == {
        "i": {"when": "2024-05-06", "tags": ["a", "b"]}
    }
    pandas = pytest.importorskip("pandas")
    series = pandas.Series([1, 2], index=pandas.to_datetime(["2024-01-01", "2024-01-02"]))
    assert encode(series) == {"2024-01-01T00:00:00": 1, "2024-01-02T00:00:00": 2}


def test_the_invoker_answers_500_with_the_path():
    outcome = Invoker(lambda: {"model": object()})(b"")
    assert outcome.status == 500
    assert 'response[\\"model\\"] is a object' in outcome.payload.decode()


def test_a_conversion_that_raises_is_a_500_naming_the_place():
    class Broken:
        def model_dump(self, mode="python"):
            raise KeyError("schema")

    outcome = Invoker(lambda: {"model": [Broken()]})(b"")
    assert outcome.status == 500
    error = json.loads(outcome.payload)
    assert error["errorType"] == "ResultNotSerializable" and 'response["model"][0]' in error["message"], error


def test_the_runtime_never_imports_numpy_or_pandas():
    runtime = Path(results.__file__).parent
    for module in runtime.glob("*.py"):
        source = module.read_text()
        assert "import numpy" not in source and "import pandas" not in source, module
