"""The `apinode` command: build bundles, serve them, administer a node."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from .client import NodeClient, NodeError
from .localnode import READY_FILE_OPTION, LocalNode, write_ready_file
from .node import eventloop
from .node import ray as ray_cluster
from .node.app import DEFAULT_MAX_BODY_MB, serve
from .node.endpoint import Endpoint
from .node.errors import ApiError
from .node.front import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    FILE_LIMIT_SHARE,
    FrontSettings,
    default_max_connections,
    raise_open_file_limit,
)
from .node.interpreters import codeenv_python, data_dir_cache, env_users, run_cache
from .node.jsonfile import DataDirError
from .node.keys import AdminKeys
from .node.openapi import example_body
from .node.openapi_offline import offline_document
from .node.service_manager import ServiceManager
from .node.store import DataDir
from .packaging.bundles import BundleError, bundle_bytes, write_bundle
from .packaging.codeenvs import CodeEnvCache, CodeEnvError
from .packaging.definitions import DefinitionError, ServiceDef
from .packaging.staging import stage_source
from .packaging.wheelhouse import with_wheelhouses
from .results import Report, text_table

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 12000


class CommandError(Exception):
    """A user mistake worth one line on stderr and a non-zero exit, not a traceback."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apinode", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="serve a service directory, a notebook or a bundle at once")
    run.add_argument(
        "source", type=Path, help="service directory (with service.json), notebook (.ipynb) or bundle (.zip)"
    )
    run.add_argument("--service", help="which service, when a notebook defines several")
    _add_server_options(run)
    run.set_defaults(handler=_run)

    build = commands.add_parser("build", help="make a bundle (same inputs, same bytes)")
    build.add_argument("source", type=Path, help="service directory or notebook")
    build.add_argument("-o", "--output", type=Path, required=True, help="the bundle file to write (.zip)")
    build.add_argument("--service", help="which service, when a notebook defines several")
    build.add_argument("--generation", help="generation id (default: derived from the content)")
    build.add_argument(
        "--wheelhouse",
        action="store_true",
        help="also bundle the wheels of every code env (pip wheel), so that a node "
        "without a package index builds them; the wheels fit this machine's "
        "Python and platform",
    )
    build.set_defaults(handler=_build)

    envs = commands.add_parser(
        "envs", help="list the code envs of a data directory, or remove those no generation on disk uses"
    )
    envs.add_argument("action", choices=("list", "prune"))
    envs.add_argument(
        "--data-dir",
        type=absolute_path,
        help="the node's data directory: its generations say which envs they use, in its cache "
        "(default: the cache of `apinode run`, $APINODE_CODE_ENVS or ~/.cache/apinode/code-envs, "
        "which no generation uses)",
    )
    _add_code_envs_option(envs, "the cache to list or prune, if not the data directory's (see serve --code-envs)")
    envs.set_defaults(handler=_envs)

    test = commands.add_parser("test", help="play a service's test queries on a node; exit 1 unless all pass")
    test.add_argument("source", type=Path, help="service directory, notebook (.ipynb) or bundle (.zip)")
    test.add_argument("--url", help="base URL of a node serving the service (default: start one from SOURCE)")
    test.add_argument("--service", help="which service, when a notebook defines several")
    test.add_argument("--key", help="API key of a private service (default: its first key)")
    test.set_defaults(handler=_test)

    openapi = commands.add_parser(
        "openapi",
        help="print a service's OpenAPI document without a node (loads each endpoint once, "
        "as a node does: its initialization runs)",
    )
    openapi.add_argument("source", type=Path, help="service directory, notebook (.ipynb) or bundle (.zip)")
    openapi.add_argument("-o", "--output", type=Path, help="write it to this file (default: standard output)")
    openapi.add_argument("--service", help="which service, when a notebook defines several")
    openapi.set_defaults(handler=_openapi)

    _add_node_commands(commands)
    return parser


def _add_code_envs_option(command: argparse.ArgumentParser, help_text: str) -> None:
    command.add_argument("--code-envs", type=absolute_path, metavar="DIR", help=help_text)


def _code_env_cache(args: argparse.Namespace) -> CodeEnvCache:
    """The cache `--code-envs` names, else the data directory's, else the one of `apinode run`."""
    if args.code_envs is not None:
        return CodeEnvCache(args.code_envs)
    return run_cache() if args.data_dir is None else data_dir_cache(args.data_dir)


