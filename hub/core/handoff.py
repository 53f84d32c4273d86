"""The snapshot-to-live hand-off, decided by delta-log position.

A snapshot is read in pages; each page is read atomically in Redis together with its
partition's delta-log head position. A page therefore shows the entities whose ids
fall in its range *exactly as of* that position: present or absent. A delta of an
entity in that range is already reflected in the snapshot iff its position is at or
before the page's; otherwise it must be sent. Deltas that arrive while the snapshot
is read are held, then sorted out with :meth:`SnapshotCut.reflected` — none is lost
and none applied twice, whatever was written meanwhile.

What is read: :func:`plan_snapshot` turns a filter into disjoint id ranges (one per
prefix, namespace, glob stem, or the whole space for ``*``) and the exact ids no range
covers. Within a range, pages are read in id order; a page covers the ids after the
previous page's last id up to its own last id, and the last page (fewer ids than asked
for) the rest of the range.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

from .index import Pattern, PatternKind

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .cursor import Position

__all__ = ["SnapshotCut", "SnapshotPlan", "plan_snapshot"]


class SnapshotPlan:
    """What a snapshot reads: disjoint id ranges (by prefix) and loose exact ids."""

    def __init__(self, ranges: list[str], ids: list[str]) -> None:
        self.ranges = ranges
        self.ids = ids


def plan_snapshot(patterns: Iterable[Pattern], scope: str = "") -> SnapshotPlan:
    """The ranges and ids to read for a filter.

    Globs are read by their literal stem (the text before the first wildcard) and
    filtered afterwards. A range inside another is dropped; ids inside a range too.
    With a ``scope`` (a reader confined to ids starting with it), ranges are narrowed
    to it and what lies outside is not read at all.
    """
    prefixes: set[str] = set()
    ids: set[str] = set()
    for pattern in patterns:
        if pattern.kind is PatternKind.ALL:
            prefixes.add("")
        elif pattern.kind is PatternKind.PREFIX:
            prefixes.add(pattern.value)
        elif pattern.kind is PatternKind.GLOB:
            stem = pattern.value
            for i, c in enumerate(stem):
                if c in "*?[":
                    stem = stem[:i]
                    break
            prefixes.add(stem)
        else:
            ids.add(pattern.value)
    if scope:
        narrowed = set()
        for prefix in prefixes:
            if prefix.startswith(scope):
                narrowed.add(prefix)
            elif scope.startswith(prefix):
                narrowed.add(scope)
        prefixes = narrowed
        ids = {i for i in ids if i.startswith(scope)}
    ranges: list[str] = []
    for prefix in sorted(prefixes):
        if not any(prefix.startswith(kept) for kept in ranges):
            ranges.append(prefix)
    loose = sorted(i for i in ids if not any(i.startswith(r) for r in ranges))
    return SnapshotPlan(ranges, loose)


class _Pages:
    """Pages of one range of one partition."""

    __slots__ = ("bounds", "end", "positions")

    def __init__(self) -> None:
        self.bounds: list[str] = []
        self.positions: list[Position] = []
        self.end: Position | None = None

    def lookup(self, entity_id: str) -> Position | None:
        index = bisect_left(self.bounds, entity_id)
        if index < len(self.bounds):
            return self.positions[index]
        return self.end


class SnapshotCut:
    """Page boundaries and positions of one snapshot."""

    def __init__(self) -> None:
        self._ranges: dict[tuple[int, str], _Pages] = {}
        self._ids: dict[tuple[int, str], Position] = {}

    def add_page(
        self, partition: int, prefix: str, last_id: str | None, position: Position
    ) -> None:
        """Record a page of range ``prefix`` read at ``position``.

        Args:
            partition: the page's partition.
            prefix: the range the page belongs to.
            last_id: the last id the page read; None if it was the range's last page.
            position: the delta-log head of ``partition`` when the page was read.
        """
        pages = self._ranges.setdefault((partition, prefix), _Pages())
        if last_id is None:
            pages.end = position
        else:
            pages.bounds.append(last_id)
            pages.positions.append(position)

    def add_ids(self, ids: Iterable[str], position: Position) -> None:
        """Record exact ids read at ``position``."""
        for entity_id in ids:
            self._ids[position.partition, entity_id] = position

    def position_for(self, partition: int, entity_id: str) -> Position | None:
        """The position the snapshot shows this entity at; None if it does not cover it."""
        position = self._ids.get((partition, entity_id))
        if position is not None:
            return position
        for (p, prefix), pages in self._ranges.items():
            if p == partition and entity_id.startswith(prefix):
                return pages.lookup(entity_id)
        return None

    def reflected(self, entity_id: str, position: Position) -> bool:
        """Whether the snapshot already reflects the delta at ``position``."""
        cut = self.position_for(position.partition, entity_id)
        return cut is not None and position <= cut

    def latest(self) -> dict[int, Position]:
        """The latest position read in each partition.

        Until the fan-out has dispatched every delta up to these, a live delta may
        still be one the snapshot reflects: the cut must keep filtering.
        """
        result: dict[int, Position] = {}
        positions = [*self._ids.values()]
        for pages in self._ranges.values():
            positions.extend(pages.positions)
            if pages.end is not None:
                positions.append(pages.end)
        for position in positions:
            current = result.get(position.partition)
            if current is None or position > current:
                result[position.partition] = position
        return result
