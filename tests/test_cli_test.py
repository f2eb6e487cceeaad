"""`apinode test`: a service's test queries played on a real node, with and without --url."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import NodeProcess, children

from apinode.cli import main

QUICKSTART = Path(__file__).parent.parent / "notebooks" / "quickstart.ipynb"
CODE = "def double(x):\n    if x < 0:\n        raise ValueError('negative')\n    return 2 * x\n"


def service_dir(path: Path, *queries: dict) -> Path:
    """A private service `pb` with one endpoint `double` and the given test queries."""
    path.mkdir()
    (path / "double.py").write_text(CODE)
    (path / "service.json").write_text(
        json.dumps(
            {
                "id": "pb",
                "publicAccess": False,
                "apiKeys": ["k-1"],
                "endpoints": [
                    {
                        "id": "double",
                        "code": "double.py",
                        "function": "double",
                        "pool": {"floor": 1, "ceil": 1},
                        "testQueries": list(queries),
                    }
                ],
            }
        )
    )
    return path


PASS = {"name": "two", "query": {"x": 1}, "expected": 2}
MISMATCH = {"name": "mismatch", "query": {"x": 2}, "expected": 5}
RAISES = {"name": "raises", "query": {"x": -1}, "expected": 0}
UNEXPECTED = {"name": "unexpected", "query": {"y": 1}}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    node = NodeProcess("run", str(service_dir(tmp_path_factory.mktemp("node") / "pb", PASS)))
    yield node
    assert node.stop() == 0


def rows(output: str) -> dict[str, list[str]]:
    return {
        line.split()[1]: line.split() for line in output.splitlines()[1:] if line.strip() and line.startswith("double")
    }


def test_all_pass_with_url_and_the_services_own_key(node, tmp_path, capsys):
    assert main(["test", str(service_dir(tmp_path / "pb", PASS)), "--url", node.url]) == 0
    out = capsys.readouterr().out
    assert rows(out)["two"][2] == "200" and rows(out)["two"][-3:] == ["2", "2", "PASS"]
    assert out.rstrip().endswith(f"service pb at {node.url}: 1 query, all passed")


@pytest.mark.parametrize(
    "query, status, shown",
    [
        (MISMATCH, "200", ["4", "5", "FAIL"]),
        (RAISES, "500", ["FunctionError:", "the", "function", "raised", "ValueError:", "negative", "0", "FAIL"]),
        (UNEXPECTED, "400", ["InvalidParameters:"]),
    ],
)
def test_a_mismatch_or_an_error_exits_1(node, tmp_path, capsys, query, status, shown):
    assert main(["test", str(service_dir(tmp_path / "pb", PASS, query)), "--url", node.url]) == 1
    out = capsys.readouterr().out
    row = rows(out)[query["name"]]
    assert row[2] == status and " ".join(shown) in " ".join(row[4:])
    assert row[-1] == "FAIL" and rows(out)["two"][-1] == "PASS"
    assert out.rstrip().endswith("2 queries, 1 FAILED")


def test_without_url_a_node_is_started_and_stopped(tmp_path, capsys):
    before = children(os.getpid())  # the module's node may be running
    assert main(["test", str(QUICKSTART)]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 2 and "all passed" in out
    assert main(["test", str(service_dir(tmp_path / "pb", PASS, RAISES))]) == 1
    assert "raised ValueError: negative" in capsys.readouterr().out
    assert children(os.getpid()) == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--url", "http://127.0.0.1:1"], "apinode test: cannot reach http://127.0.0.1:1/public/api/v1/"),
        (["--service", "other"], "defines service 'pb', not 'other'"),
    ],
)
def test_what_cannot_be_played_is_one_line_and_exits_1(tmp_path, capsys, args, message):
    assert main(["test", str(service_dir(tmp_path / "pb", PASS)), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_service_without_test_queries_is_refused(tmp_path, capsys):
    assert main(["test", str(service_dir(tmp_path / "pb")), "--url", "http://127.0.0.1:1"]) == 1
    assert "service 'pb' has no test queries to play" in capsys.readouterr().err
