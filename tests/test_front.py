"""The HTTP front through raw sockets: pipelining, keep-alive, malformed requests, connection
bounds and timeouts under a (bounded, loopback) flood, running out of file descriptors, and
draining on SIGTERM."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
from support import SERVICES, NodeProcess, apinode, eventually

from apinode.node.front import ACCEPT_PAUSE, default_max_connections
from apinode.node.services import basic_auth_user

SERVICE = str(SERVICES / "frontsvc")
TIMEOUT = 2  # seconds: the node's idle, header and body timeouts in these tests
CAP = 24  # the node's --max-connections in these tests


@pytest.fixture(scope="module", params=["1", "2"], ids=["1 front", "2 fronts"])
def node(request):
    """The node, with one front, then with two (connections spread over the node and a front process)."""
    node = NodeProcess(
        "run",
        SERVICE,
        "--max-body-mb",
        "1",
        "--max-connections",
        str(CAP),
        "--idle-timeout",
        str(TIMEOUT),
        "--header-timeout",
        str(TIMEOUT),
        "--body-timeout",
        str(TIMEOUT),
        "--fronts",
        request.param,
    )
    node.fronts = int(request.param)  # each has its own connection cap
    yield node
    assert node.stop() == 0


def address(node) -> tuple[str, int]:
    parts = urlsplit(node.url)
    return parts.hostname, parts.port


def connect(node, timeout: float = 10) -> socket.socket:
    return socket.create_connection(address(node), timeout=timeout)


class Responses:
    """Reads the HTTP responses that arrive on one socket, one after another."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")

    def next(self, method: str = "POST") -> tuple[int, http.client.HTTPMessage, bytes]:
        response = http.client.HTTPResponse(_Shared(self.file), method=method)
        response.begin()
        body = response.read()
        return response.status, response.headers, body

    def closed(self) -> bool:
        """Whether the node closed the connection (no more bytes will come)."""
        try:
            return self.file.read(1) == b""
        except ConnectionResetError:
            return True


class _Shared:
    """The one buffered reader of a socket, lent to successive HTTPResponses (which close theirs)."""

    def __init__(self, file) -> None:
        self.file = file

    def makefile(self, mode):
        return self

    def __getattr__(self, name):
        return getattr(self.file, name)

    def close(self):
        pass


