"""The node's HTTP front against plain web stacks, side by side in one run, with the same load.

Servers, each serving the same two functions (bench/functions.py) with the same answer shape:
apinode (one front, 2 pipelines per endpoint), apinode with 2 fronts (`--fronts 2`: a front
process relaying to the node), apinode with its query log off, FastAPI on
uvicorn with 1 and with 2 worker processes, and a bare Tornado app. Load: wrk with keep-alive
connections (bench_node.wrk), at concurrency 1 and 16, the servers taking turns for each cell.
Reported: requests/s, p50 and p99 latency, and the CPU per request of the processes that speak
HTTP (apinode: the node process and its front processes, without its pipelines; uvicorn with
workers: the workers), and of the main process alone (with fronts: what the node process
itself spends per call, relayed or not), and how busy the machine's cores were (all processes,
wrk included: a server that leaves cores idle is held back by its hand-offs, not by CPU).
Each figure is the median of --rounds rounds. Targets (issue 14): apinode >= 1.0x
FastAPI+uvicorn 1 worker at c=16, and with 2 fronts >= 1.0x FastAPI+uvicorn 2 workers; p99 at
c=1 <= 1.0 ms; node CPU per request <= 0.15 ms; p99 at c=1 within 0.3 ms of the same node with
its query log off. With --profile, a py-spy profile of
the node under load (c=16, identity) is summarized.

    pip install -e '.[bench]'; python bench/bench_front.py [--seconds 5] [--profile]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from bench_node import wrk  # noqa: E402  (the same load as bench_node.py)
from support import NodeProcess, children, cmdline, eventually  # noqa: E402

FUNCTIONS = {
    "identity": json.dumps({"customer": "c-1042", "age": 35, "days": 344, "price": 600.5, "tags": ["a", "b"]}),
    "predict": json.dumps({"age": 35, "days": 344, "price": 600.5}),
}
POOL = {"floor": 2, "cruise": 2, "ceil": 2, "queue": 64}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
Cell = tuple[str, str, int]  # (server, function, connections)


def service_directory(directory: Path, functions: Iterable[str] = FUNCTIONS, pool: dict = POOL) -> Path:
    """A service with an endpoint per function of bench/functions.py, each with `pool`."""
    shutil.copy(ROOT / "bench" / "functions.py", directory / "functions.py")
    endpoints = [{"id": name, "code": "functions.py", "function": name, "pool": pool} for name in functions]
    (directory / "service.json").write_text(json.dumps({"id": "bench", "endpoints": endpoints}))
    return directory


def machine_ticks() -> tuple[int, int]:
    """(all CPU ticks, idle ticks) of the machine so far, from /proc/stat."""
    ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(ticks), ticks[3] + ticks[4]  # idle and iowait


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Server:
    def __init__(self, name: str, process: NodeProcess, http_in_children: bool = False) -> None:
        self.name = name
        self.process = process
        self.http_in_children = http_in_children  # uvicorn's workers speak HTTP; apinode's children do not

    def wait_ready(self) -> None:
        """Until the server accepts connections (uvicorn announces itself before it listens)."""
        parts = urlsplit(self.process.url)

        def accepts() -> bool:
            try:
                socket.create_connection((parts.hostname, parts.port), timeout=1).close()
            except OSError:
                return False
            return True

        eventually(accepts, timeout=30)

    def http_pids(self) -> list[int]:
        pid = self.process.process.pid
        if self.http_in_children:
            return children(pid)
        return [pid, *(child for child in children(pid) if "apinode.node.relay_front" in cmdline(child))]

    def measure(self, function: str, connections: int, seconds: float, body: str | None = None) -> tuple[float, ...]:
        """(requests/s, p50 ms, p99 ms, CPU ms per request of the processes that speak HTTP, and
        of the main process alone: for apinode with fronts, the node process without them, and
        the % of the machine's CPU time that was busy), POSTing `body` (by default the function's
        own in FUNCTIONS)."""
        path = f"/public/api/v1/bench/{function}/run"
        body = FUNCTIONS[function] if body is None else body
        wrk(self.process.url, connections, 1.0, path, body)  # warm up
        pids = self.http_pids()
        main = self.process.process.pid
        before, main_before = sum(cpu_seconds(pid) for pid in pids), cpu_seconds(main)
        ticks_before, idle_before = machine_ticks()
        rate, p50, p99 = wrk(self.process.url, connections, seconds, path, body)
        ticks_after, idle_after = machine_ticks()
        cpu, main_cpu = sum(cpu_seconds(pid) for pid in pids) - before, cpu_seconds(main) - main_before
        requests = rate * max(1, round(seconds))
        busy = 100 * (1 - (idle_after - idle_before) / max(1, ticks_after - ticks_before))
        return rate, p50, p99, 1000 * cpu / requests, 1000 * main_cpu / requests, busy


def start_servers(service: Path) -> list[Server]:
    """Every server, started one after the other; those started are stopped if one fails."""
    python = sys.executable
    fastapi = (python, str(ROOT / "bench" / "fastapi_app.py"))
    apinode, fronts, log_off, fastapi_1, fastapi_2, tornado = start_all(
        [
            lambda: NodeProcess("run", str(service)),
            lambda: NodeProcess("run", str(service), "--fronts", "2"),
            lambda: NodeProcess("run", str(service), "--no-query-log"),
            lambda: NodeProcess(program=fastapi),
            lambda: NodeProcess("--workers", "2", program=fastapi),
            lambda: NodeProcess(program=(python, str(ROOT / "bench" / "bare_app.py"))),
        ]
    )
    return [
        Server("apinode", apinode),
        Server("apinode, 2 fronts", fronts),
        Server("apinode, query log off", log_off),
        Server("fastapi+uvicorn 1 worker", fastapi_1),
        Server("fastapi+uvicorn 2 workers", fastapi_2, http_in_children=True),
        Server("bare tornado", tornado),
    ]


def start_all(starts: Iterable[Callable[[], NodeProcess]]) -> list[NodeProcess]:
    """Each process started in turn; those started are stopped if one fails."""
    started: list[NodeProcess] = []
    try:
        for start in starts:
            started.append(start())
    except BaseException:
        for process in started:
            process.stop()
        raise
    return started


def profile(server: Server, seconds: float) -> str:
    """Where the node's samples go under load (c=16, identity), by py-spy, as a short summary."""
    if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
        return "py-spy is not installed (pip install -e '.[bench]')"
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory() as directory:
        raw = Path(directory) / "profile.txt"
        recorder = subprocess.Popen(
            [
                *(py_spy, "record", "--pid", str(server.process.process.pid), "--duration", str(round(seconds))),
                *("--format", "raw", "--output", str(raw), "--rate", "500", "--nonblocking"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wrk(server.process.url, 16, seconds + 1, "/public/api/v1/bench/identity/run", FUNCTIONS["identity"])
        _, errors = recorder.communicate(timeout=60)
        if not raw.exists():
            return f"py-spy failed: {errors.strip()}"
        return summarize(raw.read_text())


def summarize(collapsed: str, top: int = 12) -> str:
    """Self time by function, and inclusive time by apinode module, of py-spy's collapsed stacks."""
    by_function: collections.Counter[str] = collections.Counter()
    by_module: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        by_function[_function(frames[-1])] += count
        for module in {_module(frame) for frame in frames if "apinode/" in frame}:
            by_module[module] += count
    lines = [
        f"{total} samples of the node's busy time (C code and syscalls count in the Python function "
        "that called them: `respond` is the socket write, `Runner.run` the event loop's own C)",
        "self time, top functions:",
    ]
    lines += [f"  {100 * count / total:5.1f}%  {name}" for name, count in by_function.most_common(top)]
    lines.append("inclusive time, by apinode module:")
    lines += [f"  {100 * count / total:5.1f}%  {name}" for name, count in by_module.most_common(top)]
    return "\n".join(lines)


def _function(frame: str) -> str:
    """`respond (apinode/node/http_connection.py:293)` -> `respond (apinode/node/http_connection.py)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rpartition(':')[0] or where.rstrip(')')})"


def _module(frame: str) -> str:
    """`respond (apinode/node/http_connection.py:293)` -> `apinode/node/http_connection.py`."""
    where = frame.rpartition("(")[2].rstrip(")")
    return "apinode/" + where.partition(":")[0].rpartition("apinode/")[2]


def paired_ratio(samples: dict[Cell, list[tuple[float, ...]]], cell: Cell, other: Cell) -> str:
    """The ratio of two cells' requests/s, taken round by round (the two measured a few seconds
    apart, so that the machine's slow drifts cancel): its median, lowest and highest."""
    ratios = sorted(mine[0] / theirs[0] for mine, theirs in zip(samples[cell], samples[other]))
    return f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"


def median_row(measured: list[tuple[float, ...]]) -> tuple[float, ...]:
    """Each figure's median over the rounds."""
    return tuple(statistics.median(figures) for figures in zip(*measured))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every cell; each figure is the median")
    parser.add_argument("--profile", action="store_true", help="also profile the node with py-spy")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        servers = start_servers(service_directory(Path(directory)))
        try:
            for server in servers:
                server.wait_ready()
            samples: dict[Cell, list[tuple[float, ...]]] = collections.defaultdict(list)
            for _ in range(args.rounds):
                for function in FUNCTIONS:
                    for connections in (1, 16):
                        for server in servers:  # the servers take turns, so that a noisy moment hits all alike
                            measured = server.measure(function, connections, args.seconds)
                            samples[server.name, function, connections].append(measured)
            rows = {cell: median_row(measured) for cell, measured in samples.items()}
            summary = profile(servers[0], args.seconds) if args.profile else None
        finally:
            for server in servers:
                server.process.stop()

    print(
        f"load: wrk, keep-alive, {args.seconds:g} s per cell, medians of {args.rounds} round(s); "
        "2 pipelines per endpoint for apinode"
    )
    print(
        f"{'server':<27} {'function':<9} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>10} "
        f"{'main process':>12} {'cores busy':>10}"
    )
    for (name, function, connections), (rate, p50, p99, cpu, main_cpu, busy) in rows.items():
        print(
            f"{name:<27} {function:<9} {connections:>4} {rate:>8.0f} {p50:>8.3f} {p99:>8.3f} {cpu:>10.3f} "
            f"{main_cpu:>12.3f} {busy:>9.0f}%"
        )
    print("targets (throughput: the median of each round's ratio, with the lowest and highest):")
    for function in FUNCTIONS:
        ratio = paired_ratio(samples, ("apinode", function, 16), ("fastapi+uvicorn 1 worker", function, 16))
        print(f"  {function}: apinode / fastapi 1 worker at c=16: {ratio} (target >= 1.00x)")
        ratio = paired_ratio(samples, ("apinode, 2 fronts", function, 16), ("fastapi+uvicorn 2 workers", function, 16))
        print(f"  {function}: apinode 2 fronts / fastapi 2 workers at c=16: {ratio} (target >= 1.00x)")
    print(f"  p99 at c=1: {rows['apinode', 'identity', 1][2]:.3f} ms (target <= 1.000 ms)")
    log_cost = rows["apinode", "identity", 1][2] - rows["apinode, query log off", "identity", 1][2]
    print(f"  p99 at c=1, query log on - off: {log_cost:+.3f} ms (target <= 0.300 ms)")
    cpu = max(rows["apinode", function, connections][3] for function in FUNCTIONS for connections in (1, 16))
    print(f"  node CPU per request, worst cell: {cpu:.3f} ms (target <= 0.150 ms)")
    if summary:
        print("py-spy, the node under c=16 (identity):")
        print(summary)


if __name__ == "__main__":
    main()
