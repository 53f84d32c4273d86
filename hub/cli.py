"""The ``flux`` command.

``flux serve`` runs a hub. Settings come from the environment (see the README's
configuration table); flags override them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .config import Settings
from .errors import HubError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flux",
        description="Flux hub: a shared, event-sourced world-state engine on Redis.",
    )
    parser.add_argument("--version", action="version", version=f"flux-hub {__version__}")
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
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (env FLUX_LOG_LEVEL, default info)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``flux`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "serve":
        return _serve(args)
    return 2  # pragma: no cover - argparse refuses unknown commands


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
    except HubError as exc:
        print(f"flux serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.log_level != "debug":
        # websockets logs each connection's opening and closing at INFO.
        logging.getLogger("hub.ws.protocol").setLevel(logging.WARNING)
    from .server.runner import run

    try:
        run(settings)
    except HubError as exc:
        print(f"flux serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
