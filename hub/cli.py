"""The ``flux`` command.

``flux serve`` runs a hub; ``flux replay`` checks its state against the event log. The
other verbs are a client of a hub, with the same verbs, arguments and environment as
the Flux skill's ``flux.sh`` (``FLUX_URL``, ``FLUX_TOKEN``, ``FLUX_ADMIN_TOKEN``), plus
``watch``, ``history`` and ``namespace``. Settings of ``serve`` and ``replay`` come from
the environment (see the README's configuration table); flags override them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
from pathlib import Path

from . import __version__
from .config import Settings
from .errors import HubError, WhereError

__all__ = ["main"]

DEFAULT_URL = "http://localhost:3000"
#: The ``--where`` help of ``list`` and ``watch`` (hub/core/where.py where_from_words).
WHERE_HELP = (
    "only entities whose values match: status=open, load<5 (=, !=, <, <=, >, >=), "
    "'zone in a,b', owner? (present), !owner? (absent), or a JSON object; "
    "repeat for more (all must hold)"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flux",
        description="Flux hub: a shared, event-sourced world-state engine on Redis.",
        epilog="Client verbs read FLUX_URL (default http://localhost:3000), FLUX_TOKEN and "
        "FLUX_ADMIN_TOKEN. Output is JSON when piped or with --json.",
    )
    parser.add_argument("--version", action="version", version=f"flux-hub {__version__}")
    # Client options go before or after the verb: the verb's copies only set a value
    # when given (SUPPRESS), so they never undo one given before it.
    for target, default in (
        (parser, None),
        (common := argparse.ArgumentParser(add_help=False), argparse.SUPPRESS),
    ):
        target.add_argument(
            "--url", default=default, help="the hub (env FLUX_URL, default http://localhost:3000)"
        )
        target.add_argument("--token", default=default, help="a namespace token (env FLUX_TOKEN)")
        target.add_argument(
            "--json",
            action="store_true",
            default=False if default is None else default,
            help="print JSON even on a terminal",
        )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run a hub (on a private, embedded Redis unless --redis is given)",
        description="Run a hub. Without --redis (or FLUX_REDIS_URL) it starts a private "
        "Redis server with its data in --data-dir.",
    )
    serve.add_argument("--host", help="address to listen on (env FLUX_HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port to listen on (env PORT, default 3000)")
    serve.add_argument(
        "--redis",
        metavar="URL",
        help="use this Redis instead of the embedded one (env FLUX_REDIS_URL)",
    )
    serve.add_argument(
        "--data-dir",
        type=Path,
        help="data directory of the embedded Redis (env FLUX_DATA_DIR, default ./flux-data)",
    )
    serve.add_argument(
        "--appendfsync",
        choices=["everysec", "always", "no"],
        help="AOF fsync policy of the embedded Redis (env FLUX_APPENDFSYNC, default everysec)",
    )
    serve.add_argument(
        "--workers",
        metavar="N",
        help="hub processes serving the port, over one Redis: a number, or auto for one "
        "per core (env FLUX_WORKERS, default 1; Linux; docs/scaling.md)",
    )
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (env FLUX_LOG_LEVEL, default info)",
    )

    replay = commands.add_parser(
        "replay",
        help="check the state in Redis against its event log (read-only)",
        description="Fold each partition's event log through the pure reducer and compare "
        "the result with the entities in Redis: properties, versions, deletions. Exit "
        "status: 0 they agree, 1 they differ, 2 cannot run, 3 a log was trimmed and its "
        "partition could not be compared. Safe while a hub runs: entities written during "
        "the replay are counted as moved on, not compared.",
    )
    replay.add_argument("--redis", metavar="URL", help="the hub's Redis (env FLUX_REDIS_URL)")
    replay.add_argument(
        "--data-dir",
        type=Path,
        help="data directory of the embedded Redis (env FLUX_DATA_DIR, default ./flux-data); "
        "its server is used if a hub runs there, else started for the replay",
    )
    replay.add_argument(
        "--show", type=int, default=20, metavar="N", help="differences listed (default 20)"
    )
    replay.add_argument("--json", action="store_true", help="print one JSON report")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, parents=[common])

    p = verb("publish", "publish one event")
    p.add_argument("stream", metavar="STREAM")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("entity_id", metavar="ENTITY_ID")
    p.add_argument("properties", metavar="PROPERTIES_JSON")
    p.add_argument(
        "--if-version",
        type=int,
        metavar="N",
        help="apply only if the entity is at version N (0: must not exist); else exit 1",
    )
    p.add_argument(
        "--ttl",
        type=float,
        metavar="SECONDS",
        help="a lease: the hub deletes the entity unless an event with a ttl refreshes it "
        "in time (0 removes the lease; docs/semantics.md#leases)",
    )
    p = verb(
        "heartbeat",
        "keep an entity alive: publish it with a ttl every few seconds until stopped "
        "(Ctrl-C, SIGTERM, --count), then delete it (docs/presence.md)",
    )
    p.add_argument("entity_id", metavar="ENTITY_ID")
    p.add_argument("properties", metavar="PROPERTIES_JSON", help="published with every beat")
    p.add_argument("--ttl", type=float, required=True, metavar="SECONDS", help="lease of each beat")
    p.add_argument("--every", type=float, metavar="SECONDS", help="between beats (default ttl/3)")
    p.add_argument("--count", type=int, metavar="N", help="stop after N beats")
    p.add_argument("--keep", action="store_true", help="at the end, leave it to expire")
    p.add_argument("--stream", default="presence", help="the events' stream (default presence)")
    p.add_argument("--source", default="flux-cli", help="the events' source (default flux-cli)")
    verb("get", "show one entity").add_argument("entity_id", metavar="ENTITY_ID")
    p = verb("list", "list entities")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--prefix", help="ids starting with this")
    scope.add_argument("--namespace", help="ids in this namespace")
    p.add_argument("--where", action="append", default=[], metavar="COND", help=WHERE_HELP)
    verb("delete", "delete one entity").add_argument("entity_id", metavar="ENTITY_ID")
    verb(
        "batch-delete", 'delete by {"namespace": …}, {"prefix": …} or {"entity_ids": [...]}'
    ).add_argument("filter", metavar="FILTER_JSON")
    verb("batch", "publish a JSON array of events").add_argument(
        "events", metavar="EVENTS_JSON_ARRAY"
    )
    verb("connectors", "list connectors")
    verb(
        "admin-config",
        "show, or update with UPDATE_JSON, the runtime config (an update takes the admin "
        "token from env FLUX_ADMIN_TOKEN, when the hub has one)",
    ).add_argument("update", metavar="UPDATE_JSON", nargs="?")
    verb("health", "check that the hub answers")
    p = verb("history", "show an entity's newest events")
    p.add_argument("entity_id", metavar="ENTITY_ID")
    p.add_argument("--limit", type=int, default=20, help="how many (1–500, default 20)")
    p.add_argument("--since", help="only events stored since this RFC 3339 time")
    p = verb(
        "namespace",
        "register, show or delete a namespace (register and delete take the admin token "
        "from env FLUX_ADMIN_TOKEN)",
    )
    p.add_argument("action", choices=["register", "get", "delete"])
    p.add_argument("name", metavar="NAME")
    p = verb(
        "watch",
        "a live table of entities: FILTER is '*', a prefix ending in '/', a glob, or exact ids",
    )
    p.add_argument("patterns", metavar="FILTER", nargs="*")
    p.add_argument("--namespace", action="append", default=[], help="add a namespace")
    p.add_argument("--where", action="append", default=[], metavar="COND", help=WHERE_HELP)
    p.add_argument(
        "--wait",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="how long to wait for the hub at the start, then exit 1 (default 10; 0: wait "
        "until it is up, as a service started before its hub does); once connected, "
        "watch follows reconnections by itself",
    )
    verb(
        "mcp",
        "serve MCP (Model Context Protocol) on stdin/stdout for an agent, acting on the hub "
        "with the token given (docs/mcp.md)",
    )
    return parser


def _seconds(text: str) -> float:
    """An argparse type: a duration in seconds, finite and not negative."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds: {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the ``flux`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "serve":
        return _serve(args)
    try:
        if args.command == "replay":
            from .replay_command import run_replay

            return run_replay(args)
        return _client(args)
    except BrokenPipeError:
        # The reader of the output left (`flux list | head -1`): stop quietly, with the
        # status of a tool that SIGPIPE killed, and let the interpreter's last flush
        # go nowhere rather than fail again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _client(args: argparse.Namespace) -> int:
    from .commands import CLIENT_VERBS, CommandError, Context, run_verb

    url = (args.url or os.environ.get("FLUX_URL") or DEFAULT_URL).rstrip("/")
    if "://" not in url:
        url = "http://" + url  # `localhost:3000`, read as curl and the SDK read it
    token = args.token or os.environ.get("FLUX_TOKEN") or None
    tty = sys.stdout.isatty()
    if args.command == "watch":
        from .watch import filter_of, watch

        try:
            spec = filter_of(args.patterns, args.namespace, args.where)
        except WhereError as exc:
            print(f"flux watch: {exc}", file=sys.stderr)
            return 2
        from flux_client import FluxError

        try:
            first = None if args.wait is None else args.wait or math.inf
            asyncio.run(watch(url, token, spec, tty=tty and not args.json, first_connection=first))
        except KeyboardInterrupt:
            return 0
        except BrokenPipeError:
            raise  # the reader left: main() ends quietly
        except (OSError, TimeoutError) as exc:
            print(f"flux watch: cannot reach the hub at {url}: {exc}", file=sys.stderr)
            return 1
        except FluxError as exc:  # refused: a token, private reads (docs/tenancy.md)
            print(f"flux watch: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "mcp":
        from .mcp.stdio import serve_stdio

        # stdout carries the protocol: logs go to stderr only.
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        try:
            asyncio.run(serve_stdio(url, token))
        except KeyboardInterrupt:
            pass
        return 0
    assert args.command in CLIENT_VERBS
    ctx = Context(
        url=url,
        token=token,
        admin_token=os.environ.get("FLUX_ADMIN_TOKEN") or None,
        json_output=args.json or not tty,
    )
    try:
        run_verb(ctx, args.command, args)
    except CommandError as exc:
        print(f"flux {args.command}: {exc}", file=sys.stderr)
        return exc.status
    return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env(
            os.environ,
            **{
                "gateway.host": args.host,
                "gateway.port": args.port,
                "redis.url": args.redis,
                "redis.data_dir": args.data_dir,
                "redis.appendfsync": args.appendfsync,
            },
        )
        if args.log_level:
            settings = settings.model_copy(update={"log_level": args.log_level})
        workers, worker = _workers(args)
        if worker:
            gateway = settings.gateway.model_copy(update={"worker": worker})
            settings = settings.model_copy(update={"gateway": gateway})
    except HubError as exc:
        print(f"flux serve: {exc}", file=sys.stderr)
        return 2
    # Under --workers, each line says which process wrote it.
    role = f"[worker {worker}] " if worker else "[supervisor] " if workers > 1 else ""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {role}%(name)s: %(message)s",
    )
    # websockets logs each connection's opening and closing at INFO (noise, unless
    # debugging), and at DEBUG every upgrade's headers and every frame: tokens (an
    # Authorization header, a ?token=, an auth frame). Never below INFO, then.
    debugging = settings.log_level == "debug"
    logging.getLogger("hub.ws.protocol").setLevel(logging.INFO if debugging else logging.WARNING)
    from .runner import run

    try:
        if workers > 1:
            from .supervisor import Supervisor

            return Supervisor(settings, workers).run()
        run(settings)
    except HubError as exc:
        print(f"flux serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _workers(args: argparse.Namespace) -> tuple[int, int]:
    """How many workers to run (``--workers``, ``FLUX_WORKERS``), and this process's
    number if it is one of them (0: it is not)."""
    from .supervisor import WORKER_ENV, parse_workers

    index = os.environ.get(WORKER_ENV, "")
    if index:
        return 1, parse_workers(index, WORKER_ENV)
    if args.workers is not None:
        return parse_workers(args.workers, "--workers"), 0
    return parse_workers(os.environ.get("FLUX_WORKERS") or "1", "FLUX_WORKERS"), 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
