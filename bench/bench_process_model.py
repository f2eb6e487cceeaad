"""Fork after init against spawn, side by side in one run: what a pipeline costs to start, to
hold in memory, to recycle, and how many start under steady load.

- scale-up: the added latency of a call that needs a new pipeline (its latency minus that of
  a call on a warm one), with initializations of 0.1 s and 2 s. Target: <= 15 ms p50 with fork.
- memory: PSS (from /proc/PID/smaps_rollup) of 8 pipelines of an endpoint holding a numpy
  array (500 MB by default), against 1 (template included). Target: <= 1.5x with fork.
- recycling: throughput at c=16 with maxRequests 100 against none (alternated, median of 3).
  Target: >= 0.95x, no error (wrk's non-2xx answers fail the run).
- steady load: pipelines started per minute at c=16 with the default pool, after warm-up.
  Target: none. (And with scaleDownDelay 0, the pool without hysteresis, for comparison.)

    python bench/bench_process_model.py [--seconds 10] [--array-mb 500] [--samples 5]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from bench_node import closed_loop, wrk  # noqa: E402
from support import NodeProcess  # noqa: E402

SLEEPY = (
    "import os, time\ntime.sleep({init})\n\ndef {name}(delay=0.0):\n    time.sleep(delay)\n    return os.getpid()\n"
)
ARRAY = "import numpy as np\nARRAY = np.ones({mb} << 17)\n\ndef {name}():\n    return float(ARRAY[0])\n"
IDENTITY = "def {name}(**data):\n    return data\n"
SCALING = {"floor": 1, "cruise": 1, "ceil": 2, "scaleDownDelay": 0}


def endpoints(start: str, array_mb: int) -> dict[str, tuple[str, dict]]:
    pinned = {"floor": 8, "cruise": 8, "ceil": 8, "queue": 64}
    return {
        "init01": (SLEEPY.format(init=0.1, name="init01"), SCALING),
        "init2": (SLEEPY.format(init=2, name="init2"), SCALING),
        "array1": (ARRAY.format(mb=array_mb, name="array1"), {"floor": 1, "cruise": 1, "ceil": 1}),
        "array8": (ARRAY.format(mb=array_mb, name="array8"), pinned),
        "plain": (IDENTITY.format(name="plain"), pinned),
        "recycled": (IDENTITY.format(name="recycled"), {**pinned, "maxRequests": 100}),
        "default": (IDENTITY.format(name="default"), {}),
        "nodelay": (IDENTITY.format(name="nodelay"), {"scaleDownDelay": 0}),
    }


def write_service(directory: Path, start: str, array_mb: int) -> Path:
    directory.mkdir()
    definitions = []
    for name, (code, pool) in endpoints(start, array_mb).items():
        (directory / f"{name}.py").write_text(code)
        definitions.append({"id": name, "code": f"{name}.py", "function": name, "pool": {**pool, "start": start}})
    (directory / "service.json").write_text(json.dumps({"id": "pm", "endpoints": definitions}))
    return directory


def post(url: str, endpoint: str, body: dict) -> float:
    """Seconds one call took; raises on anything but 200."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    started = time.perf_counter()
    connection.request("POST", f"/public/api/v1/pm/{endpoint}/run", json.dumps(body))
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"{endpoint}: status {response.status}")
    return time.perf_counter() - started


def added_scale_up_ms(node: NodeProcess, endpoint: str, samples: int) -> float:
    """p50 of (latency of a call that needs a second pipeline - latency on a warm one)."""
    added = []
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        for _ in range(samples):
            warm = statistics.median(post(node.url, endpoint, {}) for _ in range(5))
            holding = pool.submit(post, node.url, endpoint, {"delay": 3.0})  # takes the only pipeline
            time.sleep(0.2)
            cold = post(node.url, endpoint, {})
            holding.result()
            added.append((cold - warm) * 1000)
            time.sleep(0.3)  # the second pipeline stops (scaleDownDelay 0)
    return statistics.median(added)