def _add_node_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve_command = commands.add_parser(
        "serve", help="the full node: the services of a data directory, with the admin API"
    )
    serve_command.add_argument(
        "--data-dir",
        type=absolute_path,
        required=True,
        help="where services, generations, keys and logs live (created if missing)",
    )
    _add_code_envs_option(
        serve_command,
        "where code envs are built and kept (default: DATA_DIR/code-envs); nodes may share one, "
        "e.g. ~/.cache/apinode/code-envs, the cache of `apinode run`, to build each env once",
    )
    _add_server_options(serve_command)
    serve_command.set_defaults(handler=_serve)

    key_create = commands.add_parser(
        "admin-key-create", help="make an admin key and print it alone on a line (it is shown only this once)"
    )
    key_create.add_argument("--data-dir", type=absolute_path, required=True)
    key_create.add_argument("--label", help="what the key is for, as listings show it")
    key_create.set_defaults(handler=_admin_key_create)
    keys_list = commands.add_parser("admin-keys-list", help="list the admin keys (ids and labels, not secrets)")
    keys_list.add_argument("--data-dir", type=absolute_path, required=True)
    keys_list.set_defaults(handler=_admin_keys_list)
    key_delete = commands.add_parser("admin-key-delete", help="delete an admin key")
    key_delete.add_argument("key_or_id", metavar="KEY_OR_ID", help="the key itself, or its id")
    key_delete.add_argument("--data-dir", type=absolute_path, required=True)
    key_delete.set_defaults(handler=_admin_key_delete)

    admin = commands.add_parser("admin", help="call a node's admin API (like DSS's apinode-admin)")
    admin.add_argument("--url", required=True, help="the node's base URL, e.g. http://127.0.0.1:12000")
    admin.add_argument(
        "--key", default=os.environ.get("APINODE_ADMIN_KEY"), help="an admin key (default: $APINODE_ADMIN_KEY)"
    )
    actions = admin.add_subparsers(dest="admin_command", required=True, metavar="ADMIN_COMMAND")
    for name, command in ADMIN_COMMANDS.items():
        action = actions.add_parser(name, help=command.help)
        for arg in command.args:
            action.add_argument(arg.lower(), metavar=arg)
    admin.set_defaults(handler=_admin)


def _add_server_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    command.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)"
    )
    command.add_argument(
        "--max-body-mb",
        type=float,
        default=DEFAULT_MAX_BODY_MB,
        help=f"largest request body accepted, in MiB (default {DEFAULT_MAX_BODY_MB})",
    )
    command.add_argument(
        READY_FILE_OPTION,
        type=Path,
        metavar="PATH",
        help='once listening, write {"url": ..., "pid": ...} to PATH (atomically), for programs that start the node',
    )
    command.add_argument(
        "--max-connections",
        type=_positive(int),
        help=f"connections open at once; more wait to be accepted (default {DEFAULT_MAX_CONNECTIONS}, "
        f"or {FILE_LIMIT_SHARE * 100:.0f}%% of the open-file limit if that is less)",
    )
    command.add_argument(
        "--fronts",
        type=_fronts,
        default=1,
        metavar="N",
        help="processes accepting HTTP on the port, the node's own included; 'auto' for one per core "
        "(default 1; see README, 'More than one front')",
    )
    command.add_argument(
        "--query-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log every request in <data dir>/logs/queries/<service>.log (the default)",
    )
    command.add_argument(  # apinode.node.ray
        "--ray",
        metavar="ADDRESS",
        help="place every endpoint's pipelines on this Ray cluster: auto, HOST:PORT (the head's GCS port) "
        "or ray://HOST:PORT (needs pip install 'apinode[ray]')",
    )
    for name, default, what in (
        ("idle", DEFAULT_IDLE_TIMEOUT, "a kept-alive connection may wait for its next request"),
        ("header", DEFAULT_HEADER_TIMEOUT, "a client may take to send a request's headers"),
        ("body", DEFAULT_BODY_TIMEOUT, "a client may pause while sending a request's body"),
    ):
        command.add_argument(
            f"--{name}-timeout",
            type=_positive(float),
            default=default,
            metavar="SECONDS",
            help=f"how long {what} (default {default:g})",
        )


