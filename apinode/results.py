"""Judging test query results, and showing them (and other listings) as text tables.

`apinode test` plays a service's test queries on a node (apinode.client), `%api_test` in the
kernel, the panel and the API designer on the dev server: all judge and show results with what
is here, so a query passes by the same rule everywhere: status 200, and the response equal to
`expected` when the query states one (numbers within a relative 1e-9 or an absolute 1e-12,
since floating-point results may differ in the last bits between machines).

Pure functions and frozen values: nothing here blocks or keeps state.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .packaging.definitions import NO_EXPECTED

CELL_WIDTH = 60
"""The longest cell a table shows; longer ones end in "..." (a terminal line holds a few)."""


def matches(expected: Any, actual: Any) -> bool:
    """Whether a decoded JSON `actual` is the `expected` one (numbers within a tolerance)."""
    if isinstance(expected, bool) or isinstance(actual, bool):  # True is not 1 in JSON
        return type(expected) is type(actual) and bool(expected == actual)
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(matches(value, actual[key]) for key, value in expected.items())
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(map(matches, expected, actual))
    return bool(expected == actual)


@dataclass(frozen=True)
class QueryResult:
    """One query played: what the node answered (or would answer), judged."""

    endpoint: str
    name: str
    expected: Any  # NO_EXPECTED when the query states none
    status: int
    answer: Any  # the response when status is 200, else the error body
    time_ms: float
    traceback: str | None = None  # for the author (kernel runs); a node keeps it in its log

    @property
    def verdict(self) -> str:
        """PASS (the expected response), OK (200, nothing expected) or FAIL."""
        if self.status != 200:
            return "FAIL"
        if self.expected is NO_EXPECTED:
            return "OK"
        return "PASS" if matches(self.expected, self.answer) else "FAIL"

    @property
    def passed(self) -> bool:
        return self.verdict != "FAIL"


RESULT_HEADERS = ("endpoint", "query", "status", "time ms", "response", "expected", "result")


def result_cells(result: QueryResult) -> tuple[str, ...]:
    """A result as the cells of a table row, in RESULT_HEADERS order (text, not truncated)."""
    if result.status == 200:
        response = _json(result.answer)
    else:
        response = describe_error(result.answer)
    expected = "" if result.expected is NO_EXPECTED else _json(result.expected)
    return (
        result.endpoint,
        result.name,
        str(result.status),
        f"{result.time_ms:.2f}",
        response,
        expected,
        result.verdict,
    )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def describe_error(body: Any) -> str:
    """An error body (`{"errorType", "message", ...}`) as one line."""
    if body is None:
        return "(no body)"
    if isinstance(body, dict) and "message" in body:
        return f"{body.get('errorType', 'Error')}: {body['message']}"
    return _json(body)


@dataclass(frozen=True, repr=False)
class Report:
    """The results of one run; str() is the table, then any traceback, then a summary."""

    title: str
    results: tuple[QueryResult, ...]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    @property
    def summary(self) -> str:
        failed = sum(not result.passed for result in self.results)
        count = len(self.results)
        outcome = f"{failed} FAILED" if failed else "all passed"
        return f"{self.title}: {count} {'query' if count == 1 else 'queries'}, {outcome}"

    def __str__(self) -> str:
        parts = [text_table(RESULT_HEADERS, [result_cells(r) for r in self.results])]
        parts += [f"traceback of {r.endpoint} {r.name!r}:\n{r.traceback.rstrip()}" for r in self.results if r.traceback]
        return "\n\n".join([*parts, self.summary])


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], cell_width: int | None = CELL_WIDTH) -> str:
    """Columns aligned with spaces; each cell on one line, cut to `cell_width` (None: whole)."""
    cells = [list(headers)] + [[one_line(cell, cell_width) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells)


def one_line(text: str, width: int | None = CELL_WIDTH) -> str:
    """`text` with its runs of white space (newlines too) as one space, cut to `width`."""
    text = " ".join(text.split())
    return text if width is None or len(text) <= width else text[: width - 3] + "..."
