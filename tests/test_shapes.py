"""Function shapes against a real node: async functions, streaming generators, batching."""

from __future__ import annotations

import dataikuapi
import pytest
import requests
from support import SERVICES, NodeProcess


@pytest.fixture(scope="module")
def node():
    node = NodeProcess("run", str(SERVICES / "shapes"), ready_timeout=120)
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
