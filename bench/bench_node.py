"""Node vs. a bare Tornado app, side by side in one run, with the same load generator.

The node serves an identity function with 2 pipelines; the bare app parses the same JSON and
calls the same function in its own process. Load: wrk (Debian package `wrk`) with keep-alive
connections, or, where wrk is missing, a closed-loop client of Python threads (one keep-alive
http.client connection per thread, each sending its next request when the last answered).
Targets (issue 2): throughput at c=16 >= 0.7x the bare app's; added p50 latency at c=1 <= 0.3 ms.
Also: time from `apinode run notebooks/quickstart.ipynb` to its first 200.

    python bench/bench_node.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support import NodeProcess  # noqa: E402  (the same launcher the tests use)

BODY = json.dumps({"customer": "c-1042", "age": 35, "days": 344, "price": 600.5, "tags": ["a", "b"]})
PATH = "/public/api/v1/bench/identity/run"
SERVICE = {
    "id": "bench",
    "endpoints": [
        {
            "id": "identity",
            "code": "identity.py",
            "function": "identity",
            "pool": {"floor": 2, "cruise": 2, "ceil": 2, "queue": 64},
        }
    ],
}


def wrk(url: str, connections: int, seconds: float, path: str = PATH, body: str = BODY) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) measured by wrk, POSTing `body` to `path`."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\nwrk.headers["Content-Type"] = "application/json"\n'
        )
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "1",
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(seconds))}s",
            "--latency",
            "-s",
            script.name,
            url + path,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    Path(script.name).unlink()
    if "Non-2xx" in out:
        raise RuntimeError(f"errors under load:\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rate, _wrk_ms(out, "50%"), _wrk_ms(out, "99%")


def _wrk_ms(out: str, percentile: str) -> float:
    value, unit = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", out).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def closed_loop(url: str, connections: int, seconds: float, path: str = PATH) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) from `connections` threads, each one request at a time."""
    parts = urlsplit(url)
    latencies: list[list[float]] = [[] for _ in range(connections)]
    deadline = time.perf_counter() + seconds

    def loop(mine: list[float]) -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port)
        headers = {"Content-Type": "application/json"}
        while (started := time.perf_counter()) < deadline:
            connection.request("POST", path, BODY, headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status} under load")
            mine.append((time.perf_counter() - started) * 1000)
        connection.close()

    threads = [threading.Thread(target=loop, args=(mine,)) for mine in latencies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = sorted(ms for mine in latencies for ms in mine)
    return len(merged) / seconds, statistics.median(merged), merged[int(len(merged) * 0.99)]


def time_to_first_200(source: Path) -> float:
    """Seconds from starting `apinode run SOURCE` to the first 200 of its first test query."""
    started = time.perf_counter()
    node = NodeProcess("run", str(source))
    try:
        body = json.dumps({"age": 35, "days": 344, "price": 600})
        parts = urlsplit(node.url)
        while True:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            connection.request(
                "POST", "/public/api/v1/quickstart/score/run", body, {"Content-Type": "application/json"}
            )
            if connection.getresponse().status == 200:
                return time.perf_counter() - started
            time.sleep(0.01)
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    args = parser.parse_args()
    load = wrk if shutil.which("wrk") else closed_loop
    with tempfile.TemporaryDirectory() as directory:
        service = Path(directory)
        (service / "service.json").write_text(json.dumps(SERVICE))
        (service / "identity.py").write_text("def identity(**data):\n    return data\n")
        node = NodeProcess("run", str(service))
        bare = NodeProcess(program=(sys.executable, str(ROOT / "bench" / "bare_app.py")))
        try:
            rows = {}
            for connections in (1, 16):
                for name, target in (("bare tornado", bare), ("apinode, 2 pipelines", node)):
                    load(target.url, connections, 1.0)  # warm up
                    rows[name, connections] = load(target.url, connections, args.seconds)
        finally:
            node.stop()
            bare.stop()
    startup = time_to_first_200(ROOT / "notebooks" / "quickstart.ipynb")

    print(f"load generator: {load.__name__}, {args.seconds:g} s per cell, body {len(BODY)} bytes")
    print(f"{'server':<22} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for (name, connections), (rate, p50, p99) in rows.items():
        print(f"{name:<22} {connections:>4} {rate:>9.0f} {p50:>8.3f} {p99:>8.3f}")
    ratio = rows["apinode, 2 pipelines", 16][0] / rows["bare tornado", 16][0]
    added = rows["apinode, 2 pipelines", 1][1] - rows["bare tornado", 1][1]
    print(f"throughput at c=16, node / bare: {ratio:.2f}x (target >= 0.70x)")
    print(f"added p50 latency at c=1: {added:+.3f} ms (target <= 0.300 ms)")
    print(f"quickstart, `apinode run` to first 200: {startup:.2f} s")


if __name__ == "__main__":
    main()
