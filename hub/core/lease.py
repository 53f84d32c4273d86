"""Leases: an entity published with a time-to-live is deleted when it runs out.

The rules (docs/semantics.md, "Leases"), as pure functions and a pure model of the
lease table that ``hub/store/reduce.lua`` (setting leases) and ``hub/store/expire.lua``
(sweeping them) keep in Redis:

- an event may carry ``ttl``: seconds, a number from 0 to :data:`MAX_TTL_SECONDS`;
  fractions count to the millisecond, rounded up;
- an applied event with a positive ``ttl`` for an entity that exists after it sets the
  entity's deadline to *now + ttl* (a refresh moves it later or earlier);
- ``ttl: 0`` removes the lease: the entity lives until it is deleted;
- an event without ``ttl`` (or with ``null``) leaves the lease as it is;
- deleting the entity removes its lease (a re-created entity has none until an event
  gives it one);
- what an applied event changed of a lease is news, told with its delta (its
  ``deadline``, :class:`~hub.core.model.Delta`): the new deadline, or 0 when a lease
  was removed; nothing when the lease is as it was (no ``ttl``, or ``ttl: 0`` on an
  entity without one), nor for a deletion (which says it itself). An event that
  changes nothing else but the lease (empty properties on a live entity) still has a
  delta, to carry that news: readers of the log see every deadline move;
- a sweep deletes the entities whose deadline is at or before *now*, oldest deadline
  first (ties by id), at most ``limit`` per sweep: the rest wait for the next sweep.

Time is passed in (``now_ms``), never read here.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import InvalidEvent

__all__ = ["EXPIRED", "MAX_TTL_SECONDS", "Leases", "deadline_ms", "parse_ttl"]

#: The longest time-to-live accepted: 30 days.
MAX_TTL_SECONDS = 30 * 24 * 3600
#: The ``reason`` of a deletion made by the hub because a lease ran out.
EXPIRED = "expired"


def parse_ttl(value: Any) -> int | None:
    """An event's ``ttl`` field, in milliseconds.

    Returns:
        None when ``ttl`` is absent or null (the lease stays as it is); 0 to remove the
        lease; else the time-to-live in milliseconds (at least 1).

    Raises:
        InvalidEvent: not a number from 0 to :data:`MAX_TTL_SECONDS`; the message
            names the field and the value.
    """
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= MAX_TTL_SECONDS  # NaN fails this too
    ):
        raise InvalidEvent(
            f"ttl must be a number of seconds from 0 to {MAX_TTL_SECONDS} "
            f"(0 removes the lease), got {_shown(value)}"
        )
    return math.ceil(value * 1000)


def _shown(value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return repr(value)


def deadline_ms(now_ms: int, ttl_ms: int) -> int:
    """When an entity given ``ttl_ms`` at ``now_ms`` expires (it is due at that ms)."""
    if ttl_ms <= 0:
        raise ValueError(f"a deadline needs a positive ttl, not {ttl_ms}")
    return now_ms + ttl_ms


class Leases:
    """The lease table: entity id -> deadline (ms). A pure model of the sorted set
    ``flux:{p}:leases`` (see hub/store/keys.py).

    Memory: one entry per leased live entity.
    """

    def __init__(self) -> None:
        self.deadlines: dict[str, int] = {}
        """Leased entities and their deadlines."""

    def after_event(
        self, entity_id: str, ttl_ms: int | None, live: bool, now_ms: int
    ) -> int | None:
        """Record an applied event of ``entity_id``.

        Args:
            entity_id: the entity.
            ttl_ms: the event's ttl (:func:`parse_ttl`).
            live: whether the entity exists after the event.
            now_ms: when the event was applied.

        Returns:
            The news its delta carries (``Delta.deadline``): None when the lease is
            as it was (or the entity is gone), 0 when it was removed, else the new
            deadline.
        """
        if not live:
            self.deadlines.pop(entity_id, None)
            return None
        if ttl_ms == 0:
            return 0 if self.deadlines.pop(entity_id, None) is not None else None
        if ttl_ms is None:
            return None
        deadline = self.deadlines[entity_id] = deadline_ms(now_ms, ttl_ms)
        return deadline

    def due(self, now_ms: int, limit: int) -> list[str]:
        """The entities a sweep at ``now_ms`` deletes: deadline at or before it, the
        oldest deadline first (ties by id), at most ``limit``."""
        due = sorted((d, i) for i, d in self.deadlines.items() if d <= now_ms)
        return [i for _, i in due[:limit]]

    def sweep(self, now_ms: int, limit: int) -> list[str]:
        """:meth:`due`, and forget their leases (the caller deletes the entities)."""
        expired = self.due(now_ms, limit)
        for entity_id in expired:
            del self.deadlines[entity_id]
        return expired
