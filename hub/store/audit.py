"""What ``flux replay`` reads: a partition's event log in pages, whether that log still
holds every event ever accepted, and each entity's state as Redis has it.

Read-only: nothing here writes a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ..errors import LogUnavailable
from .connection import REDIS_FAILURES

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .store import Store

__all__ = ["EntityRecord", "EventLogAudit", "LogExtent", "stream_id"]


def stream_id(text: str) -> tuple[int, int]:
    """A stream entry id (``"1700000000000-3"``) as a comparable pair."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class LogExtent:
    """One partition's event log at one instant."""

    #: Entries the log holds.
    held: int
    #: Events the partition accepted, all time.
    accepted: int
    #: Id of the newest entry, None when the log is empty.
    newest: str | None

    @property
    def complete(self) -> bool:
        """Whether no accepted event was trimmed away."""
        return self.held >= self.accepted


@dataclass(frozen=True, slots=True)
class EntityRecord:
    """An entity as Redis holds it, live or deleted (a tombstone keeps its version)."""

    entity_id: str
    version: int
    deleted: bool
    #: Property name → canonical JSON value.
    properties: dict[str, bytes]
    #: Event-log id of its newest event, None if it has none.
    newest_event: str | None


class EventLogAudit:
    """Read-only access for a replay, on a connected :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self._client = store.client
        self.keys = store.keys

    async def extent(self, p: int) -> LogExtent:
        """Length, accepted count and newest id of partition ``p``'s log, together."""
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xlen(self.keys.event_log(p))
                pipe.hget(self.keys.stats(p), "events")
                pipe.xrevrange(self.keys.event_log(p), count=1)
                held, accepted, newest = await pipe.execute()
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading the event log: {exc}") from exc
        return LogExtent(int(held), int(accepted or 0), newest[0][0].decode() if newest else None)

    async def events(self, p: int, after: str, until: str, count: int) -> list[tuple[str, bytes]]:
        """Up to ``count`` entries after id ``after`` (``"-"``: from the start) and up
        to ``until``, oldest first: ``(id, stored event JSON)``."""
        start = after if after == "-" else "(" + after
        try:
            entries = cast(
                "list[tuple[bytes, dict[bytes, bytes]]]",
                await self._client.xrange(self.keys.event_log(p), start, until, count=count),
            )
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading the event log: {exc}") from exc
        return [(entry_id.decode(), fields[b"e"]) for entry_id, fields in entries]

    async def live_ids(self, p: int, after: str | None, count: int) -> list[str]:
        """Up to ``count`` ids of live entities of partition ``p``, after ``after``."""
        low = "-" if after is None else "(" + after
        try:
            ids = cast(
                "list[bytes]",
                await self._client.zrangebylex(self.keys.ids(p), low, "+", start=0, num=count),
            )
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while listing entities: {exc}") from exc
        return [i.decode() for i in ids]

    async def records(self, p: int, entity_ids: Sequence[str]) -> list[EntityRecord | None]:
        """The state of each entity (None: Redis has never heard of it)."""
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for entity_id in entity_ids:
                    pipe.hgetall(self.keys.entity(p, entity_id))
                    pipe.lindex(self.keys.history(p, entity_id), 0)
                replies = await pipe.execute()
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading entities: {exc}") from exc
        return [
            _record(entity_id, replies[2 * n], replies[2 * n + 1])
            for n, entity_id in enumerate(entity_ids)
        ]


def _record(entity_id: str, fields: dict[bytes, bytes], newest: Any) -> EntityRecord | None:
    version = fields.get(b"#v")
    if version is None:
        return None
    return EntityRecord(
        entity_id,
        int(version),
        b"#d" in fields,
        {k[1:].decode(): v for k, v in fields.items() if k[:1] == b"."},
        newest.decode() if newest is not None else None,
    )
