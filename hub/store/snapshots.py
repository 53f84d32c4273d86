"""Reads of entities with the deadlines of their leases: snapshot.lua.

Every read of entity state goes through one script call per partition (up to
:data:`IDS_PER_CALL` ids each), which reads the entities' hashes, the deadlines of
their leases (``ZMSCORE`` on the partition's lease set) and the delta-log head in one
atomic step: a reader never sees a state with the deadline of another incarnation of
the entity (docs/semantics.md, "Leases"). The calls of one read go in one pipeline:
one round trip, whatever the number of partitions; on a Redis Cluster each goes to
its partition's master (every key of a call carries the partition's hash tag). While a
partition's slot moves (resharding) its calls are refused: they are sent again after
a back-off until it has moved, for the store's reply timeout at most
(hub/store/moving.py).
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any, cast

from redis import exceptions as redis_errors

from ..errors import LogUnavailable
from .batches import SnapshotPage
from .connection import REDIS_FAILURES
from .decode import decode_snapshot
from .moving import Backoff, slot_moving

if TYPE_CHECKING:
    from collections.abc import Sequence

    import redis.asyncio as aioredis

    from ..core.model import Entity
    from .keys import Keys

__all__ = ["IDS_PER_CALL", "SNAPSHOT_SOURCE", "EntityReader"]

SNAPSHOT_SOURCE = resources.files(__package__).joinpath("snapshot.lua").read_text()

#: Ids read per script call: Redis runs a script alone, so a long one would hold up
#: every other client (a listing page may ask for 10,000).
IDS_PER_CALL = 500

#: One script call: its KEYS and ARGV.
_Call = tuple[list[str], list[Any]]


class EntityReader:
    """Entity reads of one store (its command client and keys).

    Args:
        client: the command client (a Redis Cluster client on a cluster).
        keys: the key names.
        sha: snapshot.lua's SHA1, already loaded.
        timeout: seconds a read waits for a moving slot, at most.
    """

    def __init__(self, client: aioredis.Redis, keys: Keys, sha: str, timeout: float) -> None:
        self.client = client
        self.keys = keys
        self.sha = sha
        self.timeout = timeout

    def _call(self, p: int, mode: list[Any]) -> _Call:
        keys = self.keys
        return [keys.ids(p), keys.delta_log(p), keys.leases(p)], [keys.entity(p, ""), *mode]

    async def get_many(self, entity_ids: Sequence[str]) -> list[Entity]:
        """The live entities among ``entity_ids``, in the order given."""
        if not entity_ids:
            return []
        groups: dict[int, list[str]] = {}
        for entity_id in entity_ids:
            groups.setdefault(self.keys.partition_of(entity_id), []).append(entity_id)
        calls = [
            self._call(p, ["ids", *ids[start : start + IDS_PER_CALL]])
            for p, ids in groups.items()
            for start in range(0, len(ids), IDS_PER_CALL)
        ]
        found: dict[str, Entity] = {}
        for reply in await self._run(calls):
            for entity in decode_snapshot(reply)[0]:
                found[entity.id] = entity
        return [found[i] for i in entity_ids if i in found]

    async def page_range(self, p: int, prefix: str, after: str | None, limit: int) -> SnapshotPage:
        """See :meth:`hub.store.Store.snapshot_range`."""
        low = "[" + prefix if after is None or after < prefix else "(" + after
        high = b"[" + prefix.encode() + b"\xff"
        (reply,) = await self._run([self._call(p, ["range", low, high, limit])])
        head, count = reply[0].decode(), int(reply[1])
        entities, last = decode_snapshot(reply)
        return SnapshotPage(entities, head, last if count >= limit else None)

    async def page_ids(self, p: int, entity_ids: Sequence[str]) -> SnapshotPage:
        """See :meth:`hub.store.Store.snapshot_ids`."""
        (reply,) = await self._run([self._call(p, ["ids", *entity_ids])])
        entities, _ = decode_snapshot(reply)
        return SnapshotPage(entities, reply[0].decode())

    async def _run(self, calls: list[_Call]) -> list[list[Any]]:
        """The replies of ``calls``, sent in one pipeline; the script is loaded again
        (once) where Redis lost it (a restart, a promoted replica of Redis 7), and the
        calls a moving slot refused are sent again (:class:`Backoff`)."""
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        reloaded = False
        backoff: Backoff | None = None
        while True:
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for i in todo:
                        keys, args = calls[i]
                        pipe.evalsha(self.sha, len(keys), *keys, *args)
                    got = await pipe.execute(raise_on_error=False)
            except REDIS_FAILURES as exc:
                raise LogUnavailable(f"Redis failed while reading entities: {exc}") from exc
            for i, reply in zip(todo, got, strict=True):
                replies[i] = reply
            todo = [i for i in todo if isinstance(replies[i], Exception)]
            if not todo:
                return [list(cast("list[Any]", r)) for r in replies]
            failed = [replies[i] for i in todo]
            if not reloaded and any(isinstance(r, redis_errors.NoScriptError) for r in failed):
                reloaded = True
                try:
                    self.sha = await self.client.script_load(SNAPSHOT_SOURCE)
                except REDIS_FAILURES as exc:
                    raise LogUnavailable(f"Redis failed while loading a script: {exc}") from exc
                continue
            if not all(slot_moving(r) for r in failed):
                raise LogUnavailable(f"Redis failed while reading entities: {failed[0]}")
            backoff = backoff or Backoff(self.timeout)
            await backoff.wait(failed[0])
