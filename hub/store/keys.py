"""Every Redis key the hub uses, in one place.

Layout (prefix ``flux``, partition ``p``)::

    flux:{p}:events       STREAM  event log: field ``e`` = the stored event JSON
    flux:{p}:deltas       STREAM  delta log: one entry per applied event (see below)
    flux:{p}:ids          ZSET    live entity ids, score 0: lexicographic index
    flux:{p}:stats        HASH    ``events``: events accepted, all time;
                                  ``deltas``: sequence number of the last delta
    flux:{p}:nsstats      HASH    per namespace (text before the first ``/``; "" for
                                  ids without one): ``<ns>`` live entities,
                                  ``<ns>@`` last update (ms)
    flux:{p}:leases       ZSET    entity leases (docs/semantics.md, "Leases"): member
                                  entity id, score its deadline (ms, Redis's clock)
    flux:lease:<name>     STRING  a hub's lease on a singleton task (value: hub id)
    flux:{p}:e:<id>       HASH    entity: ``.<name>`` -> canonical JSON value,
                                  ``#v`` version, ``#t`` lastUpdated (ms),
                                  ``#d`` present when deleted (tombstone)
    flux:{p}:h:<id>       LIST    event-log ids of the entity's events, newest first
    flux:{p}:x:<eventId>  STRING  a client eventId already applied, with its result
    flux:{p}:unwritten    (none)  never written: named by every reduce call on a
                                  Redis Cluster, so that none runs while the slot moves
    flux:config           HASH    runtime settings changed by PUT /api/admin/config
    flux:{ns}:n:<name>    HASH    registered namespace: ``id``, ``token`` (SHA-256 hex of
                                  the token, never the token), ``created`` (ms)
    flux:{ns}:tokens      HASH    token hash -> namespace name (hashes only as fields:
                                  no token nor hash ever appears in a key name)
    flux:{ns}:all         ZSET    registered namespace names (score: creation ms)
    flux:{ns}:version     STRING  bumped when a namespace is deleted (hubs drop caches)
    flux:{ns}:deleted     SET     names deleted and not registered since (purged on reuse)
    flux:rl:<namespace>   HASH    rate-limit bucket: ``tokens``, ``ms`` (expires 61 s)

Every key one reduce-script call touches carries the partition's hash tag ``{p}``, so a
partition lives in one Redis Cluster slot; the number of partitions is a setting, and
raising it later changes no key format (entities are placed by CRC32 of their id).

Delta-log entry fields: ``i`` entity id, ``b`` base version, ``v`` new version, ``t``
lastUpdated (ms), ``s`` source, ``n`` sequence number (1, 2, 3 ... per partition: a
jump tells a reader that trimming overtook it); then ``d`` = ``1`` for a deletion (with
``r`` = ``expired`` when a lease ran out), or for an update
``c`` = ``1`` if it created the entity, and for each property the event carried
``=<name>`` (value changed) or ``~<name>`` (same value) -> JSON value; and ``x``
when the event set or removed the entity's lease: its new deadline (ms, Redis's
clock), or ``0`` (removed). An event that changes nothing but a live entity's lease
(empty properties and a ``ttl``) has a delta of ``i b v t s n x`` alone.
"""

from __future__ import annotations

import zlib

__all__ = ["Keys"]