Number = TypeVar("Number", int, float)


def _positive(kind: Callable[[str], Number]) -> Callable[[str], Number]:
    """An argparse type: a number above zero."""

    def parse(text: str) -> Number:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its "invalid int value" message
    return parse


def _build(args: argparse.Namespace) -> int:
    staged = stage_source(args.source, args.service)
    with tempfile.TemporaryDirectory(prefix="apinode-wheels-") as wheels:
        if args.wheelhouse:
            staged = with_wheelhouses(staged, Path(wheels))
        generation = write_bundle(staged, args.output, args.generation)
    print(f"built {args.output} (service {staged.definition.id!r}, generation {generation})")
    return 0


def _openapi(args: argparse.Namespace) -> int:
    document = eventloop.run(offline_document(stage_source(args.source, args.service), run_cache()))
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _test(args: argparse.Namespace) -> int:
    """Play the source's test queries on the node at --url, or else on a node started from it."""
    definition = stage_source(args.source, args.service).definition
    if not any(endpoint.test_queries for endpoint in definition.endpoints):
        raise DefinitionError(f"{args.source}: service {definition.id!r} has no test queries to play")
    key = args.key
    if key is None and not definition.public_access and definition.api_keys:
        key = definition.api_keys[0]
    try:
        if args.url is not None:
            report = _play(NodeClient(args.url, key), args.url, definition)
        else:
            with LocalNode("run", str(args.source), "--service", definition.id) as node:
                report = _play(NodeClient(node.url, key), node.url, definition)
    except NodeError as exc:
        raise CommandError(str(exc)) from None
    print(report)
    return 0 if report.passed else 1


def _play(node: NodeClient, url: str, definition: ServiceDef) -> Report:
    """Every test query of every endpoint of a service, played in order."""
    return Report(
        f"service {definition.id} at {url}",
        tuple(
            node.play(definition.id, endpoint.id, query)
            for endpoint in definition.endpoints
            for query in endpoint.test_queries
        ),
    )


def _run(args: argparse.Namespace) -> int:
    """One service from a temporary data directory, through the same code as `serve`."""
    staged = stage_source(args.source, args.service)
    bundle, _ = bundle_bytes(staged)
    with tempfile.TemporaryDirectory(prefix="apinode-run-") as data_dir:
        store = DataDir(Path(data_dir))
        definition = store.install(staged.definition.id, bundle)
        code_envs = run_cache()
        # An env that cannot be built ends `run`, saying why; on a Ray cluster, Ray nodes build them.
        for endpoint in () if args.ray else definition.endpoints:
            codeenv_python(code_envs, endpoint, store.generation_dir(definition.id, str(definition.generation)))

        def announce(base: str, services: ServiceManager) -> None:
            service = services.services[definition.id]
            if not service.loaded:  # the generation did not load at all (its code env, say)
                raise CommandError(f"service {definition.id!r} did not load: {service.problem}")
            endpoints = next(iter(service.loaded.values())).endpoints
            print(f"apinode: serving service {definition.id!r} (generation {definition.generation}) at {base}")
            for endpoint_id, endpoint in endpoints.items():
                failure = endpoint.failure
                if failure is not None:
                    print(
                        f"endpoint {endpoint_id!r} failed to load: {failure.message}\n{failure.traceback}",
                        file=sys.stderr,
                    )
                url = f"{base}/public/api/v1/{definition.id}/{endpoint_id}/run"
                print(f"  {endpoint_id}: {'ready' if failure is None else 'FAILED to load'}: POST {url}")
            ready = [endpoint for endpoint in endpoints.values() if endpoint.pool.failure is None]
            if not ready:
                raise CommandError(f"no endpoint of service {definition.id!r} loaded")
            print(f"  documentation: {base}/public/api/v1/{definition.id}/docs")
            print(f"try:\n  {ready_curl(definition, base, ready[0])}", flush=True)

        _serve_data_dir(store, args, announce, code_envs)
    return 0


