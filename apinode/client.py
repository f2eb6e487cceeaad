"""The one client of a node: run URLs, the admin API, the upload route, playing test queries.

`apinode test` and `apinode admin`, `%api_deploy`, the dev client (the API designer and
kernels) and the panel all talk to nodes through `NodeClient`. It uses the standard library
alone (urllib), so a kernel or the CLI needs neither `requests` nor `dataikuapi`. The node never
uses it: it is a client's code.

Errors are one type, `NodeError`: either nothing answered (`status` is None: refused, timed out,
not a URL) or the node answered an error, whose JSON (`errorType`, `message`, `detailedMessage`)
it carries with the status. Only `run` and `play` answer whatever the status, since playing a
query judges the status itself.

Concurrency: every call blocks its thread for one HTTP exchange, bounded by a timeout; a client
holds no connection and may be shared between threads.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .packaging.definitions import TestQuery
from .results import QueryResult, describe_error, one_line

RUN_TIMEOUT = 60.0
"""Seconds a run call may take: past the pool's default queue timeout (10 s) and most functions."""
SSE = "text/event-stream"
ADMIN_TIMEOUT = 600.0
"""Seconds an admin call may take: a switch loads a generation, building its code env first."""


class NodeError(Exception):
    """A node that could not be reached, or that answered an error; str() is one line for a human.

    `status` is the HTTP status (None when nothing answered) and `body` the node's decoded error
    body; `error_type`, `message` and `detailed_message` are its fields.
    """

    def __init__(self, text: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(text)
        self.status = status
        self.body = body

    @classmethod
    def answered(cls, status: int, body: Any, context: str = "") -> NodeError:
        """The error for an answer with an error status: `[context (HTTP status): ]type: message`."""
        if context:
            return cls(f"{context} (HTTP {status}): {describe_error(body)}", status, body)
        error_type = _field(body, "errorType") or "Error"
        message = _field(body, "message") or describe_error(body)
        return cls(f"{error_type} (HTTP {status}): {message}", status, body)

    @property
    def error_type(self) -> str | None:
        return _field(self.body, "errorType")

    @property
    def message(self) -> str | None:
        return _field(self.body, "message")

    @property
    def detailed_message(self) -> str | None:
        return _field(self.body, "detailedMessage")


def _field(body: Any, name: str) -> str | None:
    value = body.get(name) if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Answer:
    """What a server answered: status and body, whatever the status."""

    status: int
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON; an empty body is None, and one that is not JSON (a proxy's page) a
        `NotJson` error body that quotes its start."""
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            text = one_line(self.body.decode(errors="replace"))
            return {"errorType": "NotJson", "message": f"the answer is not JSON: {text!r}"}


def request(
    url: str,
    method: str = "GET",
    body: bytes | BinaryIO | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = RUN_TIMEOUT,
) -> Answer:
    """One HTTP exchange; the answer whatever its status. NodeError (one line) when `url` is not
    an http(s) URL or nothing answers (refused, unknown host, timed out)."""
    with _open(url, method, body, headers, timeout) as response:
        return Answer(response.status, response.read())


@contextmanager
def _open(
    url: str, method: str, body: bytes | BinaryIO | None, headers: Mapping[str, str] | None, timeout: float
) -> Iterator[http.client.HTTPResponse]:
    """The response of one HTTP exchange, to read as it comes, whatever its status; NodeError
    as `request` says."""
    http_request = urllib.request.Request(check_url(url), data=body, headers=dict(headers or {}), method=method)
    try:
        response = urllib.request.urlopen(http_request, timeout=timeout)
    except urllib.error.HTTPError as error:
        response = error
    except ValueError:  # http.client.InvalidURL: a port that is not a number, a control character
        raise NodeError(_invalid_url(url)) from None
    except OSError as error:  # refused, unknown host, timed out (URLError is an OSError)
        reason = getattr(error, "reason", error)
        raise NodeError(f"cannot reach {url}: {reason}") from None
    with response:
        try:
            yield response
        except OSError as error:  # timed out or cut while reading
            raise NodeError(f"{url}: the answer was cut short: {error}") from None


def check_url(url: str) -> str:
    """`url` if it is an http(s) URL with a host; NodeError (one line) if it is not."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError when the port is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise NodeError(_invalid_url(url))
    return url


def _invalid_url(url: str) -> str:
    return f"invalid URL {url!r}: expected http://host:port (or https://)"


def quote(segment: str) -> str:
    """A path segment (a service id, a generation) as it goes in a URL."""
    return urllib.parse.quote(segment, safe="")


class NodeClient:
    """A node at `url` (its base URL), called with `key` (an API key for run URLs, an admin key
    for the admin API) as HTTP Basic user name with an empty password, as the node expects."""

    def __init__(self, url: str, key: str | None = None, timeout: float = ADMIN_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        credentials = base64.b64encode(f"{key}:".encode()).decode()
        self._headers = {} if key is None else {"Authorization": f"Basic {credentials}"}

    # -- run URLs -------------------------------------------------------------------------------
    def run(self, service: str, endpoint: str, body: bytes, timeout: float = RUN_TIMEOUT) -> Answer:
        """POST `body` to the endpoint's run URL; the answer whatever its status."""
        return request(self._run_url(service, endpoint), "POST", body, self._run_headers(), timeout)

    def _run_url(self, service: str, endpoint: str) -> str:
        return f"{self.url}/public/api/v1/{quote(service)}/{quote(endpoint)}/run"

    def _run_headers(self, accept: str | None = None) -> dict[str, str]:
        headers = {**self._headers, "Content-Type": "application/json"}
        if accept is not None:
            headers["Accept"] = accept
        return headers

    def play(
        self, service: str, endpoint: str, query: TestQuery, on_item: Callable[[Any], None] | None = None
    ) -> QueryResult:
        """Play one test query; the node's answer judged against the query's `expected`.

        With `on_item` the query asks for a stream (server-sent events): a generator's items are
        handed to `on_item` as the node sends them, and judged together as the list the node
        answers without a stream; an error after the first item is judged as a 500 with its
        error object. Any other function answers as usual."""
        started = time.perf_counter()
        url, headers = self._run_url(service, endpoint), self._run_headers(None if on_item is None else SSE)
        with _open(url, "POST", json.dumps(query.query).encode(), headers, RUN_TIMEOUT) as response:
            if on_item is not None and response.headers.get_content_type() == SSE:
                status, decoded = _streamed(response, on_item)
            else:
                answer = Answer(response.status, response.read())
                status, decoded = answer.status, answer.json()
                if status == 200:
                    decoded = decoded.get("response") if isinstance(decoded, dict) else decoded
        elapsed_ms = (time.perf_counter() - started) * 1000
        return QueryResult(endpoint, query.name, query.expected, status, decoded, elapsed_ms)

    # -- the admin API --------------------------------------------------------------------------
    def admin(self, method: str, path: str, body: Any = None, context: str = "") -> Any:
        """Call `/admin/api/<path>` with `body` as JSON (none if None); the decoded answer, or
        NodeError for an error status (`context` says what was being done, for its message)."""
        data = None if body is None else json.dumps(body).encode()
        return self._admin(method, path, data, "application/json", context)

    def upload(self, service: str, bundle: bytes | Path, context: str = "") -> str:
        """Send a bundle (its bytes or its file) as a new generation of the service; its id."""
        path = f"services/{quote(service)}/generations/actions/upload"
        if isinstance(bundle, Path):
            with bundle.open("rb") as data:
                answer = self._admin("POST", path, data, "application/zip", context, bundle.stat().st_size)
        else:
            answer = self._admin("POST", path, bundle, "application/zip", context)
        generation = answer.get("generation") if isinstance(answer, dict) else None
        if not isinstance(generation, str):
            raise NodeError(f"{context or 'uploading a bundle'}: the node did not say which generation it made")
        return generation

    def services(self) -> Any:
        return self.admin("GET", "services")

    def create_service(self, service: str, context: str = "") -> Any:
        return self.admin("POST", "services/", {"serviceId": service}, context)

    def delete_service(self, service: str) -> Any:
        return self.admin("DELETE", f"services/{quote(service)}")

    def service(self, service: str) -> Any:
        """The service as the admin API describes it (enabled, activeGeneration...)."""
        return self.admin("GET", f"services/{quote(service)}")

    def generations(self, service: str) -> Any:
        return self.admin("GET", f"services/{quote(service)}/generations")

    def action(self, service: str, action: str, body: Any = None) -> Any:
        """POST services/<id>/actions/<action>: enable, disable, switchToNewest, setMapping."""
        return self.admin("POST", f"services/{quote(service)}/actions/{action}", body)

    def switch_to(self, service: str, generation: str, context: str = "") -> Any:
        path = f"services/{quote(service)}/actions/switchTo/{quote(generation)}"
        return self.admin("POST", path, context=context)

    def check(self, service: str, generation: str) -> Any:
        """Whether each endpoint of an imported generation loads (the dev loop's route)."""
        return self.admin("POST", f"services/{quote(service)}/generations/{quote(generation)}/check")

    def metrics(self) -> Any:
        return self.admin("GET", "metrics")

    def _admin(
        self,
        method: str,
        path: str,
        data: bytes | BinaryIO | None,
        content_type: str,
        context: str,
        length: int | None = None,
    ) -> Any:
        headers = {**self._headers, "Content-Type": content_type}
        if length is not None:  # a file streams; urllib cannot size it
            headers["Content-Length"] = str(length)
        answer = request(f"{self.url}/admin/api/{path}", method, data, headers, self.timeout)
        if not answer.ok:
            raise NodeError.answered(answer.status, answer.json(), context)
        return answer.json()


def _streamed(response: http.client.HTTPResponse, on_item: Callable[[Any], None]) -> tuple[int, Any]:
    """(status, the items as a list or the error object) of a stream of server-sent events
    (DESIGN.md, "Function shapes"), handing each item to `on_item` as it is read."""
    items: list[Any] = []
    event = "message"
    for line in iter(response.readline, b""):
        if line.startswith(b"event: "):
            event = line[len(b"event: ") :].strip().decode()
        elif line.startswith(b"data: "):
            data = json.loads(line[len(b"data: ") :])
            if event == "error":
                return 500, data
            if event == "end":
                return 200, items
            items.append(data)
            on_item(data)
            event = "message"
    return 500, {"errorType": "StreamCut", "message": f"the stream ended after {len(items)} items, without its end"}
