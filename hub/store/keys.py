"""Every Redis key the hub uses, in one place.

Layout (prefix ``flux``, partition ``p``)::

    flux:{p}:events       STREAM  event log: field ``e`` = the stored event JSON
    flux:{p}:deltas       STREAM  delta log: one entry per applied event (see below)
    flux:{p}:ids          ZSET    live entity ids, score 0: lexicographic index
    flux:{p}:stats        HASH    ``events``: events accepted, all time;
                                  ``deltas``: sequence number of the last delta
    flux:{p}:e:<id>       HASH    entity: ``.<name>`` -> canonical JSON value,
                                  ``#v`` version, ``#t`` lastUpdated (ms),
                                  ``#d`` present when deleted (tombstone)
    flux:{p}:h:<id>       LIST    event-log ids of the entity's events, newest first
    flux:{p}:x:<eventId>  STRING  a client eventId already applied, with its result
    flux:config           HASH    runtime settings changed by PUT /api/admin/config

Every key one reduce-script call touches carries the partition's hash tag ``{p}``, so a
partition lives in one Redis Cluster slot; the number of partitions is a setting, and
raising it later changes no key format (entities are placed by CRC32 of their id).

Delta-log entry fields: ``i`` entity id, ``b`` base version, ``v`` new version, ``t``
lastUpdated (ms), ``s`` source, ``n`` sequence number (1, 2, 3 ... per partition: a
jump tells a reader that trimming overtook it); then ``d`` = ``1`` for a deletion, or for an update
``c`` = ``1`` if it created the entity, and for each property the event carried
``=<name>`` (value changed) or ``~<name>`` (same value) -> JSON value.
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

    def entity(self, p: int, entity_id: str) -> str:
        return self._tags[p] + "e:" + entity_id

    def history(self, p: int, entity_id: str) -> str:
        return self._tags[p] + "h:" + entity_id

    def dedup(self, p: int, event_id: str) -> str:
        return self._tags[p] + "x:" + event_id

    def runtime_config(self) -> str:
        # Not partitioned: read whole by every hub, never inside a reduce call.
        return self.prefix + ":config"
