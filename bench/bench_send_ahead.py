"""Calls sent ahead to busy pipelines (the pool's `sendAheadMs`): what they gain, by call length,
and what they cost a short call when some calls of the same endpoint are slow.

One node, pools of 2 pipelines (floor = cruise = ceil = 2, as in bench_front.py), the same
function served three times: sending ahead off (`sendAheadMs` 0), at its default, and always
(a threshold far above any call), side by side, taking turns in each round.
- Throughput: wrk at 16 connections on a function that computes (a busy loop, as a model's
  predict does) for 0, 0.3, 1, 5 and 20 ms. Reported: requests/s off and always, and their
  ratio.
- Head-of-line cost: the endpoint takes short calls (0.3 ms) from 8 connections and slower
  ones (20 ms, below the default `sendAheadMs`, then 200 ms, above it) from 1; a short call
  sent ahead behind a slower one waits for it. Reported: the short calls' requests/s and p99,
  off and at the default.
Each figure is the median of --rounds rounds.

    pip install -e '.[bench]'; python bench/bench_send_ahead.py [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from bench_node import wrk  # noqa: E402  (the same load as bench_node.py)
from support import NodeProcess  # noqa: E402

LENGTHS_MS = (0, 0.3, 1, 5, 20)
SLOWER_MS = (20, 200)
CODE = '''
import time


def compute(ms=0.3):
    """Keeps its core busy for `ms` milliseconds, as a model's predict does."""
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass
    return ms
'''
MODES = {"off": 0, "default": None, "always": 1_000_000}  # sendAheadMs


def service_directory(directory: Path) -> Path:
    (directory / "compute.py").write_text(CODE)
    endpoints = [
        {
            "id": f"compute-{mode}",
            "code": "compute.py",
            "function": "compute",
            "pool": {
                "floor": 2,
                "cruise": 2,
                "ceil": 2,
                "queue": 64,
                **({} if threshold is None else {"sendAheadMs": threshold}),
            },
        }
        for mode, threshold in MODES.items()
    ]
    (directory / "service.json").write_text(json.dumps({"id": "bench", "endpoints": endpoints}))
    return directory


def path(mode: str) -> str:
    return f"/public/api/v1/bench/compute-{mode}/run"


def mixed(url: str, mode: str, slower_ms: float, seconds: float) -> tuple[float, float]:
    """(requests/s, p99 ms) of the short calls, while one connection sends slower ones."""
    slow = threading.Thread(target=wrk, args=(url, 1, seconds, path(mode), json.dumps({"ms": slower_ms})))
    slow.start()
    try:
        rate, _, p99 = wrk(url, 8, seconds, path(mode), json.dumps({"ms": 0.3}))
    finally:
        slow.join()
    return rate, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every cell; each figure is the median")
    args = parser.parse_args()
    throughput: dict[tuple[float, str], list[float]] = collections.defaultdict(list)
    head_of_line: dict[tuple[float, str], list[tuple[float, float]]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as directory:
        node = NodeProcess("run", str(service_directory(Path(directory))))
        try:
            for mode in MODES:  # warm up: each pool learns its calls' typical length
                wrk(node.url, 16, 1.0, path(mode), json.dumps({"ms": 0.3}))
            for round_ in range(args.rounds):
                swap = round_ % 2 == 1
                for length in LENGTHS_MS:
                    for mode in ("always", "off") if swap else ("off", "always"):
                        rate, _, _ = wrk(node.url, 16, args.seconds, path(mode), json.dumps({"ms": length}))
                        throughput[length, mode].append(rate)
                for slower_ms in SLOWER_MS:
                    for mode in ("default", "off") if swap else ("off", "default"):
                        head_of_line[slower_ms, mode].append(mixed(node.url, mode, slower_ms, args.seconds))
        finally:
            node.stop()

    print(f"wrk, 16 connections, {args.seconds:g} s per cell, medians of {args.rounds} round(s); 2 pipelines")
    print(f"{'call ms':>8} {'off req/s':>10} {'always':>10} {'ratio':>8}")
    for length in LENGTHS_MS:
        off, always = (statistics.median(throughput[length, mode]) for mode in ("off", "always"))
        print(f"{length:>8g} {off:>10.0f} {always:>10.0f} {always / off:>7.2f}x")
    print("short calls (0.3 ms, 8 connections) beside slower ones (1 connection):")
    print(f"{'slower':>8} {'mode':>8} {'req/s':>10} {'p99 ms':>10}")
    for (slower_ms, mode), measured in head_of_line.items():
        rate = statistics.median(rate for rate, _ in measured)
        p99 = statistics.median(p99 for _, p99 in measured)
        print(f"{slower_ms:>6g}ms {mode:>8} {rate:>10.0f} {p99:>10.2f}")


if __name__ == "__main__":
    main()
