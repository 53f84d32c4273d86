"""Conflation: merging consecutive deltas of one entity into one.

When a subscriber falls behind, its pending deltas are merged per entity: the merged
delta takes the client from the first delta's ``base`` to the last one's ``version``
in one step, so the state the client ends with is exactly the state it would have
reached applying each delta — with memory bounded by the number of entities pending,
not the number of deltas.

Rules for ``merge(a, b)`` (``b.base == a.version``, or ``b`` a creation after ``a``
a removal):

- an update after an update: properties changed by either, ``b``'s value winning;
- a deletion after anything: a deletion from ``a.base`` — or nothing at all if ``a``
  created the entity from nothing (the client never held it);
- an update after a deletion: a re-creation (``created`` and ``replaced``: the client
  held the entity at ``base``), whose properties replace what the client held;
- the lease (``deadline``): ``b``'s news if it has any, else ``a``'s (after a
  deletion, only ``b``'s: a re-created entity has no lease until an event gives one).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import TYPE_CHECKING

from .model import Delta, LeasedDelta

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["merge"]


def merge(a: Delta, b: Delta) -> Delta | None:
    """Merge two consecutive deltas of one entity; None when they cancel out.

    Raises:
        ValueError: the deltas are not consecutive deltas of one entity.
    """
    # A creation after a removal carries the whole state: its base may be ahead of the
    # removal's version (a ``where`` view skips the versions of entities out of it).
    if a.entity_id != b.entity_id or b.base != a.version and not (a.deleted and b.created):
        raise ValueError(
            f"cannot merge {a.entity_id}@{a.base}->{a.version} "
            f"with {b.entity_id}@{b.base}->{b.version}"
        )
    if b.deleted:
        if a.created and not a.replaced:
            return None
        return replace(b, base=a.base)
    if a.deleted:
        # Deleted, then created again: the client replaces what it held.
        return replace(b, base=a.base, created=True, replaced=True)
    # The common case, a subscriber behind on an entity whose writers send the same
    # properties every time, is kept cheap: it runs for every delta while conflating.
    if a.touched.keys() <= b.touched.keys():
        touched = b.touched  # already sorted, and b's values win
    else:
        touched = dict(sorted({**a.touched, **b.touched}.items()))
    if a.unchanged or b.unchanged:
        changed = a.changed.keys() | b.changed.keys()
        unchanged = frozenset(k for k in touched if k not in changed)
    else:
        unchanged = frozenset()
    deadline = a.deadline if b.deadline is None else b.deadline
    # The lease's last news, if either delta had any, rides on the merged one.
    make: Callable[..., Delta] = (
        Delta if deadline is None else functools.partial(LeasedDelta, deadline=deadline)
    )
    return make(
        b.entity_id,
        a.base,
        b.version,
        b.last_updated,
        touched,
        unchanged,
        created=a.created,
        replaced=a.replaced,
        source=b.source,
        position=b.position,
        seq=b.seq,
    )
