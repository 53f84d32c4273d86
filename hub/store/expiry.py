"""Leases in Redis: the sweep that deletes entities whose time-to-live ran out, and
reads of the lease table.

Leases are set by the reduce script, in the same atomic call as the event that gives
them (so an entity and its lease never disagree), in ``flux:{p}:leases`` (a sorted
set: entity id -> deadline, in ms of Redis's clock). ``expire.lua`` deletes what is due.
The rules are :mod:`hub.core.lease`'s.

On a Redis Cluster, a sweep names the partition's unwritten key as the reduce calls do
(``Keys.unwritten_beside``), so it never starts while the partition's slot moves (it
would fail at the first entity that has left, with its first writes done): it waits
until the slot has moved (hub/store/cluster.py, ``FluxCluster``), and past the store's
reply timeout the partition is skipped, swept by a later sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

from redis import exceptions as redis_errors

from ..errors import LogUnavailable
from .connection import REDIS_FAILURES
from .moving import slot_moving

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .store import Store

__all__ = ["EXPIRY_SOURCE", "Expiry", "LeaseTable"]

_SOURCE = resources.files(__package__).joinpath("expire.lua").read_text()

#: The ``source`` of the tombstone events the sweep writes (their deltas name none:
#: no publisher made them).
EXPIRY_SOURCE = "flux-hub"


@dataclass(frozen=True, slots=True)
class Expiry:
    """What one sweep of one partition did."""

    #: Entities deleted because their lease ran out.
    expired: int
    #: Entities still due after it (a backlog, left to the next sweeps).
    still_due: int
    #: Redis's time when it ran (ms).
    now_ms: int


class LeaseTable:
    """The leases of one store's partitions.

    Args:
        store: the store (its command pool, keys and log retention are used).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys = store.keys
        self._script = store.client.register_script(_SOURCE)

    async def sweep(self, p: int, event_ids: Sequence[str]) -> Expiry:
        """Delete the due entities of partition ``p``: at most ``len(event_ids)``, each
        tombstone taking the next of ``event_ids`` as its ``eventId``.

        Raises:
            LogUnavailable: Redis failed or refused the write; nothing of this sweep
                was applied (Redis runs it atomically), unless the reply alone was lost.
        """
        keys = self.keys
        log = self.store.log
        key_list = [
            keys.event_log(p),
            keys.delta_log(p),
            keys.ids(p),
            keys.stats(p),
            keys.namespace_stats(p),
            keys.leases(p),
        ]
        if self.store.cluster:
            key_list.append(keys.unwritten_beside(key_list[0]))
        args: list[Any] = [
            len(event_ids),
            log.event_log_maxlen,
            log.delta_log_maxlen,
            log.history_per_entity,
            log.delta_log_max_age_seconds * 1000,
            keys.entity(p, ""),
            keys.history(p, ""),
            EXPIRY_SOURCE,
            *event_ids,
        ]
        try:
            reply = cast("list[int]", await self._script(keys=key_list, args=args))
        except (*REDIS_FAILURES, redis_errors.ResponseError) as exc:
            if slot_moving(exc):
                return Expiry(0, 0, 0)  # nothing ran: a later sweep does it
            if not isinstance(exc, redis_errors.ResponseError):
                raise LogUnavailable(f"Redis failed while expiring leases: {exc}") from exc
            # Refused whole (OOM past maxmemory, MISCONF on a full disk, a read-only
            # replica): the sweep is a write. Nothing was applied; the next one retries.
            raise LogUnavailable(f"Redis refused the lease sweep: {exc}") from exc
        return Expiry(int(reply[0]), int(reply[1]), int(reply[2]))

    async def deadline(self, entity_id: str) -> int | None:
        """When an entity's lease runs out (ms of Redis's clock), or None: no lease."""
        p = self.keys.partition_of(entity_id)
        try:
            score = await self.store.client.zscore(self.keys.leases(p), entity_id)
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading a lease: {exc}") from exc
        return None if score is None else int(score)

    async def count(self) -> int:
        """Leases held, over every partition."""
        try:
            async with self.store.client.pipeline(transaction=False) as pipe:
                for p in range(self.keys.partitions):
                    pipe.zcard(self.keys.leases(p))
                replies = await pipe.execute()
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while counting leases: {exc}") from exc
        return sum(int(r) for r in replies)
