"""The error body every failure is answered with, built in one place.

`{"errorType", "message", "detailedMessage"}` is what DESIGN.md fixes and what dataikuapi
reads (it raises `DataikuException("<errorType>: <detailedMessage>")`).

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


def error_json(error_type: str, message: str, detailed_message: str | None = None) -> bytes:
    return json.dumps(error_body(error_type, message, detailed_message), separators=(",", ":")).encode()
