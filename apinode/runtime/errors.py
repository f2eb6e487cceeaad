"""The error body every failure is answered with, built in one place; and the error reports a
pipeline writes to its stderr for the node's log.

`{"errorType", "message", "detailedMessage"}` is what DESIGN.md fixes and what dataikuapi
reads (it raises `DataikuException("<errorType>: <detailedMessage>")`).

A pipeline's stderr is relayed to the node's log line by line at INFO: it is where user code
prints. A traceback is not a print: the runtime writes it as one *error report*, a single line
(a marker, then the text as a JSON string), which the relay logs as one ERROR record.

A message is cut at MAX_MESSAGE_CHARS, with a note of the cut: an exception can carry megabytes
(a whole input echoed back), which belong in the author's log, not in every error answer.
"""

from __future__ import annotations

import json
from typing import Any

MAX_MESSAGE_CHARS = 8192
"""Longest message an error answer carries; ample for any message written for a person."""


def error_body(error_type: str, message: str, detailed_message: str | None = None) -> dict[str, Any]:
    return {
        "errorType": error_type,
        "message": truncated(message),
        "detailedMessage": truncated(detailed_message or message),
    }


def truncated(message: str) -> str:
    """`message`, or its beginning and a note of how much was cut."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return f"{message[:MAX_MESSAGE_CHARS]}... [message cut: {len(message) - MAX_MESSAGE_CHARS} more characters]"


REPORT_MARK = "\x1eapinode-error "  # starts with ASCII "record separator": no print does by accident


def error_report(text: str) -> str:
    """The line that carries `text` (a traceback, several lines) to the node's log at ERROR."""
    return REPORT_MARK + json.dumps(text) + "\n"


def read_error_report(line: str) -> str | None:
    """The text of an error report line; None for any other line (one that user code printed)."""
    if not line.startswith(REPORT_MARK):
        return None
    try:
        text = json.loads(line[len(REPORT_MARK) :])
    except ValueError:
        return None
    return text if isinstance(text, str) else None


def error_json(error_type: str, message: str, detailed_message: str | None = None) -> bytes:
    return json.dumps(error_body(error_type, message, detailed_message), separators=(",", ":")).encode()
