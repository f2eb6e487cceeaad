"""Function shapes against a real node: async functions, streaming generators, batching."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import re
import socket
import time
import urllib.parse

import dataikuapi
import pytest
import requests
from openapi_spec_validator import validate
from support import SERVICES, NodeProcess, children, cmdline, connection_owner, eventually

from apinode.client import NodeClient
from apinode.packaging.definitions import DefinitionError, EndpointDef, TestQuery
from apinode.packaging.magic_syntax import MagicUsageError, parse_endpoint_magic
from apinode.runtime import framing
from apinode.runtime.batch import BatchInvoker


@pytest.fixture(scope="module", params=["1", "2"], ids=["1 front", "2 fronts"])
def node(request):
    """The node, with one front, then with two (streams relayed from a front process too)."""
    node = NodeProcess("run", str(SERVICES / "shapes"), "--fronts", request.param, ready_timeout=120)
    yield node
    assert node.stop() == 0


def run_url(node, endpoint: str) -> str:
    return f"{node.url}/public/api/v1/shapes/{endpoint}/run"


def test_an_async_function_is_awaited_on_its_pipelines_loop_kept_across_calls(node):
    api = dataikuapi.APINodeClient(node.url, "shapes")
    answers = [api.run_function("later", x=x, delay=0.01)["response"] for x in range(3)]
    assert [answer["x"] for answer in answers] == [0, 1, 2]
    assert len({answer["pid"] for answer in answers}) == 1  # one pipeline ...
    assert all(answer["sameLoop"] for answer in answers)  # ... one loop, kept


def test_an_async_function_past_its_execution_timeout_is_answered_504(node):
    answer = requests.post(run_url(node, "hangs"), json={}, timeout=30)
    assert answer.status_code == 504
    assert requests.post(run_url(node, "later"), json={"x": 1}, timeout=30).json()["response"]["x"] == 1


def stream(node, endpoint: str, body: dict, accept: str) -> requests.Response:
    answer = requests.post(run_url(node, endpoint), json=body, headers={"Accept": accept}, stream=True, timeout=30)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == accept and answer.headers["Transfer-Encoding"] == "chunked"
    return answer


def sse_events(lines) -> list[tuple[str, object]]:
    """(event, data) of each server-sent event, as they are read."""
    events, name = [], "message"
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[len("data: ") :])))
            name = "message"
    return events


def test_a_generator_streams_server_sent_events_as_items_are_produced(node, tmp_path):
    gate = tmp_path / "gate"
    with stream(node, "count", {"n": 3, "gate": str(gate)}, "text/event-stream") as answer:
        lines = answer.iter_lines(decode_unicode=True)
        assert next(lines) == 'data: {"i":0}'  # the generator is still waiting for the gate
        gate.touch()
        events = sse_events(lines)
    assert events[:2] == [("message", {"i": 1}), ("message", {"i": 2})]
    name, end = events[2]
    assert name == "end" and set(end["timing"]) == {"wait", "execution", "total"}
    assert end["apiContext"]["endpointId"] == "count" and len(events) == 3


def test_an_async_generator_streams_json_lines(node):
    with stream(node, "ticks", {"n": 3}, "application/x-ndjson") as answer:
        lines = [json.loads(line) for line in answer.iter_lines()]
    assert lines[:3] == [0, 1, 2]
    assert lines[3]["event"] == "end" and "timing" in lines[3]["data"] and len(lines) == 4


def test_without_accept_the_items_are_collected_for_every_client(node):
    api = dataikuapi.APINodeClient(node.url, "shapes")
    assert api.run_function("count", n=3)["response"] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert api.run_function("ticks", n=2)["response"] == [0, 1]


def test_an_error_mid_stream_is_an_error_event_and_the_connection_stays_usable(node):
    with requests.Session() as session:
        for accept in ("text/event-stream", "application/x-ndjson"):
            answer = session.post(run_url(node, "count"), json={"n": 5, "fail_at": 2}, headers={"Accept": accept})
            assert answer.status_code == 200
            if accept == "text/event-stream":
                events = sse_events(answer.text.splitlines())
            else:
                events = [("message", line) for line in map(json.loads, answer.text.splitlines())]
                events[-1] = (events[-1][1]["event"], events[-1][1]["data"])
            assert events[:2] == [("message", {"i": 0}), ("message", {"i": 1})]
            name, error = events[2]
            assert name == "error" and error["errorType"] == "FunctionError" and "ValueError: no 2" in error["message"]
        # the same keep-alive connection: a failure before any item is a plain 500
        answer = session.post(
            run_url(node, "count"), json={"n": 5, "fail_at": 0}, headers={"Accept": "text/event-stream"}
        )
        assert answer.status_code == 500 and answer.json()["errorType"] == "FunctionError"


def test_the_client_plays_a_query_as_a_stream_handing_each_item_as_it_comes(node):
    client, items = NodeClient(node.url), []
    played = client.play("shapes", "count", TestQuery("three", {"n": 3}, [{"i": 0}, {"i": 1}, {"i": 2}]), items.append)
    assert (played.status, played.verdict, items) == (200, "PASS", [{"i": 0}, {"i": 1}, {"i": 2}])
    items.clear()
    failed = client.play("shapes", "count", TestQuery("fails", {"n": 3, "fail_at": 2}), items.append)
    assert failed.status == 500 and failed.answer["errorType"] == "FunctionError" and items == [{"i": 0}, {"i": 1}]
    plain = client.play("shapes", "later", TestQuery("plain", {"x": 4}), items.append)  # not a generator
    assert plain.status == 200 and plain.answer["x"] == 4


def test_a_client_leaving_mid_stream_stops_the_generator_and_frees_its_pipeline(node):
    with stream(node, "endless", {}, "text/event-stream") as answer:
        lines = answer.iter_lines(decode_unicode=True)
        first = json.loads(next(lines)[len("data: ") :])
    # the only pipeline is free again: the next call is served, by the same process
    collected = requests.post(run_url(node, "endless"), json={"limit": 2}, timeout=10).json()["response"]
    assert [item["i"] for item in collected] == [0, 1] and collected[0]["pid"] == first["pid"]


def slow_reader(node) -> socket.socket:
    """A connection with a small receive buffer; with 2 fronts, one the front process accepted,
    so that the stream crosses the link to the node process."""
    address = urllib.parse.urlsplit(node.url)
    fronts = [pid for pid in children(node.process.pid) if "apinode.node.relay_front" in cmdline(pid)]
    for _ in range(64):  # the kernel spreads connections over the processes: 2**-64 to miss
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        client.settimeout(30)
        client.connect((address.hostname, address.port))
        if not fronts:
            return client
        if eventually(lambda client=client: connection_owner(client, [node.process.pid, *fronts])) in fronts:
            return client
        client.close()
    raise AssertionError("no connection reached the front process")


def test_a_client_reading_slowly_holds_the_generator_back_and_then_gets_every_item(node, tmp_path):
    """Backpressure: while the client reads nothing, the node stops reading the pipeline, so
    the generator cannot run ahead into the node's memory; read on, the stream is whole."""
    items, size, progress = 200, 1 << 18, tmp_path / "progress"  # 50 MB, far past every socket buffer
    body = json.dumps({"n": items, "size": size, "progress": str(progress)}).encode()
    with slow_reader(node) as client:
        client.sendall(
            b"POST /public/api/v1/shapes/flood/run HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
        )
        received = bytearray(client.recv(1 << 16))
        made = lambda: int(progress.read_text() or 0) if progress.exists() else 0  # noqa: E731
        eventually(made)
        watched_until = time.monotonic() + 2  # without backpressure, 2 s make all 50 MB
        while time.monotonic() < watched_until:
            assert made() < items // 4, "the generator ran ahead of a client that reads nothing"
            time.sleep(0.05)
        while not received.endswith(b"0\r\n\r\n"):
            chunk = client.recv(1 << 20)
            assert chunk, "the stream ended early"
            received += chunk
    assert received.count(b"data: {") == items + 1  # every item, then the end event
    assert b"event: end" in received and made() == items