def pss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return int(re.search(r"^Pss:\s+(\d+)", text, re.M).group(1)) / 1024


def memory_mb(node: NodeProcess, endpoint: str) -> float:
    """Total PSS of an endpoint's pipelines and template."""
    post(node.url, endpoint, {})
    name = f"pm/{endpoint}"
    return sum(pss_mb(pid) for pid in node.pipelines(name) + node.templates(name))


def gauge(node: NodeProcess, name: str, endpoint: str) -> float:
    """The sum of a metric's series for one endpoint."""
    total = 0.0
    for line in http_get(node.url + "/metrics").splitlines():
        if line.startswith(name + "{") and f'endpoint="{endpoint}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def starts(node: NodeProcess, endpoint: str) -> float:
    return gauge(node, "apinode_pipeline_starts_total", endpoint)


def run_load(load, node: NodeProcess, endpoint: str, seconds: float) -> float:
    """req/s at c=16, once what the last load left behind (its callers gone, their requests
    still queued or running) is done."""
    deadline = time.monotonic() + 60
    while gauge(node, "apinode_queue_depth", endpoint) or gauge(node, "apinode_pipelines_busy", endpoint):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{endpoint}: requests still running a minute after the load")
        time.sleep(0.05)
    return load(node.url, 16, seconds, f"/public/api/v1/pm/{endpoint}/run")[0]


def http_get(url: str) -> str:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request("GET", parts.path)
    return connection.getresponse().read().decode()


def measure(start: str, args: argparse.Namespace, load) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        source = write_service(Path(directory) / "pm", start, args.array_mb)
        node = NodeProcess("run", str(source), ready_timeout=300)
        try:
            row = {
                "scale-up +ms, init 0.1 s": added_scale_up_ms(node, "init01", args.samples),
                "scale-up +ms, init 2 s": added_scale_up_ms(node, "init2", args.samples),
            }
            one, eight = memory_mb(node, "array1"), memory_mb(node, "array8")
            row["PSS MB, 1 pipeline"], row["PSS MB, 8 pipelines"] = one, eight
            row["PSS 8 / 1"] = eight / one
            # alternated, median of three: on a shared machine the load of the moment varies more
            # than what recycling costs
            measured: dict[str, list[float]] = {"plain": [], "recycled": []}
            for _ in range(3):
                for endpoint, rates_of in measured.items():
                    run_load(load, node, endpoint, 1.0)  # warm-up
                    rates_of.append(run_load(load, node, endpoint, args.seconds))
            rates = {endpoint: statistics.median(rates_of) for endpoint, rates_of in measured.items()}
            row["req/s c=16, maxRequests none"] = rates["plain"]
            row["req/s c=16, maxRequests 100"] = rates["recycled"]
            row["maxRequests 100 / none"] = rates["recycled"] / rates["plain"]
            for endpoint, label in (("default", "default pool"), ("nodelay", "scaleDownDelay 0")):
                run_load(load, node, endpoint, 3.0)  # warm-up: the pool grows to what the load needs
                before = starts(node, endpoint)
                run_load(load, node, endpoint, args.seconds)
                row[f"starts/min c=16, {label}"] = (starts(node, endpoint) - before) * 60 / args.seconds
            return row
        finally:
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each load measurement")
    parser.add_argument("--array-mb", type=int, default=500, help="size of the array the memory endpoints hold")
    parser.add_argument("--samples", type=int, default=5, help="scale-ups measured per initialization")
    args = parser.parse_args()
    load = wrk if shutil.which("wrk") else closed_loop
    rows = {start: measure(start, args, load) for start in ("fork", "spawn")}
    print(f"load generator: {load.__name__}, {args.seconds:g} s per load cell, array {args.array_mb} MB")
    print(f"{'':<34} {'fork':>10} {'spawn':>10}")
    for name in rows["fork"]:
        print(f"{name:<34} {rows['fork'][name]:>10.2f} {rows['spawn'][name]:>10.2f}")


if __name__ == "__main__":
    main()