def _serve(args: argparse.Namespace) -> int:
    store = DataDir(args.data_dir)

    def announce(base: str, services: ServiceManager) -> None:
        print(f"apinode: serving {len(services.services)} service(s) from {store.root} at {base}")
        for service in services.services.values():
            state = service.state
            serving = ", ".join(state.selected()) or "no generation"
            problem = service.describe()["problem"]
            print(f"  {service.id}: {'enabled' if state.enabled else 'disabled'}, {serving}", end="")
            print("" if problem is None else f"; FAILED: {problem}")
        keys = AdminKeys(store.admin_keys)
        problem = keys.problem()
        if problem is not None:
            print(f"the admin API refuses every call until its key file is repaired: {problem}")
        elif not keys.entries():
            print(f"no admin key yet: make one with `apinode admin-key-create --data-dir {store.root}`")
        sys.stdout.flush()

    _serve_data_dir(store, args, announce, _code_env_cache(args))
    return 0


def _fronts(text: str) -> int:
    if text == "auto":
        return os.cpu_count() or 1
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of fronts: give a count (1 or more) or 'auto'")
    return int(text)


def _serve_data_dir(
    store: DataDir, args: argparse.Namespace, announce: Callable[[str, ServiceManager], None], code_envs: CodeEnvCache
) -> None:
    """Serve until stopped; once listening, `announce` it to people, then in the ready file."""
    ready_file: Path | None = args.ready_file

    def listening(port: int, services: ServiceManager) -> None:
        base = f"http://{_reachable(args.host)}:{port}"
        announce(base, services)
        if ready_file is not None:
            write_ready_file(ready_file, base)

    if ready_file is not None:
        ready_file.unlink(missing_ok=True)  # a stale one would say a stopped node is ready
    if args.ray:  # before the node's own SIGTERM handler is installed: ray.init replaces it
        try:
            ray_cluster.connect(args.ray)
        except ray_cluster.ClusterUnreachable as exc:
            raise CommandError(str(exc)) from None
    file_limit = raise_open_file_limit()
    settings = FrontSettings(
        max_body_bytes=int(args.max_body_mb * (1 << 20)),
        max_connections=args.max_connections or default_max_connections(file_limit),
        idle_timeout=args.idle_timeout,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
    )
    if settings.max_connections > file_limit:
        logging.getLogger("apinode.node").warning(
            "--max-connections %d is over the open-file limit (%d): past it, the node stops accepting "
            "for a moment at a time",
            settings.max_connections,
            file_limit,
        )
    try:
        eventloop.run(
            serve(
                store,
                code_envs,
                args.host,
                args.port,
                front_settings=settings,
                query_log=args.query_log,
                on_listening=listening,
                fronts=args.fronts,
            )
        )
    finally:
        code_envs.close()  # `apinode envs prune` may now remove what it used
        ray_cluster.stop_on_exit()
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)  # the node no longer serves


def _admin_key_create(args: argparse.Namespace) -> int:
    print(AdminKeys(DataDir(args.data_dir).admin_keys).create(label=args.label)["key"])
    return 0


def _admin_keys_list(args: argparse.Namespace) -> int:
    print(orjson.dumps(AdminKeys(DataDir(args.data_dir).admin_keys).entries(), option=orjson.OPT_INDENT_2).decode())
    return 0


def _admin_key_delete(args: argparse.Namespace) -> int:
    deleted = AdminKeys(DataDir(args.data_dir).admin_keys).delete(args.key_or_id)
    print(f"deleted admin key {deleted['id']}")
    return 0


