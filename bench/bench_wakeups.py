"""Why the node's CPU per request at c=1 is higher when its function takes a while: wake-ups.

At concurrency 1 the node sends a call, sleeps until its pipeline answers, and sleeps again
until the client's next request. A process that sleeps longer wakes colder: in the meantime
other work has used its core's caches, or the idle core has halted (on a virtual machine, a
halt is an exit to the host). So its CPU time per request grows with how long it waits, with
no more work done. This bench shows it with one node (2 pipelines per endpoint) at c=1: the
node process's CPU per request with a function that answers at once (`identity`), with one that
sleeps for a given time (`pause`: the node waits without the function using a core), and with a
scikit-learn `predict` for reference; the cells alternate, and each figure is the median of
--rounds rounds.

    pip install -e '.[bench]'; python bench/bench_wakeups.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

from bench_front import FUNCTIONS, Server, median_row, service_directory
from support import NodeProcess  # on the path from bench_front: the same launcher the tests use

PAUSES_MS = (0.05, 0.1, 0.3, 1.0, 3.0)
CELLS = {
    "identity": ("identity", FUNCTIONS["identity"]),
    **{f"pause {ms:g} ms": ("pause", json.dumps({"seconds": ms / 1000})) for ms in PAUSES_MS},
    "predict": ("predict", FUNCTIONS["predict"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every cell; each figure is the median")
    args = parser.parse_args()
    samples = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as directory:
        service = service_directory(Path(directory), ("identity", "pause", "predict"))
        server = Server("apinode", NodeProcess("run", str(service)))
        try:
            server.wait_ready()
            for _ in range(args.rounds):
                for cell, (function, body) in CELLS.items():
                    samples[cell].append(server.measure(function, 1, args.seconds, body))
        finally:
            server.process.stop()

    print(f"load: wrk, 1 keep-alive connection, {args.seconds:g} s per cell, medians of {args.rounds} round(s)")
    print(f"{'function':<16} {'req/s':>8} {'p50 ms':>8} {'node CPU ms/req':>15} {'vs identity':>11}")
    rows = {cell: median_row(measured) for cell, measured in samples.items()}
    for cell, (rate, p50, _, cpu, *_) in rows.items():
        print(f"{cell:<16} {rate:>8.0f} {p50:>8.3f} {cpu:>15.3f} {cpu / rows['identity'][3]:>10.2f}x")


if __name__ == "__main__":
    main()
