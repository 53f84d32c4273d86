"""``flux watch``: a live table of entities, updated in place.

On a terminal the table is redrawn (at most :data:`FRAMES_PER_SECOND` times a second)
with the connection state in its first line; piped, every update is printed as one
JSON line instead. A hub it cannot reach at the start is an error (exit 1, after
:data:`FIRST_CONNECTION_SECONDS`); once connected, it follows reconnections by itself
(the SDK resumes).

FILTER arguments: ``*`` everything; ``crew/`` (ending in ``/``) a prefix; one with
``*``, ``?`` or ``[`` a glob; anything else an exact id. ``--namespace`` adds a
namespace; ``--where`` narrows to entities whose values match (``status=open``,
``load<5``: hub/core/where.py ``where_from_words``), and one that stops matching
leaves the table.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import sys
from typing import Any, TextIO

from flux_client import EntityCache, FluxClient, Update

from .commands import cell, expires_in
from .core.where import where_from_words

__all__ = ["filter_of", "watch"]

FRAMES_PER_SECOND = 10
#: Seconds to wait for the first connection before saying that the hub cannot be
#: reached (a hub started just before has this long to come up). Once connected, the
#: watch follows every reconnection for as long as it runs.
FIRST_CONNECTION_SECONDS = 10.0
_CLEAR = "\x1b[H\x1b[2J"


def filter_of(
    patterns: list[str], namespaces: list[str], where: list[str] | None = None
) -> dict[str, Any]:
    """The SDK subscribe arguments of FILTER words (and ``--where`` words).

    Raises:
        WhereError: a ``--where`` word that does not parse.
    """
    spec: dict[str, Any] = {"ids": [], "prefixes": [], "globs": [], "namespaces": list(namespaces)}
    for pattern in patterns:
        if pattern == "*":
            spec["all"] = True
        elif pattern.endswith("/"):
            spec["prefixes"].append(pattern)
        elif any(c in pattern for c in "*?["):
            spec["globs"].append(pattern)
        else:
            spec["ids"].append(pattern)
    if not patterns and not namespaces:
        spec["all"] = True
    if where:
        spec["where"] = where_from_words(where)
    return {k: v for k, v in spec.items() if v}


async def watch(
    url: str,
    token: str | None,
    spec: dict[str, Any],
    *,
    tty: bool,
    out: TextIO = sys.stdout,
    first_connection: float | None = None,
) -> None:
    """Show the entities of ``spec`` until cancelled (Ctrl-C).

    Raises:
        TimeoutError: no connection within ``first_connection`` seconds (default
            :data:`FIRST_CONNECTION_SECONDS`; ``math.inf``: no limit); the message says
            why the latest attempt failed.
        flux_client.FluxError: the hub refused the subscription (a token, private reads).
    """
    if tty:
        out.write(f"{_CLEAR}flux watch — connecting to {url} (Ctrl-C to quit)\n")
        out.flush()
    wait: float | None = FIRST_CONNECTION_SECONDS if first_connection is None else first_connection
    if wait == math.inf:
        wait = None  # the client's "no timeout": keep trying until the hub is up
    async with FluxClient(url, token=token, request_timeout=wait) as client:
        client.request_timeout = None  # connected: from now on, wait through reconnections
        if not tty:
            async with await client.subscribe(snapshot=True, **spec) as updates:
                async for update in updates:
                    print(json.dumps(_update_json(update)), file=out, flush=True)
            return
        async with EntityCache(client, **spec) as cache:
            while True:
                _draw(cache, client.state, out)
                await asyncio.sleep(1 / FRAMES_PER_SECOND)


def _draw(cache: EntityCache, state: str, out: TextIO) -> None:
    columns, lines = shutil.get_terminal_size((120, 40))
    status = "live" if state == "open" and cache.synced else state
    header = f"flux watch — {status} — {len(cache.entities)} entities (Ctrl-C to quit)"
    rows = [header, ""]
    width = max((len(i) for i in cache.entities), default=2)
    shown = sorted(cache.entities)[: max(0, lines - 4)]
    # "expires in 8s" for leased entities, in a column only when one is shown.
    leases = {
        i: f"expires {expires_in(e.expires_at)}"
        for i in shown
        if (e := cache.entities[i]).expires_at is not None
    }
    lease_width = max((len(text) for text in leases.values()), default=0)
    for entity_id in shown:
        entity = cache.entities[entity_id]
        prefix = f"{entity_id.ljust(width)}  v{entity.version:<5} "
        if lease_width:
            prefix += leases.get(entity_id, "").ljust(lease_width) + "  "
        rows.append(prefix + cell(entity.properties, max(10, columns - len(prefix) - 1)))
    out.write(_CLEAR + "\n".join(rows) + "\n")
    out.flush()


def _update_json(update: Update) -> dict[str, Any]:
    value: dict[str, Any] = {"kind": update.kind, "id": update.entity_id}
    if update.kind == "snapshot" and update.entity is not None:
        value["properties"] = update.entity.properties
        value["version"] = update.entity.version
        if update.entity.expires_at is not None:
            value["expiresAt"] = update.entity.expires_at
    elif update.kind == "delta":
        value.update(changes=update.changes, version=update.version, created=update.created)
        # The lease's news (docs/protocol.md, "delta"): a deadline, or null when removed.
        if update.lease_news and (update.expires_at is not None or not update.created):
            value["expiresAt"] = update.expires_at
    elif update.kind in ("deleted", "left"):
        value["version"] = update.version
        if update.reason:  # "expired": its lease ran out (docs/presence.md)
            value["reason"] = update.reason
    return value
