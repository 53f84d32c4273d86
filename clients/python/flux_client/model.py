"""What the SDK hands to its users: acknowledgements, entities, updates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Ack", "Entity", "Update"]


@dataclass(frozen=True, slots=True)
class Ack:
    """The hub's acknowledgement of one applied (or repeated) event."""

    event_id: str
    #: The entity's version after the event.
    version: int
    #: The delta's position, or None when the event changed nothing.
    position: str | None
    #: True when the hub had applied this ``eventId`` before (a retry).
    duplicate: bool = False


@dataclass(slots=True)
class Entity:
    """An entity as the hub shows it."""

    id: str
    properties: dict[str, Any]
    version: int
    last_updated: str
    #: When its lease runs out unless renewed (RFC 3339 UTC, the hub's ``expiresAt``),
    #: or None: it has no lease (docs/presence.md).
    expires_at: str | None = None

    @classmethod
    def from_frame(cls, value: dict[str, Any]) -> Entity:
        return cls(
            value["id"],
            dict(value["properties"]),
            value["version"],
            value["lastUpdated"],
            value.get("expiresAt"),
        )


@dataclass(frozen=True, slots=True)
class Update:
    """One thing a subscription learned.

    ``kind``:

    - ``snapshot``: ``entity`` is an entity's current state (from the snapshot), and
      ``changes`` its properties, all of them (to this subscriber they are all new);
    - ``delta``: ``changes`` were applied; ``base``/``version`` as in the protocol;
      ``created`` when the entity is new (its properties are exactly ``changes``);
      a heartbeat (an event with a ``ttl`` that changes no value) is a delta with no
      ``changes`` that moves ``expires_at``;
    - ``deleted``: the entity is gone; ``reason`` is ``"expired"`` when its lease ran
      out (a ``ttl`` not refreshed in time), "" when an event deleted it;
    - ``left``: the entity no longer matches the subscription's ``where``: drop it;
    - ``reset``: forget everything of this subscription (a fresh snapshot follows);
    - ``synced``: the snapshot or catch-up is complete; updates are live from here.

    ``lease_news`` says whether the update tells the entity's lease: a ``snapshot``
    and a ``created`` delta always do (``expires_at`` None: it has none), another
    delta when its event set or removed one (``expires_at``: the new deadline, None
    when removed). Without it, the lease is as it was.
    """

    kind: Literal["snapshot", "delta", "deleted", "left", "reset", "synced"]
    entity_id: str = ""
    changes: dict[str, Any] = field(default_factory=dict)
    base: int = 0
    version: int = 0
    created: bool = False
    last_updated: str = ""
    position: str | None = None
    entity: Entity | None = None
    conflated: bool = False
    reason: str = ""
    expires_at: str | None = None
    lease_news: bool = False
