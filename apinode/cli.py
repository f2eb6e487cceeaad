"""The `apinode` command: build bundles and serve them."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
from pathlib import Path

import orjson

from .node import eventloop
from .node.app import DEFAULT_MAX_BODY_MB, serve
from .node.services import ServiceRegistry
from .packaging.bundles import BundleError, bundle_bytes, extract_bundle, write_bundle
from .packaging.definitions import DefinitionError, ServiceDef
from .packaging.staging import stage_source

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 12000


class CommandError(Exception):
    """A user mistake worth one line on stderr and a non-zero exit, not a traceback."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apinode", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="serve a service directory, a notebook or a bundle at once")
    run.add_argument("source", type=Path, help="service directory (with service.json), notebook (.ipynb) or bundle (.zip)")
    run.add_argument("--service", help="which service, when a notebook defines several")
    _add_server_options(run)
    run.set_defaults(handler=_run)

    build = commands.add_parser("build", help="make a bundle (same inputs, same bytes)")
    build.add_argument("source", type=Path, help="service directory or notebook")
    build.add_argument("-o", "--output", type=Path, required=True, help="the bundle file to write (.zip)")
    build.add_argument("--service", help="which service, when a notebook defines several")
    build.add_argument("--generation", help="generation id (default: derived from the content)")
    build.set_defaults(handler=_build)
    return parser


def _add_server_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    command.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    command.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_MB,
                         help=f"largest request body accepted, in MiB (default {DEFAULT_MAX_BODY_MB})")


def _build(args: argparse.Namespace) -> int:
    staged = stage_source(args.source, args.service)
    generation = write_bundle(staged, args.output, args.generation)
    print(f"built {args.output} (service {staged.definition.id!r}, generation {generation})")
    return 0


def _run(args: argparse.Namespace) -> int:
    staged = stage_source(args.source, args.service)
    bundle, generation = bundle_bytes(staged)
    with tempfile.TemporaryDirectory(prefix="apinode-run-") as data_dir:
        directory = Path(data_dir) / "services" / staged.definition.id / "generations" / generation
        definition = extract_bundle(bundle, directory)
        eventloop.run(_serve_one(definition, directory, args))
    return 0


async def _serve_one(definition: ServiceDef, directory: Path, args: argparse.Namespace) -> None:
    services = ServiceRegistry()
    failures = await services.add(definition, directory)
    for endpoint_id, failure in failures.items():
        print(f"endpoint {endpoint_id!r} failed to load: {failure.message}\n{failure.traceback}", file=sys.stderr)

    def announce(port: int) -> None:
        base = f"http://{args.host}:{port}"
        print(f"apinode: serving service {definition.id!r} (generation {definition.generation}) at {base}")
        for endpoint in definition.endpoints:
            url = f"{base}/public/api/v1/{definition.id}/{endpoint.id}/run"
            status = "FAILED to load" if endpoint.id in failures else "ready"
            print(f"  {endpoint.id}: {status}: POST {url}")
        print(f"try:\n  {ready_curl(definition, base)}", flush=True)

    await serve(services, args.host, args.port, max_body_bytes=int(args.max_body_mb * (1 << 20)),
                on_listening=announce)


def ready_curl(definition: ServiceDef, base_url: str) -> str:
    """A curl line that calls the first endpoint with its first test query (or no parameters)."""
    endpoint = definition.endpoints[0]
    query = endpoint.test_queries[0].query if endpoint.test_queries else {}
    parts = ["curl", "-s", "-X", "POST", f"{base_url}/public/api/v1/{definition.id}/{endpoint.id}/run",
             "-H", "Content-Type: application/json", "-d", orjson.dumps(query).decode()]
    if not definition.public_access and definition.api_keys:
        parts[2:2] = ["-u", f"{definition.api_keys[0]}:"]
    return shlex.join(parts)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("tornado.access").setLevel(logging.WARNING)  # one line per call costs CPU
    try:
        return args.handler(args)
    except (CommandError, DefinitionError, BundleError, OSError) as exc:
        print(f"apinode {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
