"""The blocking delta-log reads (``XREAD BLOCK``): bare connections per partition.

A bare connection, not a client: a client's pool, retry and reply callbacks cost
~20 us per read, paid for every delta at low rates. (No socket timeout: it would have
to outlast the BLOCK time.) One idle connection per concurrent reader of a partition
(one per hub sharing a store, in tests).

On a Redis Cluster being resharded, a read of a partition whose slot is moving is
refused (``ASK``, ``TRYAGAIN``) once its log has left the old master: nothing is
written to the partition until the slot has moved (hub/store/moving.py), so the read
answers empty after ``MOVING_PAUSE``, and the caller reads again without backing off.
Once it has moved (``MOVED``), the next read goes to the new master: the log moved
whole, with its entries' ids, so a reader's position is valid there.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

from redis import exceptions as redis_errors

from ..errors import LogUnavailable
from .batches import DeltaBatch
from .connection import REDIS_FAILURES
from .ordered import REDIRECTIONS

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from redis.asyncio.connection import AbstractConnection

    from .keys import Keys

__all__ = ["TAIL_NAME", "Tails"]

#: The delta-log reading connections' names (one per partition, suffixed ``-<p>``).
TAIL_NAME = "flux-hub:tail"
#: Seconds a read of a moving slot's log waits before answering empty: how soon a
#: reader notices that the slot has moved.
MOVING_PAUSE = 0.05


class Tails:
    """Args:
    keys: the key layout.
    connect: a new, unconnected connection named ``name`` to the server of ``key``.
    failed: called with what a read failed with (or the ``MOVED`` it got); False:
        drop the connection (a cluster's slot may have a new master: the next read
        connects to the one it names).
    """

    def __init__(
        self,
        keys: Keys,
        connect: Callable[[str, str], AbstractConnection],
        failed: Callable[[BaseException], Awaitable[bool]],
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
        except REDIRECTIONS as exc:
            # Moving (nothing is written meanwhile), or moved (MOVED: read there next).
            if isinstance(exc, redis_errors.MovedError):
                keep = await self._failed(exc)
                if not keep:
                    await tail.disconnect(nowait=True)
            await asyncio.sleep(MOVING_PAUSE if block_ms else 0)
            return DeltaBatch(p, [])
        except (*REDIS_FAILURES, redis_errors.ResponseError) as exc:
            await tail.disconnect(nowait=True)
            keep = await self._failed(exc)
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