def request(path: str, body: bytes | None = None, method: str = "POST", headers: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + (body or b"")


def run(endpoint: str) -> str:
    return f"/public/api/v1/frontsvc/{endpoint}/run"


def error_of(body: bytes) -> dict:
    error = json.loads(body)
    assert set(error) == {"errorType", "message", "detailedMessage"}
    return error


def test_pipelined_requests_are_answered_in_order(node):
    with connect(node) as sock:
        responses = Responses(sock)
        sock.sendall(
            request(run("echo"), b'{"n": 1}')
            + request("/isAlive", method="GET")
            + request(run("slow"), b'{"delay": 0.2}')
            + request(run("echo"), method="GET")
            + request(run("echo"), b'{"n": 2}')
        )
        first, alive, slow, refused, last = (responses.next() for _ in range(5))
        assert first[0] == 200 and json.loads(first[2])["response"] == {"n": 1}
        assert alive[0] == 200 and json.loads(alive[2]) == {"alive": True}
        assert slow[0] == 200 and json.loads(slow[2])["response"] == 0.2
        assert refused[0] == 405 and error_of(refused[2])["errorType"] == "MethodNotAllowed"
        assert last[0] == 200 and json.loads(last[2])["response"] == {"n": 2}
        sock.sendall(request(run("echo"), b'{"n": 3}'))  # still open: a 405 needs no close
        assert json.loads(responses.next()[2])["response"] == {"n": 3}


def test_a_client_that_half_closes_after_its_requests_gets_its_answers(node):
    with connect(node) as sock:
        responses = Responses(sock)
        sock.sendall(request(run("slow"), b'{"delay": 0.2}') + request(run("echo"), b'{"n": 1}'))
        sock.shutdown(socket.SHUT_WR)
        assert json.loads(responses.next()[2])["response"] == 0.2
        status, headers, body = responses.next()
        assert status == 200
        assert json.loads(body)["response"] == {"n": 1} and headers["Connection"] == "close"
        assert responses.closed()


def test_chunked_bodies_pipelined(node):
    chunked = "Transfer-Encoding: chunked\r\n"
    with connect(node) as sock:
        responses = Responses(sock)
        sock.sendall(
            request(run("echo"), method="POST", headers=chunked)
            + b'5\r\n{"n":\r\n3\r\n 1}\r\n0\r\n\r\n'
            + request(run("echo"), method="POST", headers=chunked)
            + b'8\r\n{"n": 2}\r\n0\r\n\r\n'
        )
        assert [json.loads(responses.next()[2])["response"] for _ in range(2)] == [{"n": 1}, {"n": 2}]


def test_an_http_1_0_client_keeps_its_connection_when_it_asks(node):
    with connect(node) as sock:
        responses = Responses(sock)
        for number in range(2):
            body = json.dumps({"n": number}).encode()
            sock.sendall(
                f"POST {run('echo')} HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            status, headers, answer = responses.next()
            assert status == 200 and headers["Connection"] == "keep-alive"
            assert json.loads(answer)["response"] == {"n": number}
        sock.sendall(f"POST {run('echo')} HTTP/1.0\r\nContent-Length: 2\r\n\r\n{{}}".encode())
        assert responses.next()[0] == 200 and responses.closed()


def test_keep_alive_under_concurrency(node):
    host, port = address(node)

    def client(number: int) -> list[int]:
        connection = http.client.HTTPConnection(host, port, timeout=30)
        answers = []
        for call in range(30):
            connection.request("POST", run("echo"), json.dumps({"client": number, "call": call}))
            response = connection.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["response"] == {"client": number, "call": call}
            if call == 0:
                first_socket = connection.sock
            assert connection.sock is first_socket  # the same connection throughout
            answers.append(call)
        connection.close()
        return answers

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert all(answers == list(range(30)) for answers in pool.map(client, range(16)))


def test_an_upgrade_request_is_answered_in_http_1_1_then_closed(node):
    with connect(node) as sock:
        responses = Responses(sock)
        sock.sendall(
            request(
                "/isAlive",
                method="GET",
                headers="Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
            )
            + b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        )
        status, headers, body = responses.next()
        assert status == 200 and json.loads(body) == {"alive": True}
        assert headers["Connection"] == "close" and responses.closed()


def test_head_is_answered_with_headers_only(node):
    with connect(node) as sock:
        responses = Responses(sock)
        sock.sendall(request(run("echo"), method="HEAD") + request("/isAlive", method="HEAD"))
        status, headers, body = responses.next(method="HEAD")
        assert status == 405 and headers["Allow"] == "POST" and int(headers["Content-Length"]) > 0 and body == b""
        status, headers, body = responses.next(method="HEAD")  # tornado's handlers, no HEAD method
        assert status == 405 and headers["Content-Type"] == "application/json" and body == b""


def test_expect_continue_is_honoured(node):
    body = b'{"n": 100}'
    with connect(node) as sock:
        responses = Responses(sock)
        sock.sendall(request(run("echo"), headers="Expect: 100-continue\r\n")[:-2] + b"Content-Length: 10\r\n\r\n")
        assert responses.file.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert responses.file.readline() == b"\r\n"
        sock.sendall(body)
        assert json.loads(responses.next()[2])["response"] == {"n": 100}


@pytest.mark.parametrize(
    "raw, status, error_type, fragment",
    [
        (
            b"GET /admin/api/services HTTP/1.1\r\nHost: test\r\nAuthorization: Basic \xc3\xa9\xc3\xa9\r\n\r\n",
            401,
            "Unauthorized",
            "admin key",
        ),
        (
            request(run("echo"), headers="Transfer-Encoding: chunked\r\n") + b"zz\r\nabc\r\n0\r\n\r\n",
            400,
            "BadRequest",
            "chunk size",
        ),
        (request(run("echo"), headers="Content-Length: -1\r\n") + b"{}", 400, "BadRequest", "Content-Length"),
        (
            request(run("echo"), headers="Content-Length: 2\r\nTransfer-Encoding: chunked\r\n")
            + b"2\r\n{}\r\n0\r\n\r\n",
            400,
            "BadRequest",
            "Content-Length",
        ),
        (f"POST {run('echo')} HTTP/1.1\r\nContent-Length: 2\r\n\r\n{{}}".encode(), 400, "BadRequest", "Host"),
        (request("/isAlive?" + "x" * 100_000, method="GET"), 414, "UriTooLong", "8192 bytes"),
        (request("/isAlive", method="GET", headers="X-Big: " + "y" * 70_000 + "\r\n"), 431, "HeadersTooLarge", ""),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32), 400, "BadRequest", "malformed HTTP request"),
    ],
    ids=[
        "basic-not-ascii",
        "bad-chunk",
        "negative-length",
        "length-and-chunked",
        "no-host",
        "long-url",
        "big-header",
        "tls",
    ],
)
def test_malformed_requests_get_a_json_error(node, raw, status, error_type, fragment):
    with connect(node) as sock:
        responses = Responses(sock)
        sock.sendall(raw)
        got, headers, body = responses.next()
        assert got == status, body
        assert headers["Content-Type"] == "application/json"
        error = error_of(body)
        assert error["errorType"] == error_type and fragment in error["message"], error
        if status != 401:
            assert headers["Connection"] == "close" and responses.closed()
    assert "Traceback" not in node.output


