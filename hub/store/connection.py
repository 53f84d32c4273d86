"""Connections to Redis: the command pool with hiredis packing, and URL helpers.

:data:`REDIS_FAILURES` is what a lost or failing Redis raises; the modules of this
package turn it into :class:`hub.errors.LogUnavailable`.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

__all__ = [
    "REDIS_FAILURES",
    "SCRIPT_FAILURES",
    "make_client",
    "packing_class",
    "redact",
    "version_tuple",
]

#: What a lost or failing Redis raises; callers turn it into :class:`LogUnavailable`.
#: (On a cluster, redis-py's ``ClusterError``: it gave up following redirections, as
#: for a multi-key command while its slot moves, ``TTL exhausted``.)
REDIS_FAILURES = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterError,
    OSError,
)
#: The same, and a script's error reply (the connector and tap registries' calls).
SCRIPT_FAILURES = (*REDIS_FAILURES, redis_errors.ResponseError)


class _HiredisPacking:
    """Packs commands with hiredis (C) instead of redis-py's asyncio pure-Python packer.

    redis-py's asyncio connections do not use hiredis to serialise commands; for the
    reduce script's long argument lists that costs ~10 µs per event (bench/RESULTS.md).
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        command = args[0]
        if isinstance(command, str) and " " in command:
            args = (*command.split(), *args[1:])  # "SCRIPT LOAD" is two arguments
        return [hiredis.pack_command(args)]


#: One packing subclass per connection class (TCP, TLS, unix), made once.
_PACKING_CLASSES: dict[type, type] = {}


def make_client(
    url: str, *, max_connections: int, socket_timeout: float | None = 30.0
) -> aioredis.Redis:
    # A blocking pool: at ``max_connections`` a command waits for a free connection
    # (up to the reply timeout) instead of failing at once with "Too many connections",
    # which a burst of snapshot reads (100 subscribers resuming at once) would read as
    # Redis being unavailable (tests/faults/test_storms.py).
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        decode_responses=False,
        max_connections=max_connections,
        timeout=socket_timeout,
        # Never longer than a reply may take: connecting is part of a call's wait.
        socket_connect_timeout=min(5.0, socket_timeout or 5.0),
        socket_timeout=socket_timeout,
        health_check_interval=0,
    )
    client = aioredis.Redis(connection_pool=pool)
    # from_url picks the class by scheme (TCP, TLS, unix): wrap whichever it chose.
    pool.connection_class = packing_class(pool.connection_class)
    return client


def packing_class(base: type) -> type:
    """``base`` (a connection class) packing its commands with hiredis."""
    packing = _PACKING_CLASSES.get(base)
    if packing is None:
        packing = type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})
        _PACKING_CLASSES[base] = packing
    return packing


def version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.split('@', 1)[1]}"
