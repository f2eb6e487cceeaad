"""The argument grammar of the `%%api_endpoint` and `%%api_test_queries` cell magics.

Shared by the notebook reader (no kernel) and the IPython magics, so that a cell means the
same thing in both. Errors are raised as one-line `MagicUsageError`s holding the usage:
argparse never prints nor exits here.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field
from typing import NoReturn

from .definitions import (
    ID_PATTERN,
    START_METHODS,
    BatchSettings,
    CodeEnv,
    DefinitionError,
    PoolSettings,
    is_function_name,
)

ENDPOINT_MAGIC = "%%api_endpoint"
TEST_QUERIES_MAGIC = "%%api_test_queries"
ENDPOINT_USAGE = (
    "usage: %%api_endpoint SERVICE/ENDPOINT --function NAME [--folder PATH]... "
    "[--requirement REQ]... [--floor N] [--ceil N] [--cruise N] [--queue N] [--timeout MS] "
    "[--start fork|spawn] [--execution-timeout MS] [--max-requests N] [--max-memory-mb MB] "
    "[--batch-size N --batch-wait-ms MS]"
)
TEST_QUERIES_USAGE = "usage: %%api_test_queries SERVICE/ENDPOINT"
_POOL_OPTIONS = {
    "floor": "floor",
    "ceil": "ceil",
    "cruise": "cruise",
    "queue": "queue",
    "timeout": "timeout",
    "execution-timeout": "executionTimeout",
    "max-requests": "maxRequests",
    "max-memory-mb": "maxMemoryMb",
}
"""Integer pool options of the magic, to their names in service.json's "pool"."""


class MagicUsageError(ValueError):
    """A magic line that does not follow its grammar; the message is one line with the usage."""


@dataclass(frozen=True)
class EndpointMagic:
    """The arguments of one `%%api_endpoint` line."""

    service: str
    endpoint: str
    function: str
    folders: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    pool: dict[str, int | str] = field(default_factory=dict)
    """Only the pool settings given, by their JSON names (floor, ..., executionTimeout, start)."""
    batch: dict[str, int] | None = None
    """The endpoint's "batch" ({"maxSize", "maxWaitMs"}), when it is called with lists."""


class UsageParser(argparse.ArgumentParser):
    """An argument parser that raises its errors instead of printing them and exiting."""

    def error(self, message: str) -> NoReturn:
        raise MagicUsageError(f"{message}; {self.usage}")


def _endpoint_parser() -> UsageParser:
    parser = UsageParser(
        prog=ENDPOINT_MAGIC, usage=ENDPOINT_USAGE, add_help=False, allow_abbrev=False, exit_on_error=False
    )
    parser.add_argument("target")
    parser.add_argument("--function", required=True)
    parser.add_argument("--folder", dest="folders", action="append", default=[])
    parser.add_argument("--requirement", dest="requirements", action="append", default=[])
    for option, name in _POOL_OPTIONS.items():
        parser.add_argument(f"--{option}", dest=name, type=int)
    parser.add_argument("--start", choices=START_METHODS)
    parser.add_argument("--batch-size", dest="maxSize", type=int)
    parser.add_argument("--batch-wait-ms", dest="maxWaitMs", type=int)
    return parser


_ENDPOINT_PARSER = _endpoint_parser()


def split_words(line: str, usage: str) -> list[str]:
    """A magic's line as shell words; an unclosed quote is a MagicUsageError with the usage."""
    try:
        return shlex.split(line)
    except ValueError as error:  # an unclosed quote
        raise MagicUsageError(f"{error}; {usage}") from None


def parse_target(text: str, usage: str = ENDPOINT_USAGE) -> tuple[str, str]:
    """ "SERVICE/ENDPOINT" -> (service, endpoint); `usage` goes into the error message."""
    service, slash, endpoint = text.partition("/")
    if not (slash and ID_PATTERN.fullmatch(service) and ID_PATTERN.fullmatch(endpoint)):
        raise MagicUsageError(f"expected SERVICE/ENDPOINT (ids of letters, digits, '_' or '-'), got {text!r}; {usage}")
    return service, endpoint


def parse_endpoint_magic(line: str) -> EndpointMagic:
    """Parse the text after `%%api_endpoint`."""
    try:
        args = _ENDPOINT_PARSER.parse_args(split_words(line, ENDPOINT_USAGE))
    except argparse.ArgumentError as error:
        raise MagicUsageError(f"{error}; {ENDPOINT_USAGE}") from None
    service, endpoint = parse_target(args.target)
    if not is_function_name(args.function):
        raise MagicUsageError(
            f"--function: expected the name of a Python function, got {args.function!r}; {ENDPOINT_USAGE}"
        )
    pool = {key: getattr(args, key) for key in (*_POOL_OPTIONS.values(), "start") if getattr(args, key) is not None}
    try:
        PoolSettings.from_json(pool, "pool")  # refuse now what the node would refuse later
    except DefinitionError as error:
        raise MagicUsageError(f"{error}; {ENDPOINT_USAGE}") from None
    try:  # the same: an option passed as a requirement, an empty one
        CodeEnv.from_json({"requirements": list(args.requirements)}, "codeEnv")
    except DefinitionError as error:
        raise MagicUsageError(f"--requirement: {error}; {ENDPOINT_USAGE}") from None
    batch = {key: getattr(args, key) for key in ("maxSize", "maxWaitMs") if getattr(args, key) is not None}
    if batch:
        try:
            BatchSettings.from_json(batch, "batch")
        except DefinitionError as error:
            raise MagicUsageError(f"--batch-size and --batch-wait-ms: {error}; {ENDPOINT_USAGE}") from None
    return EndpointMagic(
        service, endpoint, args.function, tuple(args.folders), tuple(args.requirements), pool, batch or None
    )


def parse_test_queries_magic(line: str) -> tuple[str, str]:
    """Parse the text after `%%api_test_queries`: (service, endpoint)."""
    words = split_words(line, TEST_QUERIES_USAGE)
    if len(words) != 1:
        raise MagicUsageError(f"expected one SERVICE/ENDPOINT, got {line.strip()!r}; {TEST_QUERIES_USAGE}")
    return parse_target(words[0], TEST_QUERIES_USAGE)