class Keys:
    """Key names for one key prefix and partition count."""

    def __init__(self, prefix: str = "flux", partitions: int = 1) -> None:
        if "{" in prefix or "}" in prefix:
            # The first {...} in a key is its Cluster hash tag: it must be ours.
            raise ValueError("key prefix must not contain '{' or '}'")
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.prefix = prefix
        self.partitions = partitions
        self._tags = [f"{prefix}:{{{p}}}:" for p in range(partitions)]

    def partition_of(self, entity_id: str | None) -> int:
        """The partition that holds an entity (events without one go to 0)."""
        if self.partitions == 1 or entity_id is None:
            return 0
        return zlib.crc32(entity_id.encode()) % self.partitions

    def event_log(self, p: int) -> str:
        return self._tags[p] + "events"

    def delta_log(self, p: int) -> str:
        return self._tags[p] + "deltas"

    def ids(self, p: int) -> str:
        return self._tags[p] + "ids"

    def stats(self, p: int) -> str:
        return self._tags[p] + "stats"

    def namespace_stats(self, p: int) -> str:
        return self._tags[p] + "nsstats"

    def leases(self, p: int) -> str:
        return self._tags[p] + "leases"

    def lease(self, name: str) -> str:
        return f"{self.prefix}:lease:{name}"

    def entity(self, p: int, entity_id: str) -> str:
        return self._tags[p] + "e:" + entity_id

    def history(self, p: int, entity_id: str) -> str:
        return self._tags[p] + "h:" + entity_id

    def dedup(self, p: int, event_id: str) -> str:
        return self._tags[p] + "x:" + event_id

    @staticmethod
    def unwritten_beside(key: str) -> str:
        """The key nothing writes in the partition of ``key`` (one of its keys).

        Every reduce call on a Redis Cluster names it: while the partition's slot
        migrates it exists on neither node, so *every* call is refused (``ASK``,
        ``TRYAGAIN``) instead of some running on the old master while others wait
        (hub/store/moving.py).
        """
        return key[: key.index("}") + 1] + ":unwritten"

    def runtime_config(self) -> str:
        # Not partitioned: read whole by every hub, never inside a reduce call.
        return self.prefix + ":config"

    # The namespace registry shares one hash tag so that registering is atomic.

    def namespace(self, name: str) -> str:
        return f"{self.prefix}:{{ns}}:n:{name}"

    def namespace_tokens(self) -> str:
        return f"{self.prefix}:{{ns}}:tokens"

    def namespaces(self) -> str:
        return f"{self.prefix}:{{ns}}:all"

    def deleted_namespaces(self) -> str:
        return f"{self.prefix}:{{ns}}:deleted"

    def namespaces_version(self) -> str:
        return f"{self.prefix}:{{ns}}:version"

    def rate_bucket(self, namespace: str) -> str:
        # One key per bucket, anywhere in a cluster: each rate check touches one.
        return f"{self.prefix}:rl:{namespace}"

    # ------------------------------------------------------------------ connectors
    # Layout (docs/connectors.md). Not partitioned: these keys are small, read by every
    # hub's connector scheduler and never touched by a reduce call. They share the hash
    # tag ``{connectors}``, so the scripts of hub/store/connectors.py, which touch a
    # registry and a status key together, stay in one Redis Cluster slot.
    #
    #   flux:{connectors}:credentials    HASH    ``<connector>:<user>`` -> encrypted
    #                                            credentials
    #   flux:{connectors}:pollers        HASH    ``<source_id>`` -> poller config JSON
    #                                            (its secret encrypted)
    #   flux:{connectors}:status:<job>   HASH    last_poll, next_poll, last_error, polls...
    #   flux:{connectors}:lease:<job>    STRING  the hub running the job (PX, renewed)
    #   flux:{connectors}:oauth:<state>  STRING  a pending OAuth flow (PX, single use)
    #   flux:{connectors}:taps           HASH    ``<name>`` -> Singer tap config JSON
    #                                            (its secrets encrypted)
    #   flux:{connectors}:tapstate:<name> STRING the tap's last Singer STATE (bookmark)
    #
    # <job> is ``poller:<source_id>``, or ``cred:<digest>`` for credentials (so that no
    # token hash appears in a key name).

    def connector_credentials(self) -> str:
        return self.prefix + ":{connectors}:credentials"

    def connector_pollers(self) -> str:
        return self.prefix + ":{connectors}:pollers"

    def connector_taps(self) -> str:
        return self.prefix + ":{connectors}:taps"

    def connector_tap_state(self, name: str) -> str:
        return self.prefix + ":{connectors}:tapstate:" + name

    def connector_status(self, job: str) -> str:
        return self.prefix + ":{connectors}:status:" + job

    def connector_lease(self, job: str) -> str:
        return self.prefix + ":{connectors}:lease:" + job

    def oauth_state(self, state: str) -> str:
        return self.prefix + ":{connectors}:oauth:" + state
