"""`%api_services`: what the kernel has registered, as a table (HTML in Jupyter, text elsewhere).

Each row ends with the path of its service's interactive documentation on a node (`%api_dev`
deploys to the dev server, whose summary gives the full URL)."""

from __future__ import annotations

import html
from dataclasses import dataclass

from ..packaging.definitions import PoolSettings
from ..packaging.magic_syntax import ENDPOINT_USAGE
from ..packaging.notebooks import EndpointRegistration
from ..results import text_table
from .html_tables import html_table

HEADERS = (
    "service",
    "endpoint",
    "function",
    "folders",
    "requirements",
    "pool",
    "pipelines",
    "test queries",
    "documentation",
)
_SIZING = ("floor", "ceil", "cruise", "queue", "timeout")
DOCS = "/public/api/v1/{service}/docs"
"""Where a node (the dev server after `%api_dev`, or any node serving it) documents a service."""


def _cells(registration: EndpointRegistration) -> tuple[str, ...]:
    """The pool in two cells: its sizing in full, then how pipelines start (always said) and
    the production settings that differ from their defaults."""
    magic = registration.magic
    settings = PoolSettings.from_json(magic.pool, "pool")
    pool = settings.to_json()
    return (
        magic.service,
        magic.endpoint,
        magic.function,
        ", ".join(magic.folders),
        ", ".join(magic.requirements) or "(builtin env)",
        " ".join(f"{key}={pool[key]}" for key in _SIZING),
        " ".join(f"{key}={value}" for key, value in {"start": settings.start, **pool}.items() if key not in _SIZING),
        str(len(registration.test_queries)),
        DOCS.format(service=magic.service),
    )


@dataclass(frozen=True, repr=False)
class ServicesOverview:
    """One row per registered endpoint, with its pool's sizing in full (defaults filled in)."""

    registrations: tuple[EndpointRegistration, ...]

    def _empty(self) -> str:
        return f"no endpoint registered yet; start a cell with {ENDPOINT_USAGE.removeprefix('usage: ')}"

    def __repr__(self) -> str:
        if not self.registrations:
            return self._empty()
        return text_table(HEADERS, [_cells(r) for r in self.registrations])

    def _repr_html_(self) -> str:
        if not self.registrations:
            return f"<p>{html.escape(self._empty())}</p>"
        return html_table(HEADERS, [_cells(r) for r in self.registrations])