def test_a_malformed_request_pipelined_behind_another_is_refused_in_its_turn(node):
    with connect(node) as sock:
        responses = Responses(sock)
        sock.sendall(
            request(run("slow"), b'{"delay": 0.2}')
            + request(run("echo"), headers="Transfer-Encoding: chunked\r\n")
            + b"ZZZ\r\nabc\r\n0\r\n\r\n"
        )
        assert json.loads(responses.next()[2])["response"] == 0.2
        status, headers, body = responses.next()
        assert status == 400 and error_of(body)["errorType"] == "BadRequest", body
        assert headers["Connection"] == "close" and responses.closed()


def test_basic_auth_that_is_not_ascii_is_no_key():
    assert basic_auth_user("Basic éé") is None
    assert basic_auth_user("Basic Zm9vOg==") == "foo"


def test_a_huge_exception_message_is_cut_with_a_note(node):
    with connect(node) as sock:
        responses = Responses(sock)
        sock.sendall(request(run("raises"), json.dumps({"message": "m" * 1_000_000}).encode()))
        status, _, body = responses.next()
    assert status == 500 and len(body) < 40_000
    error = error_of(body)
    assert error["errorType"] == "FunctionError" and "message cut" in error["detailedMessage"]


def test_a_body_over_the_limit_is_413_and_the_node_serves_on(node):
    with connect(node) as sock:
        responses = Responses(sock)
        sock.sendall(request(run("echo"), headers=f"Content-Length: {2 << 20}\r\n"))
        status, headers, body = responses.next()
        assert status == 413 and error_of(body)["errorType"] == "BodyTooLarge"
        assert headers["Connection"] == "close"
    with connect(node) as sock:
        sock.sendall(request(run("echo"), b"{}"))
        assert Responses(sock).next()[0] == 200


def wait_closed(responses: Responses, at_most: float) -> float:
    """Seconds until the node closes the connection (reading whatever it sends before)."""
    started = time.monotonic()
    responses.sock.settimeout(at_most)
    assert responses.closed()
    return time.monotonic() - started


def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout(node):
    with connect(node) as sock:
        responses = Responses(sock)
        sock.sendall(request(run("echo"), b"{}"))
        assert responses.next()[0] == 200
        assert wait_closed(responses, 4 * TIMEOUT) > TIMEOUT - 0.5


def test_a_slow_body_is_answered_408_after_the_body_timeout(node):
    with connect(node) as sock:
        responses = Responses(sock)
        sock.sendall(request(run("echo"), headers="Content-Length: 100\r\n") + b'{"x": ')
        started = time.monotonic()
        status, _, body = responses.next()
        assert status == 408 and error_of(body)["errorType"] == "RequestTimeout"
        assert TIMEOUT - 0.5 < time.monotonic() - started < 4 * TIMEOUT
        assert responses.closed()


