"""Judging and showing query results (shared by `%api_test` and `apinode test`); playing them
over HTTP is in test_client.py, against a real node in test_cli_test.py."""

from __future__ import annotations

import pytest

from apinode.packaging.definitions import NO_EXPECTED
from apinode.results import QueryResult, Report, describe_error, matches, text_table


@pytest.mark.parametrize(
    "expected, actual",
    [
        (0.3, 0.1 + 0.2),
        (1, 1.0),
        (0.0, 1e-13),
        (1e20, 1e20 + 1e10),
        ({"p": [0.3, "a", None]}, {"p": [0.1 + 0.2, "a", None]}),
        (True, True),
        (None, None),
        ("x", "x"),
    ],
)
def test_matches(expected, actual):
    assert matches(expected, actual)


@pytest.mark.parametrize(
    "expected, actual",
    [
        (0.3, 0.3001),
        (0.0, 1e-11),
        (True, 1),
        (0, False),
        ("1", 1),
        ([1, 2], [1, 2, 3]),
        ({"a": 1}, {"a": 1, "b": 2}),
        ({"a": 1}, [1]),
        (None, 0),
    ],
)
def test_does_not_match(expected, actual):
    assert not matches(expected, actual)


def result(name="q", expected=NO_EXPECTED, status=200, answer=1, traceback=None):
    return QueryResult("ep", name, expected, status, answer, 1.234, traceback)


@pytest.mark.parametrize(
    "query_result, verdict",
    [
        (result(), "OK"),
        (result(expected=1), "PASS"),
        (result(expected=2), "FAIL"),
        (result(status=500, answer={"errorType": "FunctionError", "message": "boom"}), "FAIL"),
        (result(expected=None, status=400, answer=None), "FAIL"),
    ],
)
def test_verdicts(query_result, verdict):
    assert query_result.verdict == verdict
    assert query_result.passed is (verdict != "FAIL")


def test_report_text_has_the_table_the_tracebacks_and_a_summary():
    report = Report(
        "svc",
        (
            result("good", expected=1),
            result(
                "bad",
                status=500,
                answer={"errorType": "FunctionError", "message": "boom"},
                traceback="Traceback (most recent call last):\nValueError: boom\n",
            ),
        ),
    )
    assert not report.passed
    assert str(report).splitlines() == [
        "endpoint  query  status  time ms  response             expected  result",
        "ep        good   200     1.23     1                    1         PASS",
        "ep        bad    500     1.23     FunctionError: boom            FAIL",
        "",
        "traceback of ep 'bad':",
        "Traceback (most recent call last):",
        "ValueError: boom",
        "",
        "svc: 2 queries, 1 FAILED",
    ]


def test_text_table_cuts_long_cells_to_one_line():
    table = text_table(("a",), [("x\ny  " + "z" * 100,)])
    assert table.splitlines()[1] == "x y " + "z" * 53 + "..."


@pytest.mark.parametrize(
    "body, shown",
    [
        ({"errorType": "NotFound", "message": "no such service"}, "NotFound: no such service"),
        ({"message": "m"}, "Error: m"),
        ([1], "[1]"),
        (None, "(no body)"),
    ],
)
def test_describe_error(body, shown):
    assert describe_error(body) == shown


def test_text_table_keeps_whole_cells_when_asked():
    table = text_table(("a", "b"), [("x" * 100, "y")], cell_width=None)
    assert table.splitlines()[1] == "x" * 100 + "  y"
