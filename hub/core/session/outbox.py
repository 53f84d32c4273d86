"""A slow consumer's deltas: sent at once, or merged per entity until the socket drains.

While the socket is writable and nothing is pending, a delta goes out as it comes.
Once the transport asks us to stop writing (its buffer is past
``conflate_after_bytes``), deltas are merged per (subscription, entity) instead of
queued (:func:`hub.core.conflate.merge`): memory is bounded by the entities pending,
not the deltas. When the socket drains, the merged deltas go out marked
``conflated``, then a ``checkpoint`` for each live subscription they touched.

Bound: more than ``max_pending`` merged deltas and the connection is closed
(``Overloaded``, close 1013): the client resumes from its cursor.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Generic, TypeVar

from ..conflate import merge

if TYPE_CHECKING:
    from ..cursor import Position
    from ..model import Delta

__all__ = ["Admit", "Outbox"]

#: The subscription a pending delta belongs to (the shell's object).
S = TypeVar("S")


class Admit(IntEnum):
    """What became of a delta given to the outbox."""

    #: Send it now.
    SEND = 0
    #: Merged into what is pending for its entity (or now pending itself).
    PENDING = 1
    #: Over the bound: close the connection (everything pending was dropped).
    OVERLOADED = 2


class Outbox(Generic[S]):
    """Conflation state of one connection (see the module docstring)."""

    __slots__ = ("conflated", "max_pending", "paused", "pending")

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        #: Whether the transport asked us to stop writing.
        self.paused = False
        #: Merged deltas waiting for the socket to drain, in arrival order.
        self.pending: dict[tuple[str, str], tuple[S, Delta, Position]] = {}
        #: Deltas merged into another so far (a statistic).
        self.conflated = 0

    @property
    def behind(self) -> bool:
        """Paused, or still holding merged deltas: a checkpoint now would be a lie."""
        return self.paused or bool(self.pending)

    def admit(self, sub: S, name: str, delta: Delta, position: Position) -> Admit:
        """A delta for subscription ``name`` (object ``sub``) to send."""
        if not self.paused and not self.pending:
            return Admit.SEND
        key = (name, delta.entity_id)
        earlier = self.pending.get(key)
        if earlier is None:
            if len(self.pending) >= self.max_pending:
                self.pending.clear()
                return Admit.OVERLOADED
            self.pending[key] = (sub, delta, position)
            return Admit.PENDING
        self.conflated += 1
        merged = merge(earlier[1], delta)
        if merged is None:  # created and deleted while pending: the client never sees it
            del self.pending[key]
        else:
            self.pending[key] = (sub, merged, position)
        return Admit.PENDING

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> list[tuple[S, Delta, Position]]:
        """The socket drained: the merged deltas to send now, in arrival order."""
        self.paused = False
        items, self.pending = list(self.pending.values()), {}
        return items

    def forget(self, name: str) -> None:
        """Drop what is pending for a subscription that starts over."""
        for key in [k for k in self.pending if k[0] == name]:
            del self.pending[key]

    def clear(self) -> None:
        self.pending.clear()
