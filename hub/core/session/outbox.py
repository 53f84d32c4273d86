"""A slow consumer's deltas: sent at once, or merged per entity until the socket drains.

While the socket is writable and nothing is pending, a delta goes out as it comes.
Once the transport asks us to stop writing (its buffer is past
``conflate_after_bytes``), deltas are merged per (subscription, entity) instead of
queued (:func:`hub.core.conflate.merge`): memory is bounded by the entities pending,
not the deltas. When the socket drains, the merged deltas go out marked
``conflated``, then a ``checkpoint`` for each live subscription they touched.

Bound: more than ``max_pending`` merged deltas and the connection is closed
(``Overloaded``, close 1013): the client resumes from its cursor.

A subscription's ``synced`` must not overtake merged deltas: its cursor covers them,
so a client that dropped the connection right after it, and resumed from it, would
never get them. While the outbox is behind, :meth:`Outbox.may_send_synced` holds it;
:meth:`Outbox.take_held` gives the held ones back once the merged deltas went out.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from ..conflate import merge

if TYPE_CHECKING:
    from ..cursor import Position
    from ..model import Delta

__all__ = ["OVERLOADED", "PENDING", "SEND", "Admit", "Outbox"]

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


# Module constants: reading an enum member from its class costs about 120 ns on
# CPython 3.11, and the answer is compared once per delivery.
SEND: Final = Admit.SEND
PENDING: Final = Admit.PENDING
OVERLOADED: Final = Admit.OVERLOADED


class Outbox(Generic[S]):
    """Conflation state of one connection (see the module docstring)."""

    __slots__ = ("conflated", "direct", "held", "max_pending", "paused", "pending")

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        #: Whether the transport asked us to stop writing.
        self.paused = False
        #: Merged deltas waiting for the socket to drain, in arrival order.
        self.pending: dict[tuple[str, str], tuple[S, Delta, Position]] = {}
        #: Deltas merged into another so far (a statistic).
        self.conflated = 0
        #: Writable and nothing pending: :meth:`admit` would say ``SEND``. The shell
        #: reads this flag on the hot path instead of calling it (the same rule).
        self.direct = True
        #: Subscriptions whose ``synced`` waits for the merged deltas, in order.
        self.held: dict[str, None] = {}

    @property
    def behind(self) -> bool:
        """Paused, or still holding merged deltas: a checkpoint now would be a lie."""
        return not self.direct

    def admit(self, sub: S, name: str, delta: Delta, position: Position) -> Admit:
        """A delta for subscription ``name`` (object ``sub``) to send."""
        if self.direct:
            return SEND
        key = (name, delta.entity_id)
        earlier = self.pending.get(key)
        if earlier is None:
            if len(self.pending) >= self.max_pending:
                self.clear()
                return OVERLOADED
            self.pending[key] = (sub, delta, position)
            return PENDING
        self.conflated += 1
        merged = merge(earlier[1], delta)
        if merged is None:  # created and deleted while pending: the client never sees it
            del self.pending[key]
            self.direct = not self.paused and not self.pending
        else:
            self.pending[key] = (sub, merged, position)
        return PENDING

    def may_send_synced(self, name: str) -> bool:
        """Whether subscription ``name``'s ``synced`` may go now; if not, it is held."""
        if self.direct:
            return True
        self.held[name] = None
        return False

    def take_held(self) -> list[str]:
        """The subscriptions whose ``synced`` was held, once nothing is pending."""
        if not self.direct:
            return []
        names, self.held = list(self.held), {}
        return names

    def pause(self) -> None:
        self.paused = True
        self.direct = False

    def resume(self) -> list[tuple[S, Delta, Position]]:
        """The socket drained: the merged deltas to send now, in arrival order."""
        self.paused = False
        self.direct = True
        items, self.pending = list(self.pending.values()), {}
        return items

    def forget(self, name: str) -> None:
        """Drop what is pending for a subscription that starts over."""
        for key in [k for k in self.pending if k[0] == name]:
            del self.pending[key]
        self.held.pop(name, None)
        self.direct = not self.paused and not self.pending

    def clear(self) -> None:
        self.pending.clear()
        self.held.clear()
        self.direct = not self.paused
