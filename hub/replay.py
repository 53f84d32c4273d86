"""``flux replay``: fold the event log through the pure reducer, compare with Redis.

The state in Redis is what ``reduce.lua`` made of the events; ``hub/core`` holds the
same reducer as a pure function (DESIGN.md §2). Replaying the event log through the
pure one must give the same entities — same properties, same versions, deleted ones
included (a tombstone keeps its version). A difference means the state and its log
disagree: a bug in one reducer, or a key changed by hand.

What it cannot check, and says so:

- a partition whose log was trimmed (``FLUX_EVENT_LOG_MAXLEN``): the log no longer
  holds every event, so it is not compared at all;
- ``lastUpdated``: the time Redis applied an event is not in the log (the log entry's
  id is Redis's clock, the entity's time the hub's), so it is not compared;
- entities written while the replay runs: each partition is replayed up to its newest
  entry at the start, and an entity whose newest event came later is counted as
  *moved on*, not compared.

It only reads. Partitions are replayed one at a time, so memory is about one
partition's state in Python objects.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .core import World
from .errors import ProtocolError
from .store import EventLogAudit, stream_id
from .wire import parse_event_body

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .store import EntityRecord, Store

__all__ = ["Difference", "PartitionReport", "Replay", "replay"]

#: Entries per event-log read, and entities per state read.
PAGE = 1000


@dataclass(frozen=True, slots=True)
class Difference:
    """One entity whose replayed state is not Redis's."""

    entity_id: str
    #: What differs, in words: ``version 5 in Redis, 4 replayed``.
    what: str


@dataclass(slots=True)
class PartitionReport:
    partition: int
    events: int = 0
    #: Events of the log that could not be read back (corrupt entries).
    unreadable: int = 0
    agree: int = 0
    moved_on: int = 0
    differences: list[Difference] = field(default_factory=list)
    #: Why it was not compared (the log was trimmed), or None.
    skipped: str | None = None


@dataclass(slots=True)
class Replay:
    """The outcome over every partition."""

    partitions: list[PartitionReport]
    seconds: float

    @property
    def events(self) -> int:
        return sum(p.events for p in self.partitions)

    @property
    def differences(self) -> list[Difference]:
        return [d for p in self.partitions for d in p.differences]

    @property
    def exit_status(self) -> int:
        """0: everything compared agrees; 1: differences (or unreadable events);
        3: no difference, but some partition could not be compared."""
        if any(p.differences or p.unreadable for p in self.partitions):
            return 1
        if any(p.skipped for p in self.partitions):
            return 3
        return 0


async def replay(
    store: Store,
    *,
    until: Mapping[int, str] | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Replay:
    """Replay every partition of ``store``'s key prefix.

    Args:
        until: per partition, the event-log id to replay up to (default: its newest
            entry when the replay reaches it). Entities written after it are moved on.
        progress: called after each page with ``(partition, events so far, events in
            its log)``.
        clock: for the elapsed time only.
    """
    started = clock()
    audit = EventLogAudit(store)
    cuts = until or {}
    reports = [
        await _replay_partition(audit, p, cuts.get(p), progress)
        for p in range(store.keys.partitions)
    ]
    return Replay(reports, clock() - started)


async def _replay_partition(
    audit: EventLogAudit,
    p: int,
    until: str | None,
    progress: Callable[[int, int, int], None] | None,
) -> PartitionReport:
    report = PartitionReport(p)
    extent = await audit.extent(p)
    if until is not None and extent.newest is not None:
        extent = dataclasses.replace(extent, newest=min(until, extent.newest, key=stream_id))
    if not extent.complete:
        report.skipped = (
            f"its event log holds {extent.held:,} of the {extent.accepted:,} events it "
            f"accepted (trimmed by FLUX_EVENT_LOG_MAXLEN): the state cannot be rebuilt from it"
        )
        return report
    world = World()
    if extent.newest is not None:
        after = "-"
        while True:
            page = await audit.events(p, after, extent.newest, PAGE)
            for entry_id, stored in page:
                _fold(world, entry_id, stored, report)
            report.events += len(page)
            if progress is not None:
                progress(p, report.events, extent.held)
            if len(page) < PAGE:
                break
            after = page[-1][0]
    cut = stream_id(extent.newest) if extent.newest is not None else (0, 0)
    await _compare(audit, p, world, cut, report)
    return report


def _fold(world: World, entry_id: str, stored: bytes, report: PartitionReport) -> None:
    """Apply one logged event as it was applied: unconditionally. Duplicates and
    ``if_version`` conflicts never reach the log, so neither check applies again."""
    applied_ms = stream_id(entry_id)[0]
    try:
        envelope = parse_event_body(stored, now_ms=applied_ms, new_id=lambda: entry_id)
    except ProtocolError:
        report.unreadable += 1
        report.differences.append(
            Difference(f"<event {entry_id}>", "the event log entry does not parse")
        )
        return
    change = dataclasses.replace(envelope.change, dedup_id=None, if_version=None)
    world.apply(change, applied_ms)


async def _compare(
    audit: EventLogAudit, p: int, world: World, cut: tuple[int, int], report: PartitionReport
) -> None:
    """Compare every entity either side knows of: replayed (live or deleted) or live
    in Redis."""
    ids = set(world.entities) | set(world.tombstones)
    after: str | None = None
    while True:
        page = await audit.live_ids(p, after, PAGE)
        ids.update(page)
        if len(page) < PAGE:
            break
        after = page[-1]
    ordered = sorted(ids)
    for start in range(0, len(ordered), PAGE):
        chunk = ordered[start : start + PAGE]
        for entity_id, record in zip(chunk, await audit.records(p, chunk), strict=True):
            problem = _difference(world, entity_id, record)
            if problem is None:
                report.agree += 1
            elif (
                record is not None
                and record.newest_event is not None
                and stream_id(record.newest_event) > cut
            ):
                report.moved_on += 1
            else:
                report.differences.append(Difference(entity_id, problem))


def _difference(world: World, entity_id: str, record: EntityRecord | None) -> str | None:
    """How Redis's record differs from the replayed state; None if it does not."""
    entity = world.entities.get(entity_id)
    tombstone = world.tombstones.get(entity_id)
    if record is None:
        return "absent from Redis, " + ("live" if entity is not None else "deleted") + " replayed"
    if entity is None and tombstone is None:
        return f"{'deleted' if record.deleted else 'live'} in Redis, never written by the log"
    if entity is None:
        if not record.deleted:
            return "live in Redis, deleted replayed"
        if record.version != tombstone:
            return f"deleted at version {record.version} in Redis, {tombstone} replayed"
        return None
    if record.deleted:
        return "deleted in Redis, live replayed"
    if record.version != entity.version:
        return f"version {record.version} in Redis, {entity.version} replayed"
    names = sorted(record.properties.keys() | entity.properties.keys())
    for name in names:
        mine, theirs = entity.properties.get(name), record.properties.get(name)
        if mine != theirs:
            return f"property {name!r} is {_shown(theirs)} in Redis, {_shown(mine)} replayed"
    return None


def _shown(value: bytes | None, limit: int = 60) -> str:
    if value is None:
        return "absent"
    text = value.decode(errors="replace")
    return text if len(text) <= limit else text[: limit - 1] + "…"
