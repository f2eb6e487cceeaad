"""Why the node's CPU per request is higher at c=1 when its pipeline takes a while: wake-ups.

At concurrency 1 the node sends a call, waits for its pipeline's answer, and waits again for the
client's next request. On a virtual machine a core with nothing to run halts, and the process
that wakes on it starts cold: its time per request goes up with no more work done. This bench
shows it with one node (2 pipelines per endpoint) at c=1 on three functions: `identity`
(answers at once), `pause` (sleeps 0.3 ms: the node waits without the function using a core) and
`predict` (a scikit-learn model). Each is measured with the cores left to halt when idle, and
with every core kept awake by a busy loop at SCHED_IDLE priority (it runs only when nothing else
wants the core, so it takes almost no time from the node). If the node's CPU per request on
`pause` and `predict` falls to that of `identity` with the cores awake, the extra is the
machine's wake-ups, not the node's code. The modes alternate, and each figure is the median of --rounds rounds.
Keeping the cores awake is a diagnosis, not a setting: the busy loops still delay the node now
and then, and its p99 grows several times.

    pip install -e '.[bench]'; python bench/bench_wakeups.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench_front import FUNCTIONS, Server, median_row, service_directory
from support import NodeProcess  # on the path from bench_front: the same launcher the tests use

BODIES = {"identity": FUNCTIONS["identity"], "pause": FUNCTIONS["identity"], "predict": FUNCTIONS["predict"]}
AWAKE_LOOP = "import os\nos.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\nwhile True: pass"


@contextlib.contextmanager
def cores_kept_awake() -> Iterator[None]:
    """One busy loop per core at SCHED_IDLE priority, while the block runs."""
    loops = [subprocess.Popen([sys.executable, "-c", AWAKE_LOOP]) for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every cell; each figure is the median")
    args = parser.parse_args()
    modes = {"cores halt when idle": contextlib.nullcontext, "cores kept awake": cores_kept_awake}
    samples = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as directory:
        server = Server("apinode", NodeProcess("run", str(service_directory(Path(directory), BODIES))))
        try:
            server.wait_ready()
            for _ in range(args.rounds):
                for mode, context in modes.items():
                    with context():
                        for function, body in BODIES.items():
                            samples[mode, function].append(server.measure(function, 1, args.seconds, body))
        finally:
            server.process.stop()

    print(f"load: wrk, 1 keep-alive connection, {args.seconds:g} s per cell, medians of {args.rounds} round(s)")
    print(f"{'cores':<22} {'function':<9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'node CPU ms/req':>15}")
    rows = {cell: median_row(measured) for cell, measured in samples.items()}
    for (mode, function), (rate, p50, p99, cpu, *_) in rows.items():
        print(f"{mode:<22} {function:<9} {rate:>8.0f} {p50:>8.3f} {p99:>8.3f} {cpu:>15.3f}")
    print("node CPU per request, relative to identity's in the same mode:")
    for mode in modes:
        cpu = {function: rows[mode, function][3] for function in BODIES}
        print(f"  {mode}: " + ", ".join(f"{f} {cpu[f] / cpu['identity']:.2f}x" for f in BODIES if f != "identity"))


if __name__ == "__main__":
    main()
