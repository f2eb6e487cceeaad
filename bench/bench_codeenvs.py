"""Code envs: build time with pip and with uv, and start-up with a cached env vs. the builtin env.

Build: the env of six==1.16.0 built by `CodeEnvCache.ensure` into a fresh cache root each time,
with pip (python -m venv + pip install) and with uv (uv venv + uv pip install), side by side;
both installers keep their download caches warm, as on a node that has built envs before.
Check: one `ensure` of an env already built (what every later load pays).
Start-up: time from starting `apinode run` on a one-endpoint service to its first 200, the
endpoint in the builtin env, then in the cached code env of six==1.16.0.

    python bench/bench_codeenvs.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support import NodeProcess  # noqa: E402  (the same launcher the tests use)

from apinode.packaging.codeenvs import CodeEnvCache  # noqa: E402
from apinode.packaging.definitions import CodeEnv  # noqa: E402

SIX = CodeEnv(("six==1.16.0",))
UV_DIR = Path(sys.executable).parent  # where the dev environment installs uv


def build_seconds(installer: str, repeat: int) -> list[float]:
    """Wall-clock seconds of each build of SIX, each into a fresh cache root."""
    times = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as root:
            started = time.perf_counter()
            CodeEnvCache(Path(root), installer).ensure(SIX, progress=lambda line: None)
            times.append(time.perf_counter() - started)
    return times


def ensure_cached_ms(cache: CodeEnvCache, calls: int = 200) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        cache.ensure(SIX)
    return (time.perf_counter() - started) * 1000 / calls


def time_to_first_200(source: Path, env: dict[str, str]) -> float:
    """Seconds from starting `apinode run SOURCE` to the first 200 of its endpoint."""
    started = time.perf_counter()
    node = NodeProcess("run", str(source), env=env, ready_timeout=120)
    try:
        parts = urlsplit(node.url)
        while True:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            connection.request("POST", "/public/api/v1/bench/probe/run", "{}", {"Content-Type": "application/json"})
            if connection.getresponse().status == 200:
                return time.perf_counter() - started
            time.sleep(0.01)
    finally:
        node.stop()


def service(directory: Path, code_env: CodeEnv | None) -> Path:
    directory.mkdir()
    (directory / "probe.py").write_text("import six\n\ndef probe():\n    return six.__version__\n")
    endpoint = {"id": "probe", "code": "probe.py", "function": "probe"}
    if code_env is not None:
        endpoint["codeEnv"] = code_env.to_json()
    (directory / "service.json").write_text(json.dumps({"id": "bench", "endpoints": [endpoint]}))
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each kind")
    args = parser.parse_args()
    if shutil.which("uv", path=str(UV_DIR)) is None and shutil.which("uv") is None:
        sys.exit("uv is not installed: pip install uv")
    os.environ["PATH"] = f"{UV_DIR}{os.pathsep}{os.environ['PATH']}"
    build = {installer: build_seconds(installer, args.repeat) for installer in ("pip", "uv")}

    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        cache = CodeEnvCache(root / "envs")
        cache.ensure(SIX, progress=lambda line: None)
        check_ms = ensure_cached_ms(cache)
        env = {"APINODE_CODE_ENVS": str(cache.root)}
        startup = {
            name: [time_to_first_200(source, env) for _ in range(args.repeat)]
            for name, source in (
                ("builtin env", service(root / "builtin", None)),
                ("cached code env", service(root / "codeenv", SIX)),
            )
        }

    print(f"\ncode env of six==1.16.0, built into a fresh cache (median of {args.repeat}, min - max)")
    print(f"  {'installer':<18}{'build s':>10}")
    for installer, times in build.items():
        print(f"  {installer:<18}{statistics.median(times):>10.2f}   ({min(times):.2f} - {max(times):.2f})")
    print(f"  pip / uv: {statistics.median(build['pip']) / statistics.median(build['uv']):.1f}x")
    print(f"\nensure() of an env already built: {check_ms:.3f} ms")
    print(f"\n`apinode run` to first 200 (median of {args.repeat}, min - max)")
    print(f"  {'endpoint in':<18}{'seconds':>10}")
    for name, times in startup.items():
        print(f"  {name:<18}{statistics.median(times):>10.2f}   ({min(times):.2f} - {max(times):.2f})")


if __name__ == "__main__":
    main()
