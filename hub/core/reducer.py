"""The reducer as a pure function of (state, event, now).

This is one of the two implementations of the merge semantics (DESIGN.md §3); the other
is ``hub/store/reduce.lua``, which Redis runs atomically. Tests fold random event
sequences through both and require identical results, so any change here must be made
there too.

Rules:

- top-level properties overwrite; nested values are replaced whole; ``null`` is a value;
- an event with no properties (or none that parse as an object) changes nothing;
- ``__deleted__: true`` removes the entity;
- ``version`` rises by exactly 1 per applied event that changed a value, and keeps
  rising across delete and re-creation (a deleted entity leaves its version behind,
  so per-entity versions never repeat);
- ``last_updated`` moves on every applied update, changed or not;
- a repeated client ``eventId`` is a duplicate: acknowledged, not applied;
- leases (hub/core/lease.py): an applied event's ``ttl`` sets or removes the entity's
  deadline (*now + ttl*), and the delta carries the news (``Delta.deadline``); an
  event that changes nothing but the lease of a live entity (empty properties) has a
  delta of its own for it (``base == version``, nothing touched). The store runs
  leases on Redis's clock: its deadlines are the same news at another time.
"""

from __future__ import annotations

from dataclasses import fields

from .lease import Leases
from .model import Change, ChangeKind, Delta, Entity, LeasedDelta, Outcome, OutcomeStatus

__all__ = ["World"]


class World:
    """Entity state derived from a sequence of events.

    The caller supplies the time of each event (``now_ms``): the core never reads a
    clock.

    Memory: one :class:`Entity` per live entity, one integer per deleted one, and one
    record per remembered ``eventId``. The store bounds the last with a TTL; this pure
    model keeps them all, which is what the equivalence tests need.
    """

    def __init__(self) -> None:
        self.entities: dict[str, Entity] = {}
        """Live entities by id."""
        self.tombstones: dict[str, int] = {}
        """Version left behind by each deleted entity (so versions never repeat)."""
        self.seen: dict[str, int] = {}
        """Client event ids already applied, with the version they produced."""
        self.leases = Leases()
        """The deadlines of the leased entities."""

    def version_of(self, entity_id: str) -> int:
        """Return the current version of an entity: 0 if it does not exist."""
        entity = self.entities.get(entity_id)
        return entity.version if entity is not None else 0

    def apply(self, change: Change, now_ms: int) -> Outcome:
        """Apply one event.

        Args:
            change: the event, classified.
            now_ms: the time of the event, in milliseconds since the epoch.

        Returns:
            The outcome; ``outcome.delta`` is set when subscribers must hear of it.
        """
        if change.dedup_id is not None and change.dedup_id in self.seen:
            return Outcome(OutcomeStatus.DUPLICATE, self.seen[change.dedup_id])

        entity_id = change.entity_id
        if change.if_version is not None and entity_id is not None:
            current = self.version_of(entity_id)
            if current != change.if_version:
                return Outcome(OutcomeStatus.CONFLICT, current)

        if change.kind is ChangeKind.UPDATE:
            assert entity_id is not None  # Invariant: Change.from_parts guarantees it.
            outcome = self._update(entity_id, change, now_ms)
        elif change.kind is ChangeKind.DELETE:
            assert entity_id is not None
            outcome = self._delete(entity_id, change, now_ms)
        else:
            version = self.version_of(entity_id) if entity_id is not None else 0
            outcome = Outcome(OutcomeStatus.APPLIED, version)
        if entity_id is not None:
            outcome = self._lease(entity_id, change, outcome, now_ms)

        if change.dedup_id is not None:
            self.seen[change.dedup_id] = outcome.version
        return outcome

    def _lease(self, entity_id: str, change: Change, outcome: Outcome, now_ms: int) -> Outcome:
        """The lease rules after an applied event: its delta carries their news."""
        entity = self.entities.get(entity_id)
        news = self.leases.after_event(entity_id, change.ttl_ms, entity is not None, now_ms)
        if entity is not None:
            entity.expires_at = self.leases.deadlines.get(entity_id)
        if news is None:
            return outcome
        delta = outcome.delta
        if delta is None:  # (empty properties: the news alone)
            assert entity is not None  # Invariant: news comes only for a live entity.
            delta = Delta(
                entity_id, entity.version, entity.version, entity.last_updated, source=change.source
            )
        values = {f.name: getattr(delta, f.name) for f in fields(Delta)}
        return Outcome(outcome.status, outcome.version, LeasedDelta(**values, deadline=news))

    def _update(self, entity_id: str, change: Change, now_ms: int) -> Outcome:
        entity = self.entities.get(entity_id)
        created = entity is None
        if entity is None:
            base = self.tombstones.pop(entity_id, 0)
            entity = Entity(entity_id, {}, base, now_ms)
            self.entities[entity_id] = entity
        base = entity.version
        old = entity.properties
        unchanged = frozenset(k for k, v in change.properties.items() if old.get(k) == v)
        if len(unchanged) < len(change.properties):
            entity.version += 1
        old.update(change.properties)
        entity.last_updated = now_ms
        delta = Delta(
            entity_id,
            base,
            entity.version,
            now_ms,
            touched=change.properties,
            unchanged=unchanged,
            created=created,
            source=change.source,
        )
        return Outcome(OutcomeStatus.APPLIED, entity.version, delta)

    def _delete(self, entity_id: str, change: Change, now_ms: int) -> Outcome:
        entity = self.entities.pop(entity_id, None)
        if entity is None:
            # Deleting what does not exist is a silent no-op (Flux).
            return Outcome(OutcomeStatus.APPLIED, 0)
        version = entity.version + 1
        self.tombstones[entity_id] = version
        delta = Delta(
            entity_id, entity.version, version, now_ms, deleted=True, source=change.source
        )
        return Outcome(OutcomeStatus.APPLIED, version, delta)
