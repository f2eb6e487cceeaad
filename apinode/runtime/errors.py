"""The error body every failure is answered with, built in one place.

`{"errorType", "message", "detailedMessage"}` is what DESIGN.md fixes and what dataikuapi
reads (it raises `DataikuException("<errorType>: <detailedMessage>")`).
"""

from __future__ import annotations

import json
from typing import Any


def error_body(error_type: str, message: str, detailed_message: str | None = None) -> dict[str, Any]:
    return {"errorType": error_type, "message": message, "detailedMessage": detailed_message or message}


def error_json(error_type: str, message: str, detailed_message: str | None = None) -> bytes:
    return json.dumps(error_body(error_type, message, detailed_message), separators=(",", ":")).encode()