def test_slowloris_flood_is_capped_then_timed_out_and_the_node_serves_on(node):
    """More trickling clients than the cap: the cap holds, each is answered 408 in its turn,
    and a normal client waits at most a few header timeouts, then is served. With fronts, the
    kernel spreads connections over them at random: twice as many fill every front's cap."""
    flood = []
    try:
        for _ in range(2 * CAP * node.fronts):
            sock = connect(node, timeout=8 * TIMEOUT)
            sock.sendall(b"POST " + run("echo").encode() + b" HTTP/1.1\r\nHo")
            flood.append(Responses(sock))
        with connect(node, timeout=1) as late:
            late.sendall(request(run("echo"), b'{"late": true}'))
            with pytest.raises(TimeoutError):  # past the cap: not accepted while the flood holds
                late.recv(1)
            late.settimeout(8 * TIMEOUT)
            status, _, body = Responses(late).next()
            assert status == 200 and json.loads(body)["response"] == {"late": True}
        for responses in flood:
            status, _, body = responses.next()
            assert status == 408 and error_of(body)["errorType"] == "RequestTimeout"
    finally:
        for responses in flood:
            responses.sock.close()


def test_an_idle_flood_is_closed_and_the_node_serves_on(node):
    flood = [connect(node, timeout=10 * TIMEOUT) for _ in range(3 * CAP)]
    try:
        for sock in flood:  # each is accepted in its turn and closed after the header timeout
            assert Responses(sock).closed()
        with connect(node) as sock:
            sock.sendall(request(run("echo"), b"{}"))
            assert Responses(sock).next()[0] == 200
    finally:
        for sock in flood:
            sock.close()


@pytest.mark.parametrize("command", ["run", "serve"])
def test_the_connection_settings_are_documented_in_help(command):
    text = apinode(command, "--help").stdout
    for option in ("--max-connections", "--idle-timeout", "--header-timeout", "--body-timeout", "--no-query-log"):
        assert option in text
    assert "75% of the open-file limit" in text


def test_the_open_file_limit_is_raised_to_the_hard_limit():
    code = (
        "import resource; from apinode.node.front import raise_open_file_limit; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024)); "
        "print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.split() == ["1024", "1024"]
    assert default_max_connections(1024) == 768 and default_max_connections(1 << 20) == 10_000


FILE_LIMIT = 96


def test_out_of_file_descriptors_pauses_accepting_and_logs_once(tmp_path):
    limited = (
        sys.executable,
        "-c",
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({FILE_LIMIT}, {FILE_LIMIT})); "
        "sys.argv[0] = 'apinode'; runpy.run_module('apinode.cli', run_name='__main__')",
    )
    node = NodeProcess("run", SERVICE, "--max-connections", "1000", program=limited)
    flood = []
    try:
        for _ in range(FILE_LIMIT + 20):  # past the limit: the rest wait in the backlog
            flood.append(connect(node))
        node.wait_for_output("cannot accept connections: Too many open files")
        deadline = time.monotonic() + 4 * ACCEPT_PAUSE
        while time.monotonic() < deadline:  # it retries every ACCEPT_PAUSE, and says so once
            assert node.output.count("Too many open files") == 1
            time.sleep(0.1)
    finally:
        for sock in flood:
            sock.close()
    try:
        with connect(node) as sock:
            sock.sendall(request(run("echo"), b'{"after": 1}'))
            status, _, body = Responses(sock).next()
            assert status == 200 and json.loads(body)["response"] == {"after": 1}
        assert node.output.count("Too many open files") == 1
    finally:
        assert node.stop() == 0


def test_sigterm_drains_kept_alive_connections(tmp_path):
    node = NodeProcess("run", SERVICE)
    try:
        idle = connect(node)
        idle.sendall(request(run("echo"), b"{}"))
        idle_responses = Responses(idle)
        assert idle_responses.next()[0] == 200  # kept alive, idle from now on
        busy = connect(node)
        busy_responses = Responses(busy)
        started = tmp_path / "started"
        busy.sendall(
            request(run("slow"), json.dumps({"delay": 1.0, "started": str(started)}).encode())
            + request(run("echo"), b'{"pipelined": true}')
        )
        eventually(started.exists)
        node.process.terminate()
        assert wait_closed(idle_responses, 5) < 2  # the idle connection is closed at once, unanswered
        status, headers, body = busy_responses.next()  # the request in flight is answered whole
        assert status == 200 and json.loads(body)["response"] == 1.0 and "Connection" not in headers
        status, headers, body = busy_responses.next()  # and the one read behind it, the last
        assert status == 200 and json.loads(body)["response"] == {"pipelined": True}
        assert headers["Connection"] == "close" and busy_responses.closed()
        assert node.process.wait(30) == 0
    finally:
        node.stop()
