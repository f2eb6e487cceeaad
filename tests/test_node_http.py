"""The node through real HTTP: every row of DESIGN.md's status table, the public client, and
what user code can do to a pipeline (print, crash, keep state, read its folders)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import socket

import dataikuapi
import pytest
import requests
from dataikuapi.utils import DataikuException
from support import SERVICES, NodeProcess, eventually


@pytest.fixture(scope="module", params=["1", "2"], ids=["1 front", "2 fronts"])
def node(tmp_path_factory, request):
    """The node, with one front, then with two (requests, errors and queues relayed from a front process too)."""
    init_log = tmp_path_factory.mktemp("init") / "inits.txt"
    node = NodeProcess(
        "run",
        str(SERVICES / "testsvc"),
        "--max-body-mb",
        "1",
        "--fronts",
        request.param,
        env={"APINODE_TEST_INIT_LOG": str(init_log)},
    )
    node.init_log = init_log
    yield node
    assert node.stop() == 0
    assert node.pipelines() == []


def run_url(node, endpoint, service="testsvc"):
    return f"{node.url}/public/api/v1/{service}/{endpoint}/run"


def post(node, endpoint, body=None, **kwargs):
    return requests.post(run_url(node, endpoint), json=body, timeout=30, **kwargs)


def assert_error(response, status, error_type, *fragments):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"errorType", "message", "detailedMessage"}
    assert body["errorType"] == error_type
    for fragment in fragments:
        assert fragment in body["message"], body
    assert "Traceback" not in response.text
    return body


def test_success_shape(node):
    response = post(node, "add", {"a": 1, "b": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["response"] == 3
    assert set(body["timing"]) == {"wait", "execution", "total"}
    assert body["timing"]["total"] >= body["timing"]["execution"] >= 0
    assert body["apiContext"]["serviceId"] == "testsvc"
    assert body["apiContext"]["endpointId"] == "add"
    assert body["apiContext"]["serviceGeneration"].startswith("g-")


def test_public_client_runs_functions(node):
    client = dataikuapi.APINodeClient(node.url, "testsvc")
    assert client.run_function("add", a=40, b=2)["response"] == 42
    assert client.run_function("nothing")["response"] is None
    with pytest.raises(DataikuException, match="FunctionError: ValueError: broken"):
        client.run_function("raises", message="broken")


def test_kwargs_receives_the_other_attributes(node):
    body = post(node, "echo", {"z": 5, "x": 1, "y": [2]}).json()
    assert body["response"] == {"z": 5, "data": {"x": 1, "y": [2]}}


def test_none_is_a_valid_result(node):
    assert post(node, "nothing", {}).json()["response"] is None


def test_is_alive(node):
    assert requests.get(f"{node.url}/isAlive", timeout=10).status_code == 200


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"{not json", "not a JSON object"),
        (b"[1, 2]", "got a JSON array"),
        (b'"text"', "got a JSON string"),
    ],
)
def test_400_body_not_a_json_object(node, data, fragment):
    response = requests.post(run_url(node, "add"), data=data, timeout=10)
    assert_error(response, 400, "BadRequest", fragment)


def test_400_names_missing_and_unexpected_parameters(node):
    body = assert_error(
        post(node, "add", {"b": 1, "c": 2}),
        400,
        "InvalidParameters",
        "missing parameter 'a'",
        "unexpected parameter 'c'",
    )
    assert "add(a, b=0)" in body["message"]


def test_404_unknown_service_and_endpoint(node):
    assert_error(requests.post(run_url(node, "add", service="nope"), json={}, timeout=10), 404, "NotFound", "'nope'")
    assert_error(post(node, "nope", {}), 404, "NotFound", "'nope'", "add")
    assert_error(requests.get(f"{node.url}/no/such/url", timeout=10), 404, "NotFound")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_405_other_methods(node, method):
    response = requests.request(method, run_url(node, "add"), timeout=10)
    assert_error(response, 405, "MethodNotAllowed", "POST")


def test_413_body_over_the_limit(node):
    response = requests.post(run_url(node, "echo"), data=b'{"x": "' + b"a" * (1 << 20) + b'"}', timeout=30)
    assert_error(response, 413, "BodyTooLarge", "limit")
    assert post(node, "add", {"a": 1}).status_code == 200


def test_413_chunked_body_over_the_limit(node):
    def chunks():
        yield b'{"x": "'
        for _ in range(24):  # 1.5 MiB: over the 1 MiB limit, read whole by the connection
            yield b"a" * 65536
        yield b'"}'

    assert_error(requests.post(run_url(node, "echo"), data=chunks(), timeout=30), 413, "BodyTooLarge", "limit")
    assert post(node, "add", {"a": 1}).status_code == 200


def test_500_function_raised_without_traceback(node):
    body = assert_error(
        post(node, "raises", {"message": "no such customer"}), 500, "FunctionError", "ValueError: no such customer"
    )
    assert "line" not in body["detailedMessage"]
    node.wait_for_output("raise ValueError(message)")  # the author finds the traceback in the log


def test_a_function_failure_is_logged_at_error_with_the_endpoint_name(node):
    post(node, "raises", {"message": "logged at error"})
    node.wait_for_output("ValueError: logged at error")
    lines = node.output.splitlines()
    start = next(index for index, line in enumerate(lines) if "logged at error" in line or "raised:" in line)
    assert re.search(r" ERROR apinode\.pipeline: \[testsvc/raises pid \d+\] the function raised:$", lines[start])
    report = lines[start : lines.index("ValueError: logged at error", start) + 1]
    assert report[1] == "Traceback (most recent call last):" and "raise ValueError(message)" in "\n".join(report)
    assert not [line for line in lines if " INFO " in line and ("Traceback" in line or "ValueError" in line)]


@pytest.mark.parametrize(
    "call, kind",
    [
        (lambda client: client.predict_record("add", {"a": 1}), "prediction"),
        (lambda client: client.predict_records("add", [{"features": {"a": 1}}]), "prediction"),
        (lambda client: client.lookup_record("add", {"a": 1}), "dataset lookup"),
    ],
)
def test_other_kinds_of_endpoint_say_to_call_run_function(node, call, kind):
    with pytest.raises(DataikuException) as refused:
        call(dataikuapi.APINodeClient(node.url, "testsvc"))
    message = str(refused.value)
    assert message.startswith(f"NotFound: {kind} endpoints do not exist on this node"), message
    assert "run_function('add', **params)" in message and "/public/api/v1/testsvc/add/run" in message


def test_500_result_not_serializable_names_the_type(node):
    assert_error(post(node, "notjson", {}), 500, "ResultNotSerializable", 'response["values"][1] is a range')


def test_500_endpoint_that_failed_to_load_while_others_serve(node):
    assert_error(post(node, "broken", {}), 500, "EndpointLoadFailed", "this endpoint cannot load")
    assert "broken: FAILED to load" in node.output
    assert post(node, "add", {"a": 1}).status_code == 200


def test_crash_fails_its_request_and_the_pipeline_is_replaced(node):
    first = post(node, "crash", {}).json()["response"]
    assert_error(post(node, "crash", {"exit_code": 3}), 500, "PipelineDied")
    second = eventually(lambda: post(node, "crash", {}).json().get("response"))
    assert second != first
    assert node.pipelines("testsvc/crash") == [second]
    assert post(node, "add", {"a": 1}).status_code == 200


def test_a_huge_line_of_output_never_blocks_the_pipeline(node):
    for _ in range(3):  # several MiB through the pipe: it is drained whatever the line length
        assert post(node, "shout", {"size": 2 << 20}).json()["response"] == 2 << 20


def test_a_body_nested_too_deeply_is_a_400_and_the_pipeline_lives(node):
    pipelines = node.pipelines("testsvc/echo")
    deep = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert_error(requests.post(run_url(node, "echo"), data=deep, timeout=30), 400, "BadRequest", "nested too deeply")
    assert node.pipelines("testsvc/echo") == pipelines


def test_a_result_json_cannot_hold_is_a_500_not_a_dead_pipeline(node):
    assert_error(post(node, "tuplekeys", {}), 500, "ResultNotSerializable", "keys must be str")
    assert post(node, "tuplekeys", {}).status_code == 500  # same pipeline, still answering


def test_a_base_url_ending_in_a_slash_works_with_the_public_client(node):
    client = dataikuapi.APINodeClient(node.url + "/", "testsvc")
    assert client.run_function("add", a=1, b=1)["response"] == 2


def test_head_is_405_with_headers_only(node):
    response = requests.head(run_url(node, "add"), timeout=10)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"


def test_prints_go_to_the_log_not_the_channel(node):
    assert post(node, "printer", {"text": "ping"}).json()["response"] == "ping"
    node.wait_for_output("printed to stdout: ping")
    node.wait_for_output("printed to stderr: ping")


def test_initialization_runs_once_and_state_stays_in_the_pipeline(node):
    replies = [post(node, "state", {}).json()["response"] for _ in range(3)]
    assert [reply["calls"] for reply in replies] == [1, 2, 3]
    assert len({reply["pid"] for reply in replies}) == 1
    assert node.init_log.read_text().split() == [str(pid) for pid in node.templates("testsvc/state")]


def test_folders_are_absolute_and_in_declared_order(node):
    body = post(node, "folders", {}).json()["response"]
    assert body["words"] == ["beta", "alpha"]
    assert all(os.path.isabs(folder) for folder in body["folders"])


def test_floor_pipelines_are_started_at_load(node):
    assert len(node.pipelines("testsvc/floor")) == 2


def test_scales_up_to_ceil_then_down_to_cruise(node):
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        replies = list(pool.map(lambda _: post(node, "scale", {"delay": 1.0}), range(5)))
    assert all(reply.status_code == 200 for reply in replies)
    assert len({reply.json()["response"]["pid"] for reply in replies}) == 3
    eventually(lambda: len(node.pipelines("testsvc/scale")) == 1)


def hold_pipeline(pool, node, endpoint, tmp_path, delay):
    """Start a slow request and return once it runs on the endpoint's only pipeline."""
    started = tmp_path / "started"
    running = pool.submit(post, node, endpoint, {"delay": delay, "started": str(started)})
    eventually(started.exists)
    return running


