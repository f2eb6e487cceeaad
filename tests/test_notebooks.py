"""Notebooks as service sources, and the `%%api_endpoint` grammar they share with the magics."""

import json

import nbformat
import pytest

from apinode.packaging.bundles import bundle_bytes, read_bundle
from apinode.packaging.definitions import DefinitionError, PoolSettings
from apinode.packaging.magic_syntax import (
    ENDPOINT_USAGE,
    TEST_QUERIES_USAGE,
    EndpointMagic,
    MagicUsageError,
    parse_endpoint_magic,
    parse_target,
    parse_test_queries_magic,
)
from apinode.packaging.notebooks import (
    EndpointRegistration,
    read_notebook_services,
    stage_notebook,
    stage_registrations,
)
from apinode.packaging.staging import stage_source

SCORE = (
    "%%api_endpoint churn/score --function score --folder data --requirement numpy --ceil 1\n"
    "def score(x):\n    return x\n"
)


def write_notebook(path, *sources, markdown="# title"):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell(markdown)]
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(notebook, path)
    return path


@pytest.fixture
def base(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "model.txt").write_text("m")
    return tmp_path


def test_endpoints_folders_and_test_queries(base):
    path = write_notebook(
        base / "nb.ipynb",
        "import os",
        "\n" + SCORE,
        '%%api_test_queries churn/score\n[{"name": "one", "query": {"x": 1}, "expected": 1}]',
        "%%api_endpoint churn/other --function g\ndef g():\n    pass\n",
        "%%api_endpoint pricing/quote --function q\ndef q():\n    pass\n",
    )
    services = read_notebook_services(path)
    assert list(services) == ["churn", "pricing"]
    churn = services["churn"]
    score = churn.definition.endpoint("score")
    assert [e.id for e in churn.definition.endpoints] == ["score", "other"]
    assert score.code == "endpoints/score/score.py" and score.function == "score"
    assert churn.files[score.code] == b"def score(x):\n    return x\n"
    assert score.folders == ("folders/data",)
    assert churn.files["folders/data/model.txt"] == base / "data" / "model.txt"
    assert score.code_env.requirements == ("numpy",)
    assert score.pool == PoolSettings(floor=1, ceil=1, cruise=1)
    assert [(q.name, q.query, q.expected) for q in score.test_queries] == [("one", {"x": 1}, 1)]
    assert churn.definition.public_access is True and churn.definition.api_keys == ()
    assert churn.definition.endpoint("other").code_env is None


def test_a_later_cell_replaces_an_earlier_one(base):
    path = write_notebook(
        base / "nb.ipynb",
        SCORE,
        "%%api_endpoint churn/score --function better\ndef better(x):\n    return 2 * x\n",
    )
    score = stage_notebook(path).definition.endpoint("score")
    assert score.function == "better" and score.folders == ()


def test_same_notebook_same_bundle_bytes(base):
    path = write_notebook(base / "nb.ipynb", SCORE)
    assert bundle_bytes(stage_notebook(path)) == bundle_bytes(stage_notebook(path))
    assert stage_source(path).definition.id == "churn"


def test_registrations_build_what_the_notebook_builds(base):
    """The in-kernel registry, given the same cells, builds byte-identical bundles."""
    path = write_notebook(base / "nb.ipynb", SCORE)
    magic_line, _, code = SCORE.partition("\n")
    registration = EndpointRegistration(parse_endpoint_magic(magic_line.removeprefix("%%api_endpoint ")), code)
    staged = stage_registrations("churn", [registration], base, "kernel")
    assert bundle_bytes(staged) == bundle_bytes(stage_notebook(path))
    with pytest.raises(ValueError, match="other services than 'pricing'"):
        stage_registrations("pricing", [registration], base, "kernel")


def test_service_choice(base):
    path = write_notebook(base / "nb.ipynb", SCORE, "%%api_endpoint pricing/quote --function q\ndef q():\n    pass\n")
    with pytest.raises(DefinitionError, match=r"defines several services \(churn, pricing\); pass"):
        stage_notebook(path)
    assert stage_notebook(path, "pricing").definition.id == "pricing"
    with pytest.raises(DefinitionError, match="defines no service 'nope', only churn, pricing"):
        stage_notebook(path, "nope")


def test_no_services_explains_the_cell_syntax(base):
    path = write_notebook(base / "nb.ipynb", "print(1)", "%%time\n1")
    with pytest.raises(DefinitionError) as caught:
        stage_notebook(path)
    assert "defines no service" in str(caught.value)
    assert "%%api_endpoint SERVICE/ENDPOINT --function NAME" in str(caught.value)


