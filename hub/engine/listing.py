"""Listing entities by id prefix, filtered by a value filter (``where``).

REST ``GET /api/state/entities``, the native ``list`` frame, SSE and MCP read pages
through :func:`list_page`. The id prefix is applied first (Redis reads ids in order
under it); the ``where`` is evaluated on each entity read.

Bound: a page with a ``where`` reads at most :data:`SCAN_LIMIT` entities. It holds up
to ``limit`` matching ones and a ``next`` cursor whenever more may follow — so a page
of a selective filter over many entities may hold fewer than ``limit`` (even none)
and still have a ``next``: keep reading until ``next`` is null.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.where import parse_where

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..core.model import Entity
    from ..core.where import Where
    from ..store import Store

__all__ = ["READ_CHUNK", "SCAN_LIMIT", "Page", "list_page", "optional_where", "stream_entities"]

#: Entities read per round trip.
READ_CHUNK = 1000
#: Entities a filtered page reads at most before it answers (with a ``next``).
SCAN_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing."""

    entities: list[Entity]
    #: The id to continue after; None on the last page.
    next: str | None


def optional_where(value: dict[str, Any] | None) -> Where | None:
    """A frame's ``where`` parsed (None when absent or empty: no filter).

    Raises:
        WhereError: it does not parse (the message names the part).
    """
    if not value:
        return None
    return parse_where(value)


async def list_page(
    store: Store, prefix: str | None, limit: int, after: str | None, where: Where | None = None
) -> Page:
    """Up to ``limit`` entities under ``prefix`` after the id ``after``, in id order,
    that match ``where`` (all of them without one). A ``prefix`` of None (a scope
    that excludes everything) lists nothing."""
    if prefix is None:
        return Page([], None)
    if where is None:
        ids = await store.list_ids(prefix, limit, after)
        entities = await store.get_many(ids)
        return Page(entities, ids[-1] if len(ids) == limit else None)
    found: list[Entity] = []
    scanned = 0
    while True:
        chunk = min(READ_CHUNK, SCAN_LIMIT - scanned)
        ids = await store.list_ids(prefix, chunk, after)
        scanned += len(ids)
        for entity in await store.get_many(ids):
            if where.matches_encoded(entity.properties):
                found.append(entity)
                if len(found) == limit:
                    return Page(found, entity.id)
        if len(ids) < chunk:
            return Page(found, None)
        after = ids[-1]
        if scanned >= SCAN_LIMIT:
            return Page(found, after)


async def stream_entities(
    store: Store, prefix: str, after: str | None, where: Where | None = None
) -> AsyncIterator[list[Entity]]:
    """Every entity under ``prefix`` after ``after`` that matches ``where``, in chunks
    of at most :data:`READ_CHUNK` (memory stays bounded by a chunk)."""
    while True:
        ids = await store.list_ids(prefix, READ_CHUNK, after)
        entities = await store.get_many(ids)
        if where is not None:
            entities = [e for e in entities if where.matches_encoded(e.properties)]
        yield entities
        if len(ids) < READ_CHUNK:
            return
        after = ids[-1]