def test_full_queue_rejects_at_once_with_retry_after(node, tmp_path):
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        running = hold_pipeline(pool, node, "narrow", tmp_path, delay=1.5)
        contenders = [pool.submit(post, node, "narrow", {}) for _ in range(2)]
        replies = sorted((c.result() for c in contenders), key=lambda r: r.status_code)
        assert replies[0].status_code == 200
        assert_error(replies[1], 503, "QueueFull", "queue is full")
        assert replies[1].headers["Retry-After"]
        assert replies[1].elapsed.total_seconds() < 1
        assert running.result().status_code == 200


def test_queue_timeout_rejects_at_the_timeout(node, tmp_path):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = hold_pipeline(pool, node, "timeout", tmp_path, delay=2)
        response = post(node, "timeout", {})
        assert_error(response, 503, "QueueTimeout", "300 ms")
        assert 0.25 < response.elapsed.total_seconds() < 1.5
        assert response.headers["Retry-After"]
        assert running.result().status_code == 200


def queue_depth(node, endpoint):
    """The endpoint's queue depth, as the node's Prometheus metrics show it."""
    text = requests.get(f"{node.url}/metrics", timeout=10).text
    prefix = "apinode_queue_depth{"
    for line in text.splitlines():
        if line.startswith(prefix) and f'endpoint="{endpoint}"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    raise AssertionError(f"no queue depth for {endpoint} in:\n{text}")


