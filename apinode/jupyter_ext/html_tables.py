"""Tables for the notebook: test query results, and the HTML table the other views share.

The rows and the verdicts come from `apinode.results`, which `apinode test` prints as text: a
query shows the same cells and passes by the same rule in the kernel and in a terminal.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from ..results import RESULT_HEADERS, Report, result_cells

_VERDICT_COLORS = {"PASS": "#1a7f37", "OK": "#1a7f37", "FAIL": "#cf222e"}
_CELL_STYLE = "text-align:left;vertical-align:top;font-family:monospace"


def html_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "", row_colors: Sequence[str] = ()
) -> str:
    """An HTML table of text cells (escaped); the last cell of row i (its verdict) is in bold
    `row_colors[i]`."""
    head = "".join(f'<th style="{_CELL_STYLE}">{html.escape(h)}</th>' for h in headers)
    body = []
    for index, row in enumerate(rows):
        styles = [_CELL_STYLE] * len(row)
        if index < len(row_colors):
            styles[-1] += f";color:{row_colors[index]};font-weight:bold"
        cells = "".join(f'<td style="{style}">{html.escape(cell)}</td>' for style, cell in zip(styles, row))
        body.append(f"<tr>{cells}</tr>")
    caption_html = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{caption_html}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class RichReport(Report):
    """A report that Jupyter shows as HTML (tracebacks folded) and IPython as the text table."""

    def _repr_html_(self) -> str:
        table = html_table(
            RESULT_HEADERS,
            [result_cells(r) for r in self.results],
            caption=self.summary,
            row_colors=[_VERDICT_COLORS[r.verdict] for r in self.results],
        )
        tracebacks = "".join(
            f"<details><summary>traceback of {html.escape(r.endpoint)} "
            f"{html.escape(repr(r.name))}</summary><pre>{html.escape(r.traceback)}</pre></details>"
            for r in self.results
            if r.traceback
        )
        return table + tracebacks

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))
