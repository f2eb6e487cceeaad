"""What validating requests against type hints costs a node, side by side in one run.

One node serves the same function of four parameters twice, hinted (`int`, `float`, `str`,
`bool`: every request is checked before the call) and unhinted (nothing to check), each on 2
pipelines. wrk loads them in alternated rounds at concurrency 16, so a loaded machine slows
both alike; the median round of each counts. Target (issue 10): hinted at most 5% below
unhinted. bench_invoke.py measures the same check inside the runtime alone.

    python bench/bench_validation.py [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from bench_node import wrk

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support import NodeProcess  # noqa: E402  (the same launcher the tests use)

CODE = """
def hinted(age: int, price: float, name: str, active: bool = True):
    return age

def unhinted(age, price, name, active=True):
    return age
"""
BODY = json.dumps({"age": 35, "price": 600.5, "name": "c-1042", "active": True})
POOL = {"floor": 2, "cruise": 2, "ceil": 2, "queue": 64}


def service(directory: Path) -> Path:
    endpoints = [{"id": name, "code": "f.py", "function": name, "pool": POOL} for name in ("hinted", "unhinted")]
    (directory / "service.json").write_text(json.dumps({"id": "validation", "endpoints": endpoints}))
    (directory / "f.py").write_text(CODE)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"unhinted": [], "hinted": []}
    with tempfile.TemporaryDirectory() as scratch:
        node = NodeProcess("run", str(service(Path(scratch))), "--no-query-log")
        try:
            for name in rates:  # warm-up
                wrk(node.url, 16, 1, f"/public/api/v1/validation/{name}/run", BODY)
            for _ in range(args.rounds):
                for name in rates:
                    rate, _, _ = wrk(node.url, 16, args.seconds, f"/public/api/v1/validation/{name}/run", BODY)
                    rates[name].append(rate)
        finally:
            node.stop()
    unhinted, hinted = (statistics.median(rates[name]) for name in ("unhinted", "hinted"))
    print(f"{'endpoint':<10} {'req/s (median)':>15} {'rounds':>30}")
    for name, median in (("unhinted", unhinted), ("hinted", hinted)):
        print(f"{name:<10} {median:>15.0f} {' '.join(f'{rate:.0f}' for rate in rates[name]):>30}")
    print(f"hinted / unhinted: {hinted / unhinted:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
