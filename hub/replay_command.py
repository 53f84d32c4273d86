"""``flux replay`` on the command line: find the Redis, run :func:`hub.replay.replay`,
print the report, exit with its status."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from .config import Settings
from .errors import HubError
from .replay import Replay, replay
from .store import EmbeddedRedis, Keys, Store

if TYPE_CHECKING:
    import argparse

    from .config import RedisSettings

__all__ = ["run_replay"]

#: Seconds between two progress lines on stderr.
PROGRESS_EVERY = 2.0


def run_replay(args: argparse.Namespace) -> int:
    """Run ``flux replay``; returns the exit status (2: it could not run)."""
    try:
        settings = Settings.from_env(
            os.environ, **{"redis.url": args.redis, "redis.data_dir": args.data_dir}
        )
        with ExitStack() as stack:
            url = _redis_url(settings.redis, stack)
            report = asyncio.run(_replay(settings, url, quiet=args.json))
    except HubError as exc:
        print(f"flux replay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(_as_json(report)))
    else:
        _print(report, max(0, args.show))
    return report.exit_status


def _redis_url(config: RedisSettings, stack: ExitStack) -> str:
    """The configured Redis; else the embedded one of the data directory: the running
    hub's server if there is one (it answers on its socket), else started for now."""
    if config.url is not None:
        return config.url
    if not config.data_dir.is_dir():
        raise HubError(f"no data directory {config.data_dir}: pass --data-dir or --redis URL")
    embedded = EmbeddedRedis.configured(config)
    if embedded.answering():
        return embedded.url
    return stack.enter_context(embedded).url


async def _replay(settings: Settings, url: str, *, quiet: bool) -> Replay:
    keys = Keys(settings.redis.key_prefix, settings.redis.partitions)
    last = asyncio.get_running_loop().time()
    loop = asyncio.get_running_loop()

    def progress(partition: int, done: int, total: int) -> None:
        nonlocal last
        if quiet or loop.time() - last < PROGRESS_EVERY:
            return
        last = loop.time()
        print(f"partition {partition}: {done:,} of {total:,} events", file=sys.stderr)

    timeout = settings.redis.reply_timeout
    async with await Store.connect(url, keys, settings.log, reply_timeout=timeout) as store:
        return await replay(store, progress=progress)


def _print(report: Replay, show: int) -> None:
    parts = len(report.partitions)
    print(
        f"Replayed {report.events:,} events of {parts} partition{'s' * (parts != 1)} "
        f"in {report.seconds:.1f} s."
    )
    agree = sum(p.agree for p in report.partitions)
    moved = sum(p.moved_on for p in report.partitions)
    differences = report.differences
    print(
        f"Entities: {agree:,} agree, {len(differences):,} differ, "
        f"{moved:,} written during the replay (not compared)."
    )
    for p in report.partitions:
        if p.skipped:
            print(f"Partition {p.partition} not compared: {p.skipped}.")
    for difference in differences[:show]:
        print(f"  {difference.entity_id}: {difference.what}")
    if len(differences) > show:
        print(f"  … and {len(differences) - show:,} more (--show N lists more)")


def _as_json(report: Replay) -> dict[str, Any]:
    return {
        "status": report.exit_status,
        "events": report.events,
        "seconds": round(report.seconds, 3),
        "partitions": [
            {
                "partition": p.partition,
                "events": p.events,
                "agree": p.agree,
                "moved_on": p.moved_on,
                "unreadable": p.unreadable,
                "skipped": p.skipped,
                "differences": [{"entity_id": d.entity_id, "what": d.what} for d in p.differences],
            }
            for p in report.partitions
        ],
    }
