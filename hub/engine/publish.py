"""The publish policy every way in shares: REST, the native protocol and connectors.

An event goes through the same steps whichever transport carried it, in Flux's order:
parse and check against the limits (:class:`~hub.wire.envelope.EventLimits`), then
authorize per event, then take the namespace's rate limit. :class:`PublishPolicy`
holds those steps; transports only format the outcome (a REST batch result, a native
``ack``). It has no socket and no knowledge of HTTP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.model import Change
from ..errors import PayloadTooLarge, ProtocolError
from ..wire.envelope import Envelope, EventLimits, parse_event
from ..wire.jsonutil import dumps
from .ids import uuid7
from .tenancy import AuthFailure

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from ..store import Store
    from .ingest import Ingest
    from .metrics import HubMetrics
    from .tenancy import Tenancy

__all__ = [
    "Admission",
    "PublishPolicy",
    "RateRefusal",
    "make_tombstone",
    "purge_namespace",
]

#: Tombstones submitted per ingest call while purging a namespace.
PURGE_CHUNK = 1000

#: An event and where it was in the request (results are reported by that index).
Indexed = tuple[int, Envelope]


@dataclass(frozen=True, slots=True)
class RateRefusal:
    """An event refused by its namespace's rate limit; ``wait`` seconds to the next token."""

    wait: float


@dataclass(slots=True)
class Admission:
    """What the policy made of a request's valid events."""

    #: The events to apply, in request order.
    accepted: list[Indexed]
    #: The refused ones, each with why.
    refused: list[tuple[int, Envelope, AuthFailure | RateRefusal]]


class PublishPolicy:
    """Limits, authorization and rate limits of publishing. See the module docstring."""

    def __init__(
        self,
        limits: EventLimits,
        tenancy: Tenancy,
        metrics: HubMetrics,
        clock: Callable[[], float],
    ) -> None:
        #: Property count, value size and nesting depth of one event.
        self.limits = limits
        self.tenancy = tenancy
        self.metrics = metrics
        self.clock = clock

    def now_ms(self) -> int:
        """The hub's time, in Flux's milliseconds."""
        return math.floor(self.clock() * 1000)

    def parse(self, raw: Any, now_ms: int) -> Envelope:
        """One event checked against the limits (a new ``eventId`` if it has none).

        Raises:
            ProtocolError: the event breaks a rule (``PayloadTooLarge`` for a limit).
        """
        return parse_event(raw, now_ms=now_ms, new_id=lambda: uuid7(now_ms), limits=self.limits)

    def parse_many(
        self, raws: Sequence[Any], now_ms: int
    ) -> tuple[list[Indexed], list[tuple[int, Any, ProtocolError]]]:
        """Every event of a request: the valid ones and the failures, by index."""
        valid: list[Indexed] = []
        failed: list[tuple[int, Any, ProtocolError]] = []
        for index, raw in enumerate(raws):
            try:
                valid.append((index, self.parse(raw, now_ms)))
            except PayloadTooLarge as exc:
                self.metrics.rejected["too_large"] += 1
                failed.append((index, raw, exc))
            except ProtocolError as exc:
                self.metrics.rejected["invalid"] += 1
                failed.append((index, raw, exc))
        return valid, failed

    async def admit(
        self,
        valid: Sequence[Indexed],
        authorize: Callable[[str | None], Awaitable[str | None]],
    ) -> Admission:
        """Authorize each event, then take each namespace's rate limit for its events.

        Args:
            valid: events that passed :meth:`parse`, with their request index.
            authorize: the transport's credential check for one entity id (it knows
                where the token came from); returns the namespace to rate-limit, or
                None for none, and raises :class:`AuthFailure` to refuse.
        """
        refused: list[tuple[int, Envelope, AuthFailure | RateRefusal]] = []
        by_namespace: dict[str | None, list[Indexed]] = {}
        for index, envelope in valid:
            try:
                namespace = await authorize(envelope.entity_id)
            except AuthFailure as exc:
                self.metrics.rejected[exc.code] += 1
                refused.append((index, envelope, exc))
                continue
            by_namespace.setdefault(namespace, []).append((index, envelope))
        accepted: list[Indexed] = []
        for namespace, items in by_namespace.items():
            granted, wait = len(items), 0.0
            if namespace is not None:
                granted, wait = await self.tenancy.take(namespace, len(items))
            accepted += items[:granted]
            for index, envelope in items[granted:]:
                self.metrics.rejected["rate_limited"] += 1
                refused.append((index, envelope, RateRefusal(wait)))
        accepted.sort(key=lambda item: item[0])
        return Admission(accepted, refused)

    def admit_open(self, valid: Sequence[Indexed]) -> Admission:
        """:meth:`admit` when auth is off: no token, no rate limit, so no await (only
        the hub's own namespace is refused)."""
        return self._admit_each(valid, self.tenancy.authorize_open)

    def admit_trusted(self, valid: Sequence[Indexed]) -> Admission:
        """:meth:`admit` for a writer the admin configured (a connector), in either
        mode: no token, no rate limit; only the hub's own namespace is refused."""
        return self._admit_each(valid, self.tenancy.authorize_trusted)

    def _admit_each(
        self, valid: Sequence[Indexed], authorize: Callable[[str | None], None]
    ) -> Admission:
        accepted: list[Indexed] = []
        refused: list[tuple[int, Envelope, AuthFailure | RateRefusal]] = []
        for index, envelope in valid:
            try:
                authorize(envelope.entity_id)
            except AuthFailure as exc:
                self.metrics.rejected[exc.code] += 1
                refused.append((index, envelope, exc))
                continue
            accepted.append((index, envelope))
        return Admission(accepted, refused)


async def purge_namespace(
    store: Store, ingest: Ingest, name: str, now_ms: Callable[[], int]
) -> int:
    """Delete every entity of a namespace with tombstones (subscribers hear of it).

    Returns:
        How many entities were deleted.
    """
    deleted = 0
    prefix = name + "/"
    while True:
        ids = await store.list_ids(prefix, PURGE_CHUNK)
        if not ids:
            return deleted
        now = now_ms()
        results = await ingest.submit([make_tombstone(i, now) for i in ids])
        deleted += sum(1 for r in results if r.delta_position)


def make_tombstone(entity_id: str, now: int) -> Envelope:
    """The event Flux publishes to delete an entity (FLUX_COMPAT.md §1.7)."""
    event_id = uuid7(now)
    payload = {
        "entity_id": entity_id,
        "properties": {"__deleted__": True, "__deleted_at__": now},
    }
    stored = {
        "eventId": event_id,
        "stream": "flux.events.deletions",
        "source": "api",
        "timestamp": now,
        "key": entity_id,
        "payload": payload,
    }
    change = Change.from_parts(
        entity_id, {"__deleted__": b"true", "__deleted_at__": b"%d" % now}, source="api"
    )
    return Envelope(event_id, "flux.events.deletions", "api", now, entity_id, change, dumps(stored))