def _admin(args: argparse.Namespace) -> int:
    if not args.key:
        raise CommandError("no admin key: pass --key KEY or set APINODE_ADMIN_KEY")
    command = ADMIN_COMMANDS[args.admin_command]
    values = [getattr(args, arg.lower()) for arg in command.args]
    try:
        answer = command.call(NodeClient(args.url, args.key), *values)
    except NodeError as error:
        raise CommandError(str(error)) from None
    print(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
    return 0


@dataclass(frozen=True)
class AdminCommand:
    """One `apinode admin` command (named as DSS's apinode-admin names it)."""

    help: str
    args: tuple[str, ...]  # argument names, as the command line shows them
    call: Callable[..., Any]  # (client, *args) -> the node's answer


def _mapping(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise CommandError(
            f"MAPPING is not JSON ({error}); expected "
            '\'{"entries": [{"generation": "g1", "proba": 1}], "hashBased": false}\''
        ) from None


def _action(action: str) -> AdminCommand:
    return AdminCommand(_ACTION_HELP[action], ("SERVICE",), lambda node, service: node.action(service, action))


_ACTION_HELP = {
    "switchToNewest": "serve the generation imported last",
    "enable": "serve the service again",
    "disable": "stop serving the service (404), keeping it on disk",
}
ADMIN_COMMANDS: dict[str, AdminCommand] = {
    "services-list": AdminCommand("list the services and their state", (), NodeClient.services),
    "service-create": AdminCommand(
        "create a service (with no generation yet)", ("SERVICE",), NodeClient.create_service
    ),
    "service-delete": AdminCommand(
        "stop a service and delete it with its generations", ("SERVICE",), NodeClient.delete_service
    ),
    "service-import-generation": AdminCommand(
        "send a bundle (.zip) to the node as a new generation of the service",
        ("SERVICE", "BUNDLE"),
        lambda node, service, bundle: {"generation": node.upload(service, Path(bundle))},
    ),
    "service-list-generations": AdminCommand("list the service's generations", ("SERVICE",), NodeClient.generations),
    "service-switch-to-newest": _action("switchToNewest"),
    "service-switch-to-generation": AdminCommand(
        "serve one generation", ("SERVICE", "GENERATION"), NodeClient.switch_to
    ),
    "service-set-mapping": AdminCommand(
        "split traffic between generations, e.g. "
        '\'{"entries": [{"generation": "g1", "proba": 0.9}, {"generation": "g2", "proba": 0.1}]}\'',
        ("SERVICE", "MAPPING"),
        lambda node, service, mapping: node.action(service, "setMapping", _mapping(mapping)),
    ),
    "service-enable": _action("enable"),
    "service-disable": _action("disable"),
    "metrics-get": AdminCommand("the node's metrics as JSON", (), NodeClient.metrics),
}


def _envs(args: argparse.Namespace) -> int:
    cache = _code_env_cache(args)
    users = {} if args.data_dir is None else env_users(args.data_dir, cache)
    entries = cache.entries()
    if args.action == "prune":
        for entry in entries:
            if entry.key not in users:
                kept = cache.remove(entry.key)
                print(
                    f"{'removed' if kept is None else f'kept, {kept}:'} {entry.key} "
                    f"({_megabytes(entry.size_bytes)}) {' '.join(entry.requirements)}"
                )
        return 0
    rows = [
        (
            entry.key + ("" if entry.complete else " (incomplete)"),
            _megabytes(entry.size_bytes),
            " ".join(entry.requirements) or "-",
            ", ".join(users.get(entry.key, ())) or "-",
        )
        for entry in entries
    ]
    print(text_table(("KEY", "SIZE", "REQUIREMENTS", "USED BY"), rows, cell_width=None))
    print(f"{len(entries)} code env(s) in {cache.root}")
    return 0


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def absolute_path(text: str) -> Path:
    """A path from the command line, made absolute once, here: pipelines and installers run in
    other directories, where a relative path would name another place."""
    return Path(text).expanduser().resolve()


def _reachable(host: str) -> str:
    """The host to print in a URL: a wildcard address is reached on loopback; IPv6 in brackets."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


def ready_curl(definition: ServiceDef, base_url: str, loaded: Endpoint) -> str:
    """A curl line that calls a loaded endpoint with its first test query, else with a body
    built from its function's hints."""
    endpoint = loaded.definition
    query = example_body(endpoint, loaded.description)
    parts = [
        "curl",
        "-s",
        "-X",
        "POST",
        f"{base_url}/public/api/v1/{definition.id}/{endpoint.id}/run",
        "-H",
        "Content-Type: application/json",
        "-d",
        orjson.dumps(query).decode(),
    ]
    if not definition.public_access and definition.api_keys:
        parts[2:2] = ["-u", f"{definition.api_keys[0]}:"]
    return shlex.join(parts)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("tornado.access").setLevel(logging.WARNING)  # one line per call costs CPU
    try:
        status: int = args.handler(args)
        return status
    except (CommandError, DefinitionError, BundleError, CodeEnvError, ApiError, DataDirError, OSError) as exc:
        print(f"apinode {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
