"""The node's failures, each with the HTTP status and errorType a caller sees.

Handlers raise these; `body()` is the JSON DESIGN.md fixes, written by the handlers'
`write_error` and by the run route alike. The pool raises them too, but knows nothing of HTTP
beyond this number.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from ..runtime.errors import error_body


def listing(names: Iterable[str]) -> str:
    """Names for an error message that says what there is instead: sorted, or "none"."""
    return ", ".join(sorted(names)) or "none"


class ApiError(Exception):
    status = 500
    error_type = "InternalError"
    headers: dict[str, str] = {}

    def __init__(self, message: str, detailed_message: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detailed_message = detailed_message or message

    def body(self) -> bytes:
        return orjson.dumps(error_body(self.error_type, self.message, self.detailed_message))


class BadRequest(ApiError):
    status, error_type = 400, "BadRequest"


class Unauthorized(ApiError):
    status, error_type = 401, "Unauthorized"
    headers = {"WWW-Authenticate": 'Basic realm="apinode"'}


class NotFound(ApiError):
    status, error_type = 404, "NotFound"


class MethodNotAllowed(ApiError):
    status, error_type = 405, "MethodNotAllowed"
    headers = {"Allow": "POST"}


class RequestTimeout(ApiError):
    status, error_type = 408, "RequestTimeout"


class Conflict(ApiError):
    status, error_type = 409, "Conflict"


class BodyTooLarge(ApiError):
    status, error_type = 413, "BodyTooLarge"


class AdminUnavailable(ApiError):
    """The admin keys cannot be read: no admin call can be authorized until the operator repairs
    the file (the node serves its services meanwhile)."""

    status, error_type = 503, "AdminUnavailable"


class UriTooLong(ApiError):
    status, error_type = 414, "UriTooLong"


class HeadersTooLarge(ApiError):
    status, error_type = 431, "HeadersTooLarge"


class EndpointUnavailable(ApiError):
    """The request was not run; retrying later may succeed."""

    status, error_type = 503, "Unavailable"
    headers = {"Retry-After": "1"}


class QueueFull(EndpointUnavailable):
    error_type = "QueueFull"


class QueueTimeout(EndpointUnavailable):
    error_type = "QueueTimeout"


class PoolClosed(EndpointUnavailable):
    error_type = "EndpointStopping"


class EndpointLoadFailed(ApiError):
    """The endpoint's code did not load; `traceback` goes to the log and the author, not callers."""

    error_type = "EndpointLoadFailed"

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


class PipelineDied(ApiError):
    error_type = "PipelineDied"


class ExecutionTimeout(ApiError):
    """The call ran past the pool's executionTimeout; its pipeline was killed and replaced."""

    status, error_type = 504, "ExecutionTimeout"
