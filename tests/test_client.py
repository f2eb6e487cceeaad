"""apinode.client against a real `apinode serve`: run URLs, the admin API, the upload route,
playing test queries, and the node's JSON error carried by NodeError."""

from __future__ import annotations

import pytest
from support import NodeProcess, make_admin_key, make_bundle

from apinode.client import Answer, NodeClient, NodeError
from apinode.packaging.definitions import TestQuery


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    key = make_admin_key(data_dir)
    node = NodeProcess("serve", "--data-dir", str(data_dir))
    node.key = key
    yield node
    assert node.stop() == 0


@pytest.fixture
def admin(node):
    return NodeClient(node.url, node.key)


def test_upload_switch_run_and_play(node, admin, tmp_path):
    admin.create_service("cl")
    assert admin.upload("cl", make_bundle(tmp_path, "cl", "g1")) == "g1"  # a file, streamed
    assert admin.upload("cl", make_bundle(tmp_path, "cl", "g2").read_bytes()) == "g2"  # bytes
    assert admin.generations("cl") == {"generations": ["g1", "g2"]}
    assert admin.switch_to("cl", "g1")["activeGeneration"] == "g1"
    answer = NodeClient(node.url).run("cl", "which", b'{"delay": 0}')
    assert answer.status == 200 and answer.json()["response"]["generation"] == "g1"
    played = NodeClient(node.url).play("cl", "which", TestQuery("q", {}, {"generation": "g1"}))
    assert (played.status, played.verdict) == (200, "FAIL")  # the pid differs: judged, not assumed
    assert played.answer["generation"] == "g1" and played.time_ms > 0
    assert admin.action("cl", "disable")["enabled"] is False
    assert admin.action("cl", "enable")["enabled"] is True
    assert "cl" in admin.metrics()["services"]
    admin.delete_service("cl")


def test_an_error_carries_the_nodes_json(admin):
    with pytest.raises(NodeError) as caught:
        admin.delete_service("nope")
    error = caught.value
    assert (error.status, error.error_type) == (404, "NotFound")
    assert error.message.startswith("no service 'nope'") and error.detailed_message
    assert error.body["errorType"] == "NotFound"
    assert str(error) == f"NotFound (HTTP 404): {error.message}"


def test_a_context_names_what_failed(node, admin):
    admin.create_service("twice")
    with pytest.raises(NodeError) as caught:
        admin.create_service("twice", context="creating twice failed")
    assert caught.value.status == 409 and caught.value.error_type == "Conflict"
    assert str(caught.value).startswith("creating twice failed (HTTP 409): Conflict: service 'twice' already exists")
    admin.delete_service("twice")


def test_a_wrong_key_is_unauthorized(node):
    with pytest.raises(NodeError, match=r"^Unauthorized \(HTTP 401\)") as caught:
        NodeClient(node.url, "wrong").services()
    assert caught.value.status == 401


def test_a_run_answers_whatever_the_status(node):
    answer = NodeClient(node.url).run("nope", "e", b"{}")
    assert answer.status == 404 and not answer.ok and answer.json()["errorType"] == "NotFound"
    played = NodeClient(node.url).play("nope", "e", TestQuery("q", {}))
    assert (played.status, played.verdict, played.answer["errorType"]) == (404, "FAIL", "NotFound")


def test_an_answer_that_is_not_json_is_shown_as_an_error():
    assert Answer(502, b"<html>\n<b>Bad gateway</b></html>").json() == {
        "errorType": "NotJson",
        "message": "the answer is not JSON: '<html> <b>Bad gateway</b></html>'",
    }
    assert Answer(200, b"").json() is None


def test_an_unreachable_node_is_one_line_with_no_status():
    with pytest.raises(NodeError, match=r"^cannot reach http://127.0.0.1:1/public/api/v1/s/e/run: ") as caught:
        NodeClient("http://127.0.0.1:1/").play("s", "e", TestQuery("q", {}))
    assert caught.value.status is None and caught.value.error_type is None


@pytest.mark.parametrize("url", ["notaurl", "file:///etc/passwd", "http://host:notaport", "http://", "ftp://h/x"])
def test_a_malformed_url_is_one_line(url):
    with pytest.raises(NodeError, match=r"^invalid URL .*: expected http://host:port"):
        NodeClient(url).play("s", "e", TestQuery("q", {}))