def test_the_openapi_document_describes_streams_and_stays_valid(node):
    document = requests.get(f"{node.url}/public/api/v1/shapes/openapi.json", timeout=10).json()
    validate(document)
    streamed = document["paths"]["/public/api/v1/shapes/count/run"]["post"]["responses"]["200"]["content"]
    assert set(streamed) == {"application/json", "text/event-stream", "application/x-ndjson"}
    assert streamed["application/json"]["schema"]["properties"]["response"]["type"] == "array"
    plain = document["paths"]["/public/api/v1/shapes/later/run"]["post"]["responses"]["200"]["content"]
    assert set(plain) == {"application/json"}


def test_concurrent_calls_to_a_batched_endpoint_are_answered_each_with_its_own_result(node):
    api = dataikuapi.APINodeClient(node.url, "shapes")
    with concurrent.futures.ThreadPoolExecutor(16) as threads:
        answers = list(threads.map(lambda x: api.run_function("scores", x=x), range(16)))
    assert [answer["response"]["x"] for answer in answers] == [2 * x for x in range(16)]
    assert max(answer["response"]["batchSize"] for answer in answers) > 1  # one pipeline, batches of several
    assert all(set(answer["timing"]) == {"wait", "execution", "total"} for answer in answers)


def test_a_bad_request_in_a_batch_gets_its_own_400_and_the_others_run(node):
    def call(body):
        return requests.post(run_url(node, "scores"), data=body, timeout=30)

    bodies = ['{"x": 1}', "not json", '{"x": 3}', "[1]", '{"x": "two"}', '{"y": 4}', '{"x": 5, "fail": 0}']
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as threads:
        answers = list(threads.map(call, bodies))
    assert [answer.status_code for answer in answers] == [200, 400, 200, 400, 400, 400, 400]
    assert [answers[i].json()["response"]["x"] for i in (0, 2)] == [2, 6]
    assert [answer.json()["errorType"] for answer in answers[1:2] + answers[3:]] == ["BadRequest"] * 2 + [
        "InvalidParameters"
    ] * 3
    # each item is checked against what `batch: list[Row]` says of one (Row: {x: int, fail?: bool})
    assert [answer.json()["message"] for answer in answers[4:]] == [
        "parameter 'x' must be an integer, got a string (\"two\")",
        "the request must be a Row object, got an object without 'x'",
        "parameter 'fail' must be a boolean, got an integer (0)",
    ]


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0