@pytest.mark.parametrize(
    "sources, error, message",
    [
        (
            ["%%api_endpoint churn/score\nx = 1"],
            MagicUsageError,
            "nb.ipynb: cell 2: the following arguments are required: --function; " + ENDPOINT_USAGE,
        ),
        (
            ["%%api_test_queries churn/score\n[]"],
            DefinitionError,
            "nb.ipynb: cell 2: test queries for churn/score, which no %%api_endpoint cell defines",
        ),
        ([SCORE, "%%api_test_queries churn/score\n[{]"], DefinitionError, "nb.ipynb: cell 3: not valid JSON"),
        (
            [SCORE, '%%api_test_queries churn/score\n[{"query": {}}]'],
            DefinitionError,
            "nb.ipynb: cell 3: testQueries[0].name: expected a non-empty string",
        ),
        (
            [SCORE, "%%api_test_queries churn score\n[]"],
            MagicUsageError,
            "nb.ipynb: cell 3: expected one SERVICE/ENDPOINT, got 'churn score'; " + TEST_QUERIES_USAGE,
        ),
        (
            ["%%api_endpoint churn/score --function f --folder missing\n"],
            DefinitionError,
            "nb.ipynb: endpoint score: folder not found",
        ),
    ],
)
def test_errors_name_the_notebook_and_cell(base, sources, error, message):
    path = write_notebook(base / "nb.ipynb", *sources)
    with pytest.raises(error) as caught:
        read_notebook_services(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"password=hunter2, and enough text to fill the 40 characters nbformat quotes", "it is not JSON"),
        (b"\xff\xfehunter2", "it is not UTF-8 text"),
        (b'[1, "hunter2"]', "its JSON is not in the notebook format"),
        (b'"hunter2"', "its JSON is not in the notebook format"),
        (b'{"nbformat": "hunter2"}', "its JSON is not in the notebook format"),
        (b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": "hunter2"}', "not in the notebook format"),
        (
            b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, '
            b'"cells": [{"cell_type": "code", "source": 5, "metadata": {}, "outputs": []}, "hunter2"]}',
            "its JSON is not in the notebook format",
        ),
    ],
    ids=["text", "not-utf8", "json-list", "json-string", "bad-version", "cells-not-a-list", "bad-cells"],
)
def test_an_unreadable_notebook_is_refused_without_quoting_it(tmp_path, content, why):
    """The error says what is wrong with the file, and quotes nothing of it: the file may be
    anything (a served notebook path can name a file of secrets)."""
    (tmp_path / "nb.ipynb").write_bytes(content)
    with pytest.raises(DefinitionError) as caught:
        stage_notebook(tmp_path / "nb.ipynb")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'nb.ipynb'}: not a readable notebook: ") and why in message
    assert "hunter2" not in message and "\n" not in message


def test_bundle_of_a_notebook_has_its_code(base):
    data, _ = bundle_bytes(stage_notebook(write_notebook(base / "nb.ipynb", SCORE)))
    files = read_bundle(data)
    assert files["endpoints/score/score.py"] == b"def score(x):\n    return x\n"
    assert json.loads(files["service.json"])["endpoints"][0]["folders"] == ["folders/data"]


def test_parse_endpoint_magic():
    assert parse_endpoint_magic(
        "s/e --function f --folder a --folder 'b c' --requirement x==1 --floor 2 --timeout 5"
    ) == EndpointMagic("s", "e", "f", ("a", "b c"), ("x==1",), {"floor": 2, "timeout": 5})
    assert parse_endpoint_magic("s/e --function f").pool == {}
    assert parse_endpoint_magic(
        "s/e --function f --start spawn --execution-timeout 0 --max-requests 100 --max-memory-mb 512"
    ).pool == {"start": "spawn", "executionTimeout": 0, "maxRequests": 100, "maxMemoryMb": 512}
    assert parse_target("a-1/b_2") == ("a-1", "b_2")
    assert parse_test_queries_magic(" s/e ") == ("s", "e")


@pytest.mark.parametrize(
    "line, message",
    [
        ("", "the following arguments are required: target, --function"),
        ("s --function f", "expected SERVICE/ENDPOINT (ids of letters, digits, '_' or '-'), got 's'"),
        ("s/e/x --function f", "got 's/e/x'"),
        ("s/e --function 1f", "--function: expected the name of a Python function, got '1f'"),
        ("s/e --function f --ceil x", "argument --ceil: invalid int value: 'x'"),
        ("s/e --function f --ceil 0", "pool.ceil: expected an integer >= 1, got 0"),
        ("s/e --function f --floor 3 --ceil 2", "pool: expected floor <= cruise <= ceil"),
        ("s/e --function f --bogus", "unrecognized arguments: --bogus"),
        ("s/e --function f --start thread", "argument --start: invalid choice: 'thread'"),
        ("s/e --function f --max-requests -1", "pool.maxRequests: expected an integer >= 0, got -1"),
        ("s/e --func f", "required: --function"),
        ("s/e --function 'f", "No closing quotation"),
        ("s/e --function f -h", "unrecognized arguments: -h"),
        (
            "s/e --function f --requirement=-rfoo",
            "--requirement: codeEnv.requirements[0]: expected a "
            "requirement (a name with optional version, or a URL), not an option",
        ),
        ("s/e --function f --requirement numpy --requirement ''", "codeEnv.requirements[1]: expected a non-empty"),
    ],
)
def test_magic_errors_are_one_line_with_usage(line, message, capsys):
    with pytest.raises(MagicUsageError) as caught:
        parse_endpoint_magic(line)
    text = str(caught.value)
    assert message in text and text.endswith("; " + ENDPOINT_USAGE) and "\n" not in text
    assert capsys.readouterr() == ("", "")


def test_target_errors_carry_the_given_usage():
    with pytest.raises(MagicUsageError, match=f"{TEST_QUERIES_USAGE}$"):
        parse_target("nope", TEST_QUERIES_USAGE)
