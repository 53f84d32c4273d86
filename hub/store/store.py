"""The storage seam: everything the hub asks of Redis goes through :class:`Store`.

One reduce-script call applies a batch of events atomically per partition (event-log
append, entity merge, index, delta-log append, de-duplication): when :meth:`Store.apply`
returns, every hub process serves the new state (read-your-writes).

Connections: one pool for commands, and one dedicated connection per partition for
the blocking delta-log reads (:meth:`Store.read_deltas`), so a tail never waits behind
a publish or the other way round. On a Redis Cluster, the same per master
(hub/store/cluster.py).
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from ..config import DEFAULT_REPLY_TIMEOUT
from ..errors import ConfigError, LogUnavailable
from .apply import PendingApply, reduce_call
from .batches import Applied, DeltaBatch, LogHead, NamespaceTotals, SnapshotPage, Totals
from .cluster import (
    ClusterChannels,
    check_spread,
    cluster_enabled,
    forget,
    make_cluster_client,
    refresh,
    tail_connection,
)
from .connection import REDIS_FAILURES, make_client, redact, version_tuple
from .decode import SEQ, decode_delta_fields
from .moving import while_moving
from .ordered import ScriptChannel
from .snapshots import SNAPSHOT_SOURCE, EntityReader
from .tails import TAIL_NAME, Tails

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.connection import AbstractConnection

    from ..config import LogSettings
    from ..core.model import Delta, Entity
    from .batches import Submission
    from .keys import Keys

__all__ = ["MIN_REDIS_VERSION", "TAIL_NAME", "PendingApply", "Store"]

logger = logging.getLogger("hub.store")

#: XADD MINID, LPOS and GETDEL arrived in 6.2; Valkey reports a compatible version.
MIN_REDIS_VERSION = (6, 2, 0)

_REDUCE_SOURCE = resources.files(__package__).joinpath("reduce.lua").read_text()
#: Take a free lease on a singleton task, or renew one we hold.
_LEASE = resources.files(__package__).joinpath("lease.lua").read_text()

#: Seconds to wait for the reply of a reduce-script call before giving up on Redis
#: (``FLUX_REDIS_REPLY_TIMEOUT`` sets it for ``flux serve``).
REPLY_TIMEOUT = DEFAULT_REPLY_TIMEOUT
#: The reduce-script connection's name in ``CLIENT LIST``.
CHANNEL_NAME = "flux-hub:reduce"


class Store:
    """Async access to the hub's state in Redis.

    Build it with :meth:`connect`; close it with :meth:`aclose` (or ``async with``).
    """

    def __init__(
        self,
        url: str,
        keys: Keys,
        log: LogSettings,
        *,
        reply_timeout: float = REPLY_TIMEOUT,
        wait: tuple[int, int] | None = None,
    ) -> None:
        self.url = url
        self.keys = keys
        self.log = log
        #: ``(replicas, timeout_ms)``: WAIT after each reduce call before its result.
        self.wait = wait
        #: Seconds to wait for any reply but a blocking read's before failing the call.
        self.reply_timeout = reply_timeout
        self._client: aioredis.Redis = make_client(
            url, max_connections=64, socket_timeout=reply_timeout
        )
        #: The same client as ``_client`` when ``url`` is a Redis Cluster node.
        self._cluster: RedisCluster | None = None
        #: The delta-log reads (XREAD BLOCK), on connections of their own.
        self._tails = Tails(keys, self._dedicated_connection, self._tail_failed)
        self._sha = ""
        #: Entity reads (snapshot.lua), once connected.
        self._reader: EntityReader | None = None
        self._lease = self._client.register_script(_LEASE)
        # The reduce script's calls: pipelined on a connection of their own.
        self._channel: ScriptChannel | ClusterChannels | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        keys: Keys,
        log: LogSettings,
        *,
        reply_timeout: float = REPLY_TIMEOUT,
        wait: tuple[int, int] | None = None,
    ) -> Store:
        """Connect, check the server's version and load the reduce script.

        ``reply_timeout`` bounds the wait for a reply (the fault tests shorten it);
        ``wait`` is ``(replicas, timeout_ms)`` for a WAIT after each reduce call.

        Raises:
            LogUnavailable: Redis does not answer.
            ConfigError: the server is older than Redis 6.2.
        """
        store = cls(url, keys, log, reply_timeout=reply_timeout, wait=wait)
        try:
            await store._start()
        except BaseException:
            await store.aclose()
            raise
        return store

    async def _start(self) -> None:
        try:
            info = await self._client.info("server")
            version = str(info.get("redis_version", "0"))
            if version_tuple(version) < MIN_REDIS_VERSION:
                raise ConfigError(
                    f"Redis {version} at {redact(self.url)} is too old: the hub needs 6.2 or newer"
                )
            if await cluster_enabled(self._client):
                await self._client.aclose(close_connection_pool=True)
                self._cluster = make_cluster_client(self.url, socket_timeout=self.reply_timeout)
                # (It offers the commands the other modules use, routed by key slot.)
                self._client = cast("aioredis.Redis", self._cluster)
                await self._cluster.initialize()
                check_spread(self._cluster, self.keys)
                self._lease = self._client.register_script(_LEASE)
            self._sha = await self._client.script_load(_REDUCE_SOURCE)
            snapshot_sha = await self._client.script_load(SNAPSHOT_SOURCE)
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"cannot reach Redis at {redact(self.url)}: {exc}") from exc
        self._reader = EntityReader(self._client, self.keys, snapshot_sha, self.reply_timeout)
        # No socket timeout on writes (redis-py would start a task per write for it);
        # replies have the channel's own.
        script = (_REDUCE_SOURCE, self._sha, self.reply_timeout)
        if self._cluster is not None:  # one channel per master
            self._channel = ClusterChannels(self._cluster, *script, CHANNEL_NAME, self.wait)
        else:
            connection = self._dedicated_connection(CHANNEL_NAME)
            self._channel = ScriptChannel(connection, *script, self.wait)
        await self._channel.open()

    def _dedicated_connection(self, name: str, key: str = "") -> AbstractConnection:
        """A connection of its own (not from the pool), without a socket timeout, named
        ``name`` in ``CLIENT LIST``; it connects when first used. On a cluster: to the
        master that owns ``key`` now."""
        if self._cluster is not None:
            return tail_connection(self._cluster, key, name)
        pool = self._client.connection_pool
        return pool.connection_class(
            **{**pool.connection_kwargs, "socket_timeout": None, "client_name": name}
        )

    @property
    def cluster(self) -> bool:
        """Whether the store is on a Redis Cluster."""
        return self._cluster is not None

    @property
    def client(self) -> aioredis.Redis:
        """The command connection pool, for the other modules of this package only."""
        return self._client

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection."""
        await self._tails.aclose()
        if self._channel is not None:
            await self._channel.aclose()
        if self._cluster is not None:
            forget(self._cluster)
            await self._cluster.aclose()
        else:
            await self._client.aclose(close_connection_pool=True)

    # ------------------------------------------------------------------ writes

    async def apply(self, items: Sequence[Submission], now_ms: int) -> list[Applied]:
        """Apply events in order; :meth:`send_apply`, then its result.

        Raises:
            LogUnavailable: Redis failed; nothing of a failed partition call was applied,
                unless the failure came after Redis ran it (a lost reply).
        """
        return await (await self.send_apply(items, now_ms)).result()

    async def send_apply(self, items: Sequence[Submission], now_ms: int) -> PendingApply:
        """Send events to be applied, one script call per partition touched, and return
        without waiting for Redis: calls are applied in the order they were sent
        (events of one partition in the order given; no order across partitions).

        Raises:
            LogUnavailable: Redis could not be written to: nothing was applied, except
                (with several partitions) the calls of partitions sent before.
        """
        assert self._channel is not None, "Store.connect() first"
        groups: dict[int, list[int]] = {}
        for index, item in enumerate(items):
            p = self.keys.partition_of(item.change.entity_id)
            groups.setdefault(p, []).append(index)
        calls = []
        for p, indexes in groups.items():
            keys, args = reduce_call(self.keys, self.log, p, [items[i] for i in indexes], now_ms)
            calls.append((p, indexes, await self._channel.send(keys, args)))
        return PendingApply(self._channel, len(items), calls)

    # ------------------------------------------------------------------ reads

    @property
    def _reads(self) -> EntityReader:
        assert self._reader is not None, "Store.connect() first"
        return self._reader

    async def get(self, entity_id: str) -> Entity | None:
        """The current state of one entity (with its lease's deadline), or None."""
        found = await self._reads.get_many([entity_id])
        return found[0] if found else None

    async def list_ids(self, prefix: str, limit: int, after: str | None = None) -> list[str]:
        """Entity ids starting with ``prefix``, in byte order, after ``after``."""
        low = "[" + prefix
        if after is not None and after >= prefix:
            low = "(" + after
        high = b"[" + prefix.encode() + b"\xff"
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for p in range(self.keys.partitions):
                    pipe.zrangebylex(self.keys.ids(p), low, high, start=0, num=limit)
                pages = await pipe.execute()
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while listing: {exc}") from exc
        ids = sorted(i for page in pages for i in page)[:limit]
        return [i.decode() for i in ids]

    async def count_ids(self, prefix: str) -> int:
        """How many live entity ids start with ``prefix``."""
        high = b"[" + prefix.encode() + b"\xff"
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for p in range(self.keys.partitions):
                    pipe.zlexcount(self.keys.ids(p), "[" + prefix, high)
                counts = await pipe.execute()
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while counting: {exc}") from exc
        return sum(int(c) for c in counts)

    async def get_many(self, entity_ids: Sequence[str]) -> list[Entity]:
        """The live entities among ``entity_ids`` (with their leases' deadlines, read
        atomically with each state), in the order given; one round trip."""
        return await self._reads.get_many(entity_ids)

    async def history(self, entity_id: str, since_ms: int, limit: int) -> list[bytes]:
        """The newest ``limit`` stored events of an entity, newest first.

        Only events the event log still holds and that were stored at or after
        ``since_ms`` are returned.
        """
        p = self.keys.partition_of(entity_id)
        try:
            ids = cast(
                "list[bytes]", await self._client.lrange(self.keys.history(p, entity_id), 0, -1)
            )
            wanted = [i for i in ids if int(i.split(b"-", 1)[0]) >= since_ms][:limit]
            if not wanted:
                return []
            async with self._client.pipeline(transaction=False) as pipe:
                for i in wanted:
                    pipe.xrange(self.keys.event_log(p), i, i)
                replies = await pipe.execute()
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading history: {exc}") from exc
        return [entries[0][1][b"e"] for entries in replies if entries]

    async def read_deltas(
        self, p: int, after: str, count: int, block_ms: int | None
    ) -> list[Delta]:
        """Delta-log entries of partition ``p`` after position ``after``.

        Blocks up to ``block_ms`` when there are none (None: do not block). Uses the
        partition's dedicated connection: call it from one task per partition.
        """
        return (await self.read_entries(p, after, count, block_ms)).deltas()

    async def read_entries(
        self, p: int, after: str, count: int, block_ms: int | None
    ) -> DeltaBatch:
        """Like :meth:`read_deltas`, undecoded: the fan-out decodes only when someone
        listens (:meth:`DeltaBatch.deltas`)."""
        return await self._tails.read(p, after, count, block_ms)

    async def _tail_failed(self, exc: BaseException) -> bool:
        """After a failed delta-log read: keep its connection, unless on a cluster
        (where the slot map is read again, or set as a ``MOVED`` says)."""
        if self._cluster is None:
            return True
        if isinstance(exc, redis_errors.MovedError):
            await self._cluster.nodes_manager.move_slot(exc)
        else:
            await refresh(self._cluster)
        return False

    async def snapshot_range(
        self, p: int, prefix: str, after: str | None, limit: int
    ) -> SnapshotPage:
        """One snapshot page of partition ``p``: live entities whose id starts with
        ``prefix``, after ``after``, read atomically with the delta-log head (and
        their leases' deadlines); its ``last`` is None when the range is exhausted."""
        return await self._reads.page_range(p, prefix, after, limit)

    async def snapshot_ids(self, p: int, entity_ids: Sequence[str]) -> SnapshotPage:
        """The live entities among ``entity_ids`` (all of partition ``p``), read
        atomically with the delta-log head (and their leases' deadlines)."""
        return await self._reads.page_ids(p, entity_ids)

    async def read_range(self, p: int, after: str, count: int) -> list[Delta]:
        """Up to ``count`` deltas of partition ``p`` after position ``after`` (catch-up)."""
        try:
            entries = cast(
                "list[tuple[bytes, dict[bytes, bytes]]]",
                await self._client.xrange(self.keys.delta_log(p), "(" + after, "+", count=count),
            )
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading the delta log: {exc}") from exc
        return [decode_delta_fields(pos, fields) for pos, fields in entries]

    async def has_delta(self, p: int, position: str) -> bool:
        """Whether the delta log of ``p`` still holds the entry at ``position``.

        Streams are trimmed from the oldest end: if the entry a client last saw is
        still there, nothing after it was trimmed.
        """
        log = self.keys.delta_log(p)
        try:
            if position == "0-0":
                # Before the first delta: reachable if nothing was ever trimmed, that
                # is, if the oldest delta left is still number 1.
                oldest, last = await self._end_and_seq(p, newest=False)
                if not oldest:
                    return not last
                return int(oldest[0][1].get(SEQ, b"0")) == 1
            entries = await self._client.xrange(log, position, position, count=1)
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading the delta log: {exc}") from exc
        except redis_errors.ResponseError:
            return False  # not a valid stream id
        return bool(entries)

    async def delta_log_head(self, p: int) -> LogHead:
        """Position and sequence number of the newest delta of partition ``p``."""
        try:
            newest, seq = await self._end_and_seq(p, newest=True)
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading the delta log: {exc}") from exc
        if newest:
            return LogHead(newest[0][0].decode(), int(newest[0][1].get(SEQ, b"0")))
        # An empty log that had deltas was trimmed whole (by age): its last sequence
        # number is still the reference point.
        return LogHead("0-0", int(seq or 0))

    async def _end_and_seq(self, p: int, *, newest: bool) -> list[Any]:
        """The newest (or oldest) delta of ``p`` and its last sequence number, read
        together (MULTI); on a cluster, again while the partition's slot moves."""

        async def read() -> list[Any]:
            async with self._client.pipeline(transaction=True) as pipe:
                if newest:
                    pipe.xrevrange(self.keys.delta_log(p), count=1)
                else:
                    pipe.xrange(self.keys.delta_log(p), count=1)
                pipe.hget(self.keys.stats(p), "deltas")
                return list(await pipe.execute())

        if self._cluster is None:
            return await read()
        return await while_moving(read, self.reply_timeout)

    async def counts(self) -> Totals:
        """Live entities and events accepted all time, over every partition."""
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for p in range(self.keys.partitions):
                    pipe.zcard(self.keys.ids(p))
                    pipe.hget(self.keys.stats(p), "events")
                replies = await pipe.execute()
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while counting: {exc}") from exc
        entities = sum(int(r) for r in replies[0::2])
        events = sum(int(r or 0) for r in replies[1::2])
        return Totals(entities, events)

    async def ready(self) -> bool:
        """True when Redis answers and the reduce script is loaded (on a cluster: it
        is loaded on every master now, as a promoted replica of Redis 7 lacks it)."""
        try:
            if self._cluster is not None:
                return bool(await self._client.script_load(_REDUCE_SOURCE) == self._sha)
            return bool((await self._client.script_exists(self._sha))[0])
        except (*REDIS_FAILURES, redis_errors.ResponseError):
            return False

    async def namespace_stats(self) -> dict[str, NamespaceTotals]:
        """Per namespace ("" for ids without one): its live entities and last update."""
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for p in range(self.keys.partitions):
                    pipe.hgetall(self.keys.namespace_stats(p))
                replies = await pipe.execute()
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading namespace stats: {exc}") from exc
        counts: dict[str, int] = {}
        last: dict[str, int] = {}
        for fields in replies:
            for key, value in fields.items():
                name = key.decode()
                if name.endswith("@"):
                    ns = name[:-1]
                    last[ns] = max(last.get(ns, 0), int(value))
                else:
                    counts[name] = counts.get(name, 0) + int(value)
        return {
            ns: NamespaceTotals(counts.get(ns, 0), last.get(ns, 0))
            for ns in counts.keys() | last.keys()
        }

    async def lease(self, name: str, holder: str, ttl_ms: int) -> bool:
        """Take or renew a lease on a singleton task; True while ``holder`` has it.

        A holder that stops renewing loses it after ``ttl_ms``, and another hub's
        next call takes it over.
        """
        try:
            return bool(await self._lease(keys=[self.keys.lease(name)], args=[holder, ttl_ms]))
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while taking a lease: {exc}") from exc

    # ------------------------------------------------------------------ runtime config

    async def read_runtime_config(self) -> dict[str, str]:
        """The runtime settings changed through the admin API (field -> text)."""
        try:
            raw = cast("dict[bytes, bytes]", await self._client.hgetall(self.keys.runtime_config()))
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading the config: {exc}") from exc
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def write_runtime_config(self, values: Mapping[str, str]) -> None:
        """Record runtime settings for every hub (they survive restarts)."""
        if not values:
            return
        try:
            await self._client.hset(self.keys.runtime_config(), mapping=dict(values))  # type: ignore[arg-type]
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while saving the config: {exc}") from exc
