"""Function shapes on a real node: adaptive batching, time to first streamed item, async cost.

- Batching: a vectorized function costing about 1 ms plus 0.02 ms per row (a sleep for the
  model's time, plus a numpy reduction over the rows), on one pipeline, at c=64 (wrk, keep-alive),
  called per request and with `"batch": {"maxSize": 64, "maxWaitMs": 5}`. Target: >= 5x the
  throughput with batching.
- Streaming: a generator of 10 items, each 20 ms apart, read as server-sent events: the time to
  the first event against the whole stream's. Target: the first event within the first item's
  own time (20 ms) plus 2 ms.
- Async: an identity function written `async def` against the same written `def`, 2 pipelines
  each, at c=1 and c=16, taking turns for --rounds rounds (medians; the order reverses every
  other round). Target: at most 5% slower. A second `def` endpoint, identical to the first,
  shows the noise floor: on a 2-core machine two identical endpoints differ by several percent.

    pip install -e '.[bench]'; python bench/bench_shapes.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from bench_node import wrk  # noqa: E402  (the same load as bench_node.py)
from support import NodeProcess  # noqa: E402

CODE = """
import asyncio, time
import numpy as np

def _score(rows):
    time.sleep(0.001 + 0.00002 * len(rows))  # the model's time
    return (np.asarray([row["x"] for row in rows], dtype=float) * 2).tolist()

def single(x):
    return _score([{"x": x}])[0]

def batched(batch):
    return _score(batch)

def tokens(n=10, gap=0.02):
    for i in range(n):
        time.sleep(gap)
        yield {"token": i}

def identity(**params):
    return params

async def identity_async(**params):
    return params

def identity_again(**params):
    return params
"""
ONE = {"floor": 1, "cruise": 1, "ceil": 1, "queue": 256}
TWO = {"floor": 2, "cruise": 2, "ceil": 2, "queue": 64}
IDENTITY_BODY = json.dumps({"customer": "c-1042", "age": 35, "days": 344, "price": 600.5, "tags": ["a", "b"]})


def service_directory(directory: Path) -> Path:
    (directory / "functions.py").write_text(CODE)
    endpoints = [
        {"id": "single", "code": "functions.py", "function": "single", "pool": ONE},
        {"id": "batched", "code": "functions.py", "function": "batched", "pool": ONE},
        {"id": "tokens", "code": "functions.py", "function": "tokens", "pool": ONE},
        {"id": "identity", "code": "functions.py", "function": "identity", "pool": TWO},
        {"id": "identity_async", "code": "functions.py", "function": "identity_async", "pool": TWO},
        {"id": "identity_again", "code": "functions.py", "function": "identity_again", "pool": TWO},
    ]
    endpoints[1]["batch"] = {"maxSize": 64, "maxWaitMs": 5}
    (directory / "service.json").write_text(json.dumps({"id": "shapes", "endpoints": endpoints}))
    return directory


def path(endpoint: str) -> str:
    return f"/public/api/v1/shapes/{endpoint}/run"


def first_event_ms(connection: http.client.HTTPConnection) -> tuple[float, float]:
    """(ms to the first event, ms to the end of the stream) of one streamed call.

    Read with http.client on a kept-alive connection, which costs next to nothing: requests
    costs about 2 ms more per call here (preparing the request, looking up proxies and .netrc,
    then iter_lines over urllib3), which is the client's time and would be counted against the
    node's 2 ms."""
    started = time.perf_counter()
    connection.request("POST", path("tokens"), b"{}", {"Accept": "text/event-stream"})
    answer = connection.getresponse()
    first = None
    for line in iter(answer.readline, b""):
        if first is None and line.startswith(b"data: "):
            first = time.perf_counter()
    assert first is not None and answer.status == 200
    return (first - started) * 1000, (time.perf_counter() - started) * 1000


IDENTITIES = ("identity", "identity_async", "identity_again")


def identity_rates(url: str, connections: int, seconds: float, rounds: int) -> dict[str, list[float]]:
    """Requests/s of each identity endpoint per round, in an order reversed every other round,
    so that a drift of the machine during a round favours none of them."""
    rates: dict[str, list[float]] = {name: [] for name in IDENTITIES}
    for round_ in range(rounds):
        for name in IDENTITIES if round_ % 2 == 0 else reversed(IDENTITIES):
            rates[name].append(wrk(url, connections, seconds, path(name), IDENTITY_BODY)[0])
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3, help="identity rounds, def and async def taking turns")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        node = NodeProcess("run", str(service_directory(Path(directory))), ready_timeout=120)
        try:
            rows = []
            plain, _, plain_p99 = wrk(node.url, 64, args.seconds, path("single"), '{"x": 1}')
            batch, _, batch_p99 = wrk(node.url, 64, args.seconds, path("batched"), '{"x": 1}')
            rows.append(("batching, c=64: requests/s", f"{plain:.0f}", f"{batch:.0f}", f"{batch / plain:.1f}x (>= 5x)"))
            rows.append(("batching, c=64: p99 ms", f"{plain_p99:.1f}", f"{batch_p99:.1f}", ""))
            connection = http.client.HTTPConnection(node.url.split("//")[1])
            streams = [first_event_ms(connection) for _ in range(20)]
            connection.close()
            first = statistics.median(ms for ms, _ in streams)
            total = statistics.median(ms for _, ms in streams)
            rows.append(("stream: first event / whole, ms", f"{first:.1f}", f"{total:.1f}", "first <= 22 ms"))
            for connections in (1, 16):
                rates = identity_rates(node.url, connections, args.seconds, args.rounds)
                sync, aio, again = (statistics.median(rates[name]) for name in IDENTITIES)
                rows.append(
                    (
                        f"identity c={connections}: requests/s def / async def",
                        f"{sync:.0f}",
                        f"{aio:.0f}",
                        f"{(1 - aio / sync) * 100:+.1f}% slower (<= 5%)",
                    )
                )
                rows.append(
                    (
                        f"identity c={connections}: def / the same def again",
                        f"{sync:.0f}",
                        f"{again:.0f}",
                        f"{(1 - again / sync) * 100:+.1f}%: the noise floor",
                    )
                )
        finally:
            node.stop()
    width = max(len(row[0]) for row in rows)
    print(f"{'':{width}}  {'A':>8}  {'B':>8}  note")
    for name, a, b, note in rows:
        print(f"{name:{width}}  {a:>8}  {b:>8}  {note}")


if __name__ == "__main__":
    main()
