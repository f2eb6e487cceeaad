"""The runtime's cost per call (parse, validate, bind, call, encode), against a baseline revision.

A pipeline's CPU per request is this and the framing around it; the node's event loop is
elsewhere (bench_node.py). Measured in-process, one function at a time, interleaved rounds
(baseline, current, baseline, ...) so that a loaded machine slows both alike; the best round
of each counts. Targets (issue 10): the identity endpoint (a plain JSON result, **kwargs) at
most 3% slower than the baseline; a function of 4 hinted parameters at most 5% slower with
validation than without (the baseline runtime did not validate); an `async def` identity at
most 5% slower than the `def` one (issue 15: bench_shapes.py measures it end to end, where a
loaded machine's noise is larger than the difference).

    python bench/bench_invoke.py [--baseline main] [--seconds 0.5] [--rounds 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
BODY = b'{"customer": "c-1042", "age": 35, "days": 344, "price": 600.5, "tags": ["a", "b"]}'
HINTED_BODY = b'{"age": 35, "price": 600.5, "name": "c-1042", "active": true}'


def identity(**data):
    return data


async def identity_async(**data):
    return data


def hinted(age: int, price: float, name: str, active: bool):
    return {"age": age, "price": price, "name": name, "active": active}


def unhinted(age, price, name, active):
    return {"age": age, "price": price, "name": name, "active": active}


def runtime_at(revision: str, directory: Path) -> ModuleType:
    """apinode/runtime as of `revision`, imported as its own package."""
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "--name-only", f"{revision}:apinode/runtime"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if name.endswith(".py"):
            source = subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{revision}:apinode/runtime/{name}"], capture_output=True, check=True
            ).stdout
            (directory / name).write_bytes(source)
    return _import(f"runtime_{revision.replace('/', '_')}", directory)


def _import(name: str, directory: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        name, directory / "__init__.py", submodule_search_locations=[str(directory)]
    )
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return importlib.import_module(f"{name}.invoke")


def rate(invoke, body: bytes, seconds: float) -> float:
    """Calls per second of `invoke(body)`, in batches, for about `seconds`."""
    assert invoke(body).status == 200, invoke(body).payload
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(1000):
            invoke(body)
        calls += 1000
    return calls / elapsed


def best(pairs: dict[str, tuple[object, bytes]], seconds: float, rounds: int) -> dict[str, float]:
    rates: dict[str, float] = dict.fromkeys(pairs, 0.0)
    for _ in range(rounds):
        for name, (invoke, body) in pairs.items():
            rates[name] = max(rates[name], rate(invoke, body, seconds))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="git revision to compare with (default main)")
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from apinode.runtime import invoke as current

    with tempfile.TemporaryDirectory() as temp:
        baseline = runtime_at(args.baseline, Path(temp))
        rates = best(
            {
                "identity, baseline": (baseline.Invoker(identity), BODY),
                "identity, current": (current.Invoker(identity), BODY),
                "async identity, baseline": (baseline.Invoker(identity_async), BODY),
                "async identity, current": (current.Invoker(identity_async), BODY),
                "4 hinted, baseline": (baseline.Invoker(hinted), HINTED_BODY),
                "4 unhinted, current": (current.Invoker(unhinted), HINTED_BODY),
                "4 hinted, current": (current.Invoker(hinted), HINTED_BODY),
            },
            args.seconds,
            args.rounds,
        )
    print(f"{'function, runtime':<24} {'calls/s':>10} {'vs reference':>14}")
    references = {
        "identity, current": "identity, baseline",
        "async identity, baseline": "identity, baseline",
        "async identity, current": "identity, current",
        "4 hinted, current": "4 unhinted, current",
        "4 unhinted, current": "4 hinted, baseline",
    }
    for name, value in rates.items():
        reference = references.get(name)
        change = f"{100 * (value / rates[reference] - 1):+.1f}%" if reference else ""
        print(f"{name:<24} {value:>10.0f} {change:>14}")
    print(f"(references: {'; '.join(f'{a} vs {b}' for a, b in references.items())})")


if __name__ == "__main__":
    main()
