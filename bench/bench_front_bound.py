"""What any design of 2 fronts could reach on this machine: two nodes sharing the port.

With `--fronts 2` a front process relays its calls to the node process, which owns the pools.
The fastest a 2-front design could be is no relay at all: each process calling pipelines of its
own. Two independent nodes, each with half the pipelines (ceil 1 against the node's 2), both
listening on one port with SO_REUSEPORT, are that bound (without what one node keeps exact
across its fronts: one queue, one ceil, one set of metrics and query logs). This bench measures
them beside the node with 1 and 2 fronts and FastAPI+uvicorn with 2 workers, on bench_front's
functions at c=16, the servers taking turns; each ratio to FastAPI is the median of the
rounds' own ratios, with the lowest and highest.

    pip install -e '.[bench]'; python bench/bench_front_bound.py [--seconds 5] [--rounds 5]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

from bench_front import (
    FUNCTIONS,
    POOL,
    ROOT,
    Cell,
    Server,
    cpu_seconds,
    median_row,
    paired_ratio,
    service_directory,
    start_all,
)
from support import NodeProcess, free_port  # on the path from bench_front: the tests' own helpers

HALF_POOL = {**POOL, "floor": 1, "cruise": 1, "ceil": 1}
SHARED_PORT_NODE = """
import os, sys
import tornado.netutil
bind = tornado.netutil.bind_sockets
tornado.netutil.bind_sockets = lambda port, *args, **options: bind(port, *args, **{**options, "reuse_port": True})
sys.argv[sys.argv.index("--port") + 1] = os.environ["SHARED_PORT"]
from apinode.cli import main
sys.exit(main(sys.argv[1:]))
"""
"""`python -m apinode.cli`, its socket bound with SO_REUSEPORT on $SHARED_PORT (this bench only)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every cell")
    args = parser.parse_args()
    python = sys.executable
    samples: dict[Cell, list[tuple[float, ...]]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as whole, tempfile.TemporaryDirectory() as half:
        service, half_service = service_directory(Path(whole)), service_directory(Path(half), pool=HALF_POOL)
        shared = {"SHARED_PORT": str(free_port())}
        started = start_all(
            [
                lambda: NodeProcess("run", str(service)),
                lambda: NodeProcess("run", str(service), "--fronts", "2"),
                lambda: NodeProcess("run", str(half_service), program=(python, "-c", SHARED_PORT_NODE), env=shared),
                lambda: NodeProcess("run", str(half_service), program=(python, "-c", SHARED_PORT_NODE), env=shared),
                lambda: NodeProcess("--workers", "2", program=(python, str(ROOT / "bench" / "fastapi_app.py"))),
            ]
        )
        one, fronts, shared_a, shared_b, fastapi = started
        try:
            servers = [
                Server("apinode", one),
                Server("apinode, 2 fronts", fronts),
                Server("2 nodes, one port (bound)", shared_a),
                Server("fastapi+uvicorn 2 workers", fastapi, http_in_children=True),
            ]
            for server in servers:
                server.wait_ready()
            both_before = [cpu_seconds(node.process.pid) for node in (shared_a, shared_b)]
            for _ in range(args.rounds):
                for function in FUNCTIONS:
                    for server in servers:
                        samples[server.name, function, 16].append(server.measure(function, 16, args.seconds))
            worked = [cpu_seconds(node.process.pid) - before for node, before in zip((shared_a, shared_b), both_before)]
            if min(worked) < 0.2 * max(worked):
                raise RuntimeError(f"the kernel did not spread connections over both nodes (CPU s: {worked})")
        finally:
            for process in started:
                process.stop()

    print(f"load: wrk, 16 keep-alive connections, {args.seconds:g} s per cell, {args.rounds} round(s)")
    print(f"{'server':<27} {'function':<9} {'req/s':>8} {'p99 ms':>8} {'/ fastapi 2 workers':>28}")
    for (name, function, connections), measured in samples.items():
        rate, _, p99, *_ = median_row(measured)
        ratio = paired_ratio(samples, (name, function, connections), ("fastapi+uvicorn 2 workers", function, 16))
        print(f"{name:<27} {function:<9} {rate:>8.0f} {p99:>8.3f} {ratio:>28}")


if __name__ == "__main__":
    main()
