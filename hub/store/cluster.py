"""Redis Cluster: the store's connections routed to the master that owns each slot.

When ``--redis`` points at a cluster node (``INFO cluster`` says ``cluster_enabled:1``),
:class:`~hub.store.store.Store` swaps its command pool for redis-py's
:class:`~redis.asyncio.cluster.RedisCluster` (which routes each command and pipeline
by key slot, follows ``MOVED``/``ASK`` and refreshes its slot map after a failover),
and keeps the two fast paths of one Redis, per master:

- :class:`ClusterChannels`: the reduce script's calls pipelined on one
  :class:`~hub.store.ordered.ScriptChannel` per master. Every key of one call carries
  the partition's hash tag, so a call goes whole to the master of that slot; calls of
  one partition keep their order (one connection, in order); across partitions there
  is no order (docs/semantics.md). While a slot moves (resharding), its calls are
  held and sent again in order once it has moved (hub/store/moving.py).
- :func:`tail_connection`: a bare connection per partition to its master for the
  blocking delta-log reads.

The other modules' scripts run through :class:`FluxCluster`, whose scripts are loaded
on every master before they are queued in a pipeline (redis-py's cluster pipeline
does not load them, as one Redis's does).

After a failure (a lost connection, ``MOVED`` after a failover or a resharding,
``CLUSTERDOWN`` while a replica takes over) the slot map is read again
(:func:`refresh`) and the next call goes to whichever master owns the slot then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, NoReturn

from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.cluster import PRIMARY
from redis.commands.core import AsyncScript

from ..errors import LogUnavailable
from .connection import packing_class
from .keys import Keys
from .moving import Backoff, MovingSlots, slot_moving
from .ordered import ScriptCall, ScriptChannel

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import redis.asyncio as aioredis
    from redis.asyncio.connection import AbstractConnection
    from redis.typing import EncodableT, ScriptTextT

__all__ = [
    "ClusterChannels",
    "FluxCluster",
    "check_spread",
    "cluster_enabled",
    "forget",
    "make_cluster_client",
    "refresh",
    "tail_connection",
]

logger = logging.getLogger("hub.store")

#: Seconds between two reads of the slot map that failures ask for (a burst of
#: failed calls during a failover reads it once).
REFRESH_INTERVAL = 0.25

_last_refresh: dict[int, float] = {}
_refresh_locks: dict[int, asyncio.Lock] = {}


async def cluster_enabled(client: aioredis.Redis) -> bool:
    """Whether the server ``client`` talks to is a Redis Cluster node."""
    info = await client.info("cluster")
    return bool(int(info.get("cluster_enabled", 0) or 0))


#: The command pool's connections to each node.
MAX_CONNECTIONS_PER_NODE = 256

#: Seconds after which a script queued in a cluster pipeline is loaded again.
SCRIPT_RELOAD = 5.0


class _ClusterScript(AsyncScript):
    """A script of the cluster client. One Redis's pipelines load the scripts queued
    in them; a cluster pipeline does not (a call would fail with ``NOSCRIPT``). So
    before a call is queued in a pipeline, the script is loaded on every master — again
    after ``SCRIPT_RELOAD`` s, for a master promoted since (Redis 7 does not replicate
    scripts). A call made outside a pipeline loads it on ``NOSCRIPT`` by itself."""

    _loaded_at = -SCRIPT_RELOAD

    async def __call__(
        self,
        keys: Sequence[Any] | None = None,
        args: Iterable[Any] | None = None,
        client: Any = None,
    ) -> Any:
        if client is not None and client is not self.registered_client:
            now = time.monotonic()
            if now - self._loaded_at >= SCRIPT_RELOAD:
                await self.registered_client.script_load(self.script)
                self._loaded_at = now
        return await super().__call__(keys, args, client)


class FluxCluster(RedisCluster):
    """redis-py's cluster client, with scripts that work in its pipelines, ``ASK``
    followed to a master that serves no slot yet, and commands refused while their
    slot moves tried again until it has moved."""

    #: Seconds a command waits for a moving slot (the store's reply timeout).
    moving_timeout = 30.0

    def register_script(self, script: ScriptTextT) -> AsyncScript:  # type: ignore[override]  # typed as the sync Script
        return _ClusterScript(self, script)

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        """As redis-py's; while the keys' slot moves, after a back-off, again.

        redis-py follows ``ASK`` (sending ``ASKING``) and ``TRYAGAIN`` a few times
        (16 redirections), which a single-key command needs; a command naming several
        keys of a slot being migrated is refused until the slot has moved, and redis-py
        gives up (``TTL exhausted``) in ~0.1 s. (Its pipelines send such commands
        again through here.) Past ``moving_timeout`` the last refusal is raised.
        """
        backoff: Backoff | None = None
        while True:
            try:
                return await super().execute_command(*args, **kwargs)
            except (redis_errors.ResponseError, redis_errors.ClusterError) as exc:
                if not slot_moving(exc):
                    raise
                backoff = backoff or Backoff(self.moving_timeout)
                if not await backoff.pause():
                    raise

    def get_node(
        self, host: str | None = None, port: int | None = None, node_name: str | None = None
    ) -> ClusterNode | None:
        node = super().get_node(host, port, node_name)
        if node is None and host and port:
            # An ASK names the master a slot moves to. A master just added serves no
            # slot until its first slot has moved, so CLUSTER SLOTS does not list it
            # and redis-py does not know it: it failed the command with an
            # AttributeError (redis/redis-py#4015), which stopped the hub's loops.
            manager = self.nodes_manager
            node = ClusterNode(host, port, PRIMARY, **manager.connection_kwargs)
            manager.set_nodes(manager.nodes_cache, {node.name: node})
        return node


def make_cluster_client(url: str, *, socket_timeout: float | None) -> RedisCluster:
    """A cluster client seeded by the node at ``url`` (it discovers the others)."""
    client = FluxCluster.from_url(
        url,
        decode_responses=False,
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(5.0, socket_timeout or 5.0),
        # Enough retries (each after a slot-map refresh), backing off up to 0.5 s, to
        # outlast a failover of a few seconds (cluster-node-timeout plus the election).
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 12),
        # Per node. Past it redis-py fails a command at once (no waiting, unlike one
        # Redis's blocking pool): above one Redis's 64, for bursts of reads.
        max_connections=MAX_CONNECTIONS_PER_NODE,
        health_check_interval=0,
    )
    assert isinstance(client, FluxCluster)
    client.moving_timeout = socket_timeout or FluxCluster.moving_timeout
    return client


def check_spread(cluster: RedisCluster, keys: Keys) -> None:
    """Log a warning when the partitions do not reach every master: the state would
    not spread (docs/scaling.md, "Redis Cluster": 16 partitions or more)."""
    masters = {node.name for node in cluster.get_primaries()}
    used = {_master(cluster, keys.delta_log(p)).name for p in range(keys.partitions)}
    if used != masters:
        logger.warning(
            "Redis Cluster of %d masters, but FLUX_PARTITIONS=%d puts the state on %d of "
            "them: set FLUX_PARTITIONS to 16 or more before the first event "
            "(docs/scaling.md, 'Redis Cluster')",
            len(masters),
            keys.partitions,
            len(used & masters),
        )


async def refresh(cluster: RedisCluster, *, force: bool = False) -> None:
    """Read the slot map again (at most every ``REFRESH_INTERVAL`` s unless ``force``).

    A failure is not raised: the map stays as it was, and the next call that fails
    asks again.
    """
    key = id(cluster)
    lock = _refresh_locks.setdefault(key, asyncio.Lock())
    async with lock:
        now = time.monotonic()
        if not force and now - _last_refresh.get(key, 0.0) < REFRESH_INTERVAL:
            return
        _last_refresh[key] = now
        try:
            await cluster.nodes_manager.initialize()
        except Exception:  # any: the next failure asks again
            return


def forget(cluster: RedisCluster) -> None:
    """Drop what :func:`refresh` kept for a closed client."""
    _last_refresh.pop(id(cluster), None)
    _refresh_locks.pop(id(cluster), None)


def _master(cluster: RedisCluster, key: str) -> ClusterNode:
    node = cluster.get_node_from_key(key)
    if node is None:
        raise LogUnavailable(f"no Redis Cluster master serves the slot of {key!r} now")
    return node


def node_connection(node: ClusterNode, name: str) -> AbstractConnection:
    """A connection of its own to ``node`` (hiredis packing, no socket timeout),
    named ``name`` in ``CLIENT LIST``; it connects when first used."""
    kwargs: dict[str, Any] = {
        **node.connection_kwargs,
        "host": node.host,
        "port": node.port,
        "socket_timeout": None,
        "client_name": name,
    }
    connection: AbstractConnection = packing_class(node.connection_class)(**kwargs)
    return connection


def tail_connection(cluster: RedisCluster, key: str, name: str) -> AbstractConnection:
    """A connection to the master that owns ``key`` now, for blocking reads of it."""
    return node_connection(_master(cluster, key), name)


class ClusterChannels:
    """The reduce script's calls, pipelined on one :class:`ScriptChannel` per master.

    The same ``send``/``reply`` as one channel: :class:`~hub.store.apply.PendingApply`
    does not know which it has. Calls refused because their slot is moving are held
    and sent again (:class:`~hub.store.moving.MovingSlots`); :meth:`answer` does not
    wait for those.
    """

    def __init__(
        self,
        cluster: RedisCluster,
        source: str,
        sha: str,
        read_timeout: float,
        name: str,
        wait: tuple[int, int] | None = None,
    ) -> None:
        self._cluster = cluster
        self._source = source
        self.sha = sha
        self.read_timeout = read_timeout
        self._name = name
        self._wait = wait
        self._channels: dict[str, ScriptChannel] = {}
        self.moving = MovingSlots(cluster, self._channel, read_timeout)
        #: Slot -> the key of that slot no call writes (``Keys.unwritten``).
        self._unwritten: dict[int, str] = {}

    def _channel(self, node: ClusterNode) -> ScriptChannel:
        channel = self._channels.get(node.name)
        if channel is None:
            connection = node_connection(node, self._name)
            channel = ScriptChannel(
                connection, self._source, self.sha, self.read_timeout, self._wait
            )
            channel.redirected = self.moving.refused
            self._channels[node.name] = channel
        return channel

    async def open(self) -> None:
        """Connect to every master and load the script there."""
        for node in self._cluster.get_primaries():
            await self._channel(node).open()

    async def send(self, keys: list[str], args: list[Any]) -> ScriptCall:
        """Write one call to the master of ``keys[0]``'s slot (all keys share it), or
        hold it behind the slot's calls while the slot moves.

        A connection that cannot be made (the master is down) reads the slot map
        again and tries once more, on the new master if a replica took over.

        Raises:
            LogUnavailable: no master of the slot could be written to.
        """
        slot = self._cluster.keyslot(keys[0])
        unwritten = self._unwritten.get(slot)
        if unwritten is None:
            unwritten = self._unwritten[slot] = Keys.unwritten_beside(keys[0])
        # (The caller's list, made for this call.)
        keys.append(unwritten)
        moving = self.moving
        for attempt in (1, 2):
            channel = self._channel(_owner(self._cluster, slot))
            last = moving.last.get(slot)
            if last is not None and last.via is not channel and not last.done.is_set():
                # The slot has another master in the map: its calls written to the
                # one before are heard first (refused, the slot is held).
                if last.via is not None:
                    await last.via.hear(last)
            if moving.slots and slot in moving.slots:
                call = channel.prepare(keys, args)
                call.slot = slot
                return moving.hold(call)
            try:
                call = await channel.send(keys, args)
            except LogUnavailable:
                await self._drop(channel, "a Redis Cluster master failed")
                await refresh(self._cluster, force=attempt == 1)
                if attempt == 2:
                    raise
                continue
            call.slot = slot
            moving.last[slot] = call
            return call
        raise AssertionError("unreachable")  # pragma: no cover

    async def reply(self, call: ScriptCall) -> list[bytes]:
        """The reply of ``call``; a failure reads the slot map again for the next.

        Raises:
            LogUnavailable: Redis failed or refused it, or its slot was still moving
                after ``read_timeout`` s.
        """
        while not call.done.is_set():
            if call.via is None:
                await self.moving.drive()
            else:
                await call.via.hear(call)
        if call.error is not None:
            await self._failed(call.error)
        return list(call.reply)

    async def answer(self, call: ScriptCall) -> list[bytes] | None:
        """As :meth:`reply`, but None at once while its moving slot holds ``call``."""
        while not call.done.is_set():
            if call.via is None:
                return None
            await call.via.hear(call)
        if call.error is not None:
            await self._failed(call.error)
        return list(call.reply)

    async def _failed(self, error: BaseException) -> NoReturn:
        if isinstance(error, LogUnavailable):
            await refresh(self._cluster)
        raise error

    async def _drop(self, channel: ScriptChannel, reason: str) -> None:
        for name, known in list(self._channels.items()):
            if known is channel:
                del self._channels[name]
                await channel.aclose(reason)

    async def aclose(self) -> None:
        self.moving.close(LogUnavailable("the hub is shutting down"))
        for channel in list(self._channels.values()):
            await self._drop(channel, "the hub is shutting down")


def _owner(cluster: RedisCluster, slot: int) -> ClusterNode:
    owners = cluster.nodes_manager.slots_cache.get(slot)
    if not owners:
        raise LogUnavailable(f"no Redis Cluster master serves slot {slot} now")
    return owners[0]
