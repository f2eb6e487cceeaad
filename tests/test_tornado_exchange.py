"""Tornado handlers behind the front, in-process: chunked output, a streamed upload whose
`prepare` raises the body limit, flow control, and HTTP/1.0 keep-alive."""

from __future__ import annotations

import asyncio
import http.client
import io
import socket

import tornado.web

from apinode.node.front import Front, FrontSettings
from apinode.node.handlers import JsonHandler, limit_body
from apinode.node.http_connection import Exchange, HttpConnection, RequestHead
from apinode.node.tornado_exchange import TornadoExchange

LIMIT = 1 << 20  # the front's body limit; the upload route raises its own to 8 MiB


class HelloHandler(JsonHandler):
    def get(self) -> None:
        self.write_json({"hello": self.request.version})


class StreamHandler(JsonHandler):
    async def get(self) -> None:
        for piece in (b"first ", b"second"):
            self.write(piece)
            await self.flush()


@tornado.web.stream_request_body
class UploadHandler(JsonHandler):
    def prepare(self) -> None:
        limit_body(self.request, 8 << 20, "the upload route's own limit")
        self.received = 0

    async def data_received(self, chunk: bytes) -> None:
        await asyncio.sleep(0)  # a handler that takes its time: the front waits for it
        self.received += len(chunk)

    def post(self) -> None:
        self.write_json({"received": self.received})


class AppRouter:
    def __init__(self) -> None:
        routes = [(r"/hello", HelloHandler), (r"/stream", StreamHandler), (r"/upload", UploadHandler)]
        self.app = tornado.web.Application(routes)

    def exchange(self, connection: HttpConnection, head: RequestHead) -> Exchange:
        return TornadoExchange(connection, head, self.app)


def serve_and(client) -> None:
    """Run a front on a free port and `client(port)` (blocking) in a thread beside it."""

    async def main() -> None:
        front = Front(AppRouter(), FrontSettings(max_body_bytes=LIMIT))
        listener = socket.create_server(("127.0.0.1", 0))
        front.serve([listener])
        try:
            await asyncio.wait_for(asyncio.to_thread(client, listener.getsockname()[1]), 60)
        finally:
            await front.drain(5)
            front.close()

    asyncio.run(main())


def response(sock: socket.socket, method: str = "GET") -> tuple[int, http.client.HTTPMessage, bytes]:
    answer = http.client.HTTPResponse(sock, method=method)
    answer.begin()
    return answer.status, answer.headers, answer.read()


def test_a_handler_that_flushes_answers_in_chunks():
    def client(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
            status, headers, body = response(sock)
            assert status == 200 and headers["Transfer-Encoding"] == "chunked" and body == b"first second"

    serve_and(client)


def test_a_streamed_upload_over_the_front_limit_that_its_route_allows():
    def upload(port: int, size: int, chunked: bool) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = io.BytesIO(b"x" * size) if chunked else b"x" * size
        connection.request("POST", "/upload", body, encode_chunked=chunked)
        answer = connection.getresponse()
        return answer.status, answer.read()

    def client(port: int) -> None:
        assert upload(port, 3 << 20, chunked=False) == (200, b'{"received":3145728}')
        assert upload(port, 3 << 20, chunked=True) == (200, b'{"received":3145728}')
        status, body = upload(port, 9 << 20, chunked=False)
        assert status == 413 and b"the upload route's own limit" in body

    serve_and(client)


def test_an_http_1_0_client_asking_for_keep_alive_is_told_so():
    def client(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for _ in range(2):
                sock.sendall(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                status, headers, body = response(sock)
                assert status == 200 and headers["Connection"] == "Keep-Alive" and body == b'{"hello":"HTTP/1.0"}'
            sock.sendall(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, body = response(sock)  # no chunks in HTTP/1.0: the body ends with the connection
            assert status == 200 and "Connection" not in headers and body == b"first second"
            assert sock.recv(1) == b""

    serve_and(client)