def test_the_bad_items_of_one_batch_are_refused_and_the_good_ones_run_built_as_their_hint_says():
    calls = []

    def norms(batch: list[Point]) -> list[int]:
        calls.append(batch)
        return [abs(point.x) + abs(point.y) for point in batch]

    bodies = [b'{"x": 1, "y": -2}', b'{"x": 1.5}', b'{"x": 3, "z": 1}', b'{"x": 4}']
    answer = BatchInvoker(norms)(b"".join(framing.pack(framing.CALL, body) for body in bodies))
    outcomes = [(status, json.loads(payload)) for _, status, _, payload in framing.unpack_all(answer.payload)]
    assert calls == [[Point(1, -2), Point(4)]]  # one call, of the good items, built
    assert [status for status, _ in outcomes] == [200, 400, 400, 200]
    assert [outcomes[0][1], outcomes[3][1]] == [3, 4]
    assert outcomes[1][1]["message"] == "parameter 'x' must be an integer, got a number (1.5)"
    assert outcomes[2][1]["message"] == "the request must be a Point object, got an object with unexpected 'z'"


def test_a_batch_answered_with_a_list_of_the_wrong_length_is_a_500_naming_both_lengths(node):
    answer = requests.post(run_url(node, "short"), json={"x": 1}, timeout=30)
    assert answer.status_code == 500
    assert "called with 1 request and returned 0 results" in answer.json()["message"]


@pytest.mark.parametrize(
    "batch, message",
    [
        ({"maxSize": 0, "maxWaitMs": 5}, "endpoints[0].batch.maxSize: expected an integer >= 1, got 0"),
        ({"maxSize": 8}, "endpoints[0].batch.maxWaitMs: expected an integer >= 0, got nothing"),
        ({"maxSize": 8, "maxWait": 5}, 'endpoints[0].batch: unknown field "maxWait"'),
    ],
)
def test_a_bad_batch_definition_names_its_field(batch, message):
    with pytest.raises(DefinitionError, match=re.escape(message)):
        EndpointDef.from_json({"id": "e", "code": "c.py", "function": "f", "batch": batch}, "endpoints[0]")


def test_the_magic_options_give_the_batch_definition():
    magic = parse_endpoint_magic("s/e --function f --batch-size 32 --batch-wait-ms 5")
    assert magic.batch == {"maxSize": 32, "maxWaitMs": 5}
    with pytest.raises(MagicUsageError, match="batch.maxWaitMs: expected an integer >= 0"):
        parse_endpoint_magic("s/e --function f --batch-size 32")


def test_an_exception_fails_the_whole_batch(node):
    answer = requests.post(run_url(node, "scores"), json={"x": 1, "fail": True}, timeout=30)
    assert answer.status_code == 500 and "ValueError: a failing row" in answer.json()["message"]


def test_the_openapi_document_describes_a_batched_endpoint_per_request(node):
    document = requests.get(f"{node.url}/public/api/v1/shapes/openapi.json", timeout=10).json()
    operation = document["paths"]["/public/api/v1/shapes/scores/run"]["post"]
    request = operation["requestBody"]["content"]["application/json"]["schema"]
    assert request["properties"]["x"] == {"type": "integer"} and "x" in request["required"]
    response = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert response["properties"]["response"]["type"] == "object"