def test_queue_is_first_in_first_out(node, tmp_path):
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        running = hold_pipeline(pool, node, "fifo", tmp_path, delay=3)
        queued = []
        for tag in range(5):
            queued.append(pool.submit(post, node, "fifo", {"tag": tag}))
            eventually(lambda tag=tag: queue_depth(node, "fifo") == tag + 1)
        replies = [future.result().json()["response"] for future in queued]
        assert running.result().status_code == 200
    finished = sorted(replies, key=lambda reply: reply["at"])
    assert [reply["tag"] for reply in finished] == [0, 1, 2, 3, 4]


def test_a_caller_that_goes_away_leaves_the_queue(node, tmp_path):
    abandoned = tmp_path / "abandoned-ran"  # the function creates it if it ever runs the request
    body = json.dumps({"started": str(abandoned)}).encode()
    request = (
        b"POST /public/api/v1/testsvc/fifo/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = hold_pipeline(pool, node, "fifo", tmp_path, delay=2)
        host, port = node.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as caller:
            caller.sendall(request)
            eventually(lambda: queue_depth(node, "fifo") == 1)
        eventually(lambda: queue_depth(node, "fifo") == 0)
        assert running.result().status_code == 200
    assert post(node, "fifo", {}).status_code == 200  # FIFO: the abandoned request would have run first
    assert not abandoned.exists()
    metrics = requests.get(f"{node.url}/metrics", timeout=10).text
    assert any('endpoint="fifo"' in line and 'status="499"' in line for line in metrics.splitlines()), metrics
