"""Values the reducer consumes and produces.

Property values travel through the core as *canonical JSON bytes* (encoded once, keys
sorted, by :mod:`hub.wire.jsonutil`). The core never decodes them: two values are equal
exactly when their bytes are equal, which is also how the Redis reduce script decides
whether a property changed. That keeps ``1``, ``1.0`` and ``true`` distinct, as JSON
(and Flux, through serde_json) does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

__all__ = [
    "DELETED_PROPERTY",
    "JSON_TRUE",
    "Change",
    "ChangeKind",
    "Delta",
    "Entity",
    "ExpiredDelta",
    "LeasedChange",
    "LeasedDelta",
    "Outcome",
    "OutcomeStatus",
]

#: The Flux tombstone marker: an event whose properties hold ``"__deleted__": true``
#: (exactly JSON ``true``) deletes its entity.
DELETED_PROPERTY = "__deleted__"
JSON_TRUE = b"true"


class ChangeKind(Enum):
    """What applying an event does to the world."""

    #: Merge properties into the entity (creating it if needed).
    UPDATE = "U"
    #: Remove the entity (a Flux tombstone).
    DELETE = "D"
    #: Only record the event: it names no entity, or its properties are not an
    #: object, or they are empty (Flux: ``{}`` creates nothing).
    LOG_ONLY = "L"


@dataclass(frozen=True, slots=True)
class Change:
    """One event, reduced to what the reducer needs.

    Build it with :meth:`from_parts`, which classifies the event the way Flux does.
    """

    kind: ChangeKind
    entity_id: str | None
    #: Property name -> canonical JSON bytes, in sorted name order.
    properties: dict[str, bytes]
    #: The client's ``eventId``; ``None`` when the hub generated it (no dedup needed).
    dedup_id: str | None = None
    #: Apply only if the entity is at this version (0: must not exist).
    if_version: int | None = None
    #: The event's ``source``, carried into the delta.
    source: str = ""
    #: The event's time-to-live in ms (hub/core/lease.py): None leaves the entity's
    #: lease as it is, 0 removes it. Set on a :class:`LeasedChange` only: a class
    #: attribute here, so that an event without one costs nothing more to build.
    ttl_ms: ClassVar[int | None] = None

    @classmethod
    def from_parts(
        cls,
        entity_id: str | None,
        properties: dict[str, bytes] | None,
        *,
        dedup_id: str | None = None,
        if_version: int | None = None,
        source: str = "",
        ttl_ms: int | None = None,
    ) -> Change:
        """Classify an event from its entity id and encoded properties.

        Args:
            entity_id: ``payload.entity_id`` when it is a string, else ``None``.
            properties: ``payload.properties`` encoded, or ``None`` when it is
                missing or not an object.
            dedup_id: the client-supplied ``eventId``, if any.
            if_version: optional compare-and-set version.
            source: the event's ``source``.
            ttl_ms: the event's time-to-live, in ms (None: none given).
        """
        if entity_id is None or properties is None or not properties:
            kind = ChangeKind.LOG_ONLY
            props: dict[str, bytes] = {}
        elif properties.get(DELETED_PROPERTY) == JSON_TRUE:
            kind = ChangeKind.DELETE
            props = {}
        else:
            kind = ChangeKind.UPDATE
            # Sorted by name: deltas (and Flux's state_update messages) follow this order.
            props = dict(sorted(properties.items()))
        if ttl_ms is None:
            return cls(kind, entity_id, props, dedup_id, if_version, source)
        return LeasedChange(kind, entity_id, props, dedup_id, if_version, source, ttl_ms)


@dataclass(frozen=True, slots=True)
class LeasedChange(Change):
    """A :class:`Change` whose event carries a ``ttl`` (made by :meth:`Change.from_parts`)."""

    ttl_ms: int | None = None  # type: ignore[misc]


@dataclass(slots=True)
class Entity:
    """The derived state of one entity."""

    id: str
    properties: dict[str, bytes]
    #: Increases by exactly 1 for each applied event that changed a value.
    version: int
    #: Milliseconds since the epoch of the last applied event.
    last_updated: int
    #: When its lease runs out (ms since the epoch, Redis's clock; hub/core/lease.py),
    #: or None: it has no lease.
    expires_at: int | None = None


@dataclass(frozen=True, slots=True)
class Delta:
    """What one applied event changed about one entity.

    A client holding ``base`` applies it and is at ``version``. ``base == version``
    means the event touched properties without changing any value.
    """

    entity_id: str
    base: int
    version: int
    last_updated: int
    #: Every property the event carried, name -> canonical JSON, sorted by name.
    touched: dict[str, bytes] = field(default_factory=dict)
    #: Names in ``touched`` whose value did not change.
    unchanged: frozenset[str] = frozenset()
    deleted: bool = False
    #: The entity did not exist before this delta (new, or re-created after deletion).
    #: A client holding no copy of it must see this first: anything else is a gap.
    created: bool = False
    #: Only on merged deltas (see conflate.py): a deletion and a re-creation merged
    #: into one. The client held the entity at ``base`` and must replace it.
    replaced: bool = False
    source: str = ""
    #: Position in the delta log (a Redis stream id); empty until stored.
    position: str = ""
    #: Sequence number in its partition's delta log (1, 2, 3 ...); 0 until stored.
    #: Consecutive deltas differ by 1: a jump means the reader missed trimmed ones.
    seq: int = 0
    #: Why a deletion happened: "" for a deleting event; ``"expired"`` on an
    #: :class:`ExpiredDelta`. A class attribute, not a field: every other delta would
    #: pay for setting it (decoding deltas is the fan-out's hot path).
    reason: ClassVar[str] = ""
    #: What the delta says of the entity's lease (hub/core/lease.py): None, nothing —
    #: the lease is as it was, and on a ``created`` delta, there is none; 0, it was
    #: removed; else the new deadline (ms, Redis's clock). Set on a
    #: :class:`LeasedDelta` only, for the same reason as ``reason``.
    deadline: ClassVar[int | None] = None

    @property
    def changed(self) -> dict[str, bytes]:
        """The properties whose value changed (the delta's ``set``)."""
        if not self.unchanged:
            return self.touched
        return {k: v for k, v in self.touched.items() if k not in self.unchanged}


@dataclass(frozen=True, slots=True)
class ExpiredDelta(Delta):
    """The deletion the hub made because the entity's lease ran out
    (hub/core/lease.py); ``deleted`` is True."""

    reason: ClassVar[str] = "expired"


@dataclass(frozen=True, slots=True)
class LeasedDelta(Delta):
    """A :class:`Delta` of an event that set or removed the entity's lease."""

    deadline: int | None = None  # type: ignore[misc]


class OutcomeStatus(Enum):
    """How the reducer disposed of one event."""

    APPLIED = "ok"
    DUPLICATE = "dup"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of applying one event.

    ``version`` is the entity's version after the event (for a conflict: its
    current version, 0 when it does not exist).
    """

    status: OutcomeStatus
    version: int
    delta: Delta | None = None
