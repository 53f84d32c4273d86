"""A ``where`` subscription's view: which entities the client holds, and why.

The hub keeps, per ``where`` subscription, a replica of every entity its id filter
selects (built by the same snapshot and hand-off as a client's, then kept by every
delta of those ids). Knowing each entity's state before and after each delta, it
turns the delta stream of the id filter into the stream of the query:

- a member (matching) entity that still matches: the delta as it is;
- a member that stops matching: a ``left`` (:class:`~hub.core.where.ViewDelta`);
- a non-member that starts matching: its full state, as a delta with ``created``
  and ``entered`` (the properties are exactly ``set``);
- a member deleted: the deletion; a non-member changed or deleted: nothing.

So the client's view equals the query's result at every delta position. A delta that
touches none of the filter's properties cannot change membership: it costs one set
test and the replica's update.

Bound: the replica holds at most ``limit`` entities; past that
:class:`~hub.errors.WhereError` ends the subscription (its id filter is too wide for
a ``where``: narrow it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import WhereError
from ..model import Entity
from ..where import ViewDelta

if TYPE_CHECKING:
    from ..model import Delta
    from ..where import Where

__all__ = ["ViewDelta", "WhereView"]


class WhereView:
    """The replica and the members of one ``where`` subscription."""

    __slots__ = ("fields", "limit", "members", "states", "where")

    def __init__(self, where: Where, limit: int) -> None:
        self.where = where
        self.fields = where.fields
        self.limit = limit
        #: Every entity the id filter selects, as the hub last saw it.
        self.states: dict[str, Entity] = {}
        #: The ids the client holds (those matching).
        self.members: set[str] = set()

    def clear(self) -> None:
        """Forget everything (the subscription starts over)."""
        self.states.clear()
        self.members.clear()

    def _room(self, entity_id: str) -> None:
        if entity_id not in self.states and len(self.states) >= self.limit:
            raise WhereError(
                f"a where is evaluated over the entities the id filter selects, at most "
                f"{self.limit}; narrow the filter"
            )

    def load(self, entity: Entity) -> bool:
        """An entity read from a snapshot page: keep it; True if it matches."""
        self._room(entity.id)
        self.states[entity.id] = entity
        if self.where.matches_encoded(entity.properties):
            self.members.add(entity.id)
            return True
        self.members.discard(entity.id)
        return False

    def apply(self, delta: Delta) -> Delta | None:
        """A live delta of an entity the id filter selects: what the client gets."""
        entity_id = delta.entity_id
        member = entity_id in self.members
        if delta.deleted:
            self.states.pop(entity_id, None)
            if member:
                self.members.discard(entity_id)
                return delta
            return None
        state = self.states.get(entity_id)
        if state is None or delta.created:
            self._room(entity_id)
            state = self.states[entity_id] = Entity(entity_id, {}, 0, 0)
            member = False
        state.properties.update(delta.touched)
        state.version = delta.version
        state.last_updated = delta.last_updated
        if delta.deadline is not None:
            state.expires_at = delta.deadline or None
        if not delta.created and self.fields.isdisjoint(delta.touched):
            return delta if member else None
        matches = self.where.matches_state(entity_id, delta.version, state.properties)
        if matches and member:
            return delta
        if matches:
            self.members.add(entity_id)
            if delta.created:
                return delta
            return _entered(delta, state, replaced=False)
        if member:
            self.members.discard(entity_id)
            return _left(delta, delta.base)
        return None

    def refresh(self, last: Delta) -> ViewDelta:
        """After a resume: make the client's copy of ``last``'s entity right, whatever
        it held (``last``: the newest delta of it the replica reflects).

        A matching entity comes as an entry that replaces what the client held; any
        other as a ``left``, which a client not holding it ignores.
        """
        state = self.states.get(last.entity_id)
        if state is not None and last.entity_id in self.members:
            return _entered(last, state, replaced=True)
        return _left(last, last.version)


def _entered(delta: Delta, state: Entity, *, replaced: bool) -> ViewDelta:
    return ViewDelta(
        entity_id=state.id,
        base=delta.base,
        version=state.version,
        last_updated=state.last_updated,
        touched=dict(sorted(state.properties.items())),
        created=True,
        replaced=replaced,
        source=delta.source,
        position=delta.position,
        seq=delta.seq,
        entered=True,
        deadline=state.expires_at,
    )


def _left(delta: Delta, base: int) -> ViewDelta:
    return ViewDelta(
        entity_id=delta.entity_id,
        base=base,
        version=delta.version,
        last_updated=delta.last_updated,
        deleted=True,
        source=delta.source,
        position=delta.position,
        seq=delta.seq,
        left=True,
    )
