"""The blocking delta-log reads (``XREAD BLOCK``): bare connections per partition.

A bare connection, not a client: a client's pool, retry and reply callbacks cost
~20 us per read, paid for every delta at low rates. (No socket timeout: it would have
to outlast the BLOCK time.) One idle connection per concurrent reader of a partition
(one per hub sharing a store, in tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from redis import exceptions as redis_errors

from ..errors import LogUnavailable
from .batches import DeltaBatch
from .connection import REDIS_FAILURES

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from redis.asyncio.connection import AbstractConnection

    from .keys import Keys

__all__ = ["TAIL_NAME", "Tails"]

#: The delta-log reading connections' names (one per partition, suffixed ``-<p>``).
TAIL_NAME = "flux-hub:tail"


class Tails:
    """Args:
    keys: the key layout.
    connect: a new, unconnected connection named ``name`` to the server of ``key``.
    failed: called after a failed read; False: drop the connection (a cluster's
        slot may have a new master: the next read connects to the one it names).
    """

    def __init__(
        self,
        keys: Keys,
        connect: Callable[[str, str], AbstractConnection],
        failed: Callable[[], Awaitable[bool]],
    ) -> None:
        self.keys = keys
        self._connect = connect
        self._failed = failed
        self._idle: dict[int, list[AbstractConnection]] = {}

    async def read(self, p: int, after: str, count: int, block_ms: int | None) -> DeltaBatch:
        """Entries of partition ``p``'s delta log after ``after`` (see Store.read_entries)."""
        idle = self._idle.setdefault(p, [])
        log = self.keys.delta_log(p)
        tail = idle.pop() if idle else self._connect(f"{TAIL_NAME}-{p}", log)
        command: list[str | int] = ["XREAD", "COUNT", count]
        if block_ms is not None:
            command += ["BLOCK", block_ms]
        command += ["STREAMS", log, after]
        keep = True
        try:
            # (It connects again by itself after a failure.)
            await tail.send_packed_command(tail.pack_command(*command), check_health=False)
            reply = cast("dict[bytes, Any] | list[list[Any]] | None", await tail.read_response())
        except (*REDIS_FAILURES, redis_errors.ResponseError) as exc:
            await tail.disconnect(nowait=True)
            keep = await self._failed()
            raise LogUnavailable(f"Redis failed while tailing the delta log: {exc}") from exc
        finally:
            # (Interrupted, it disconnected itself; it connects again when next used.)
            if keep:
                idle.append(tail)
        if not reply:
            return DeltaBatch(p, [])
        # A map {stream: entries} (RESP3, or redis-py's RESP2 parser) or [[stream, entries]].
        entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        return DeltaBatch(p, [(entry[0], entry[1]) for entry in entries])

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for tail in idle:
                await tail.disconnect()
        self._idle.clear()
