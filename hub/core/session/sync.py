"""One subscription's hand-off from a snapshot or a catch-up to live deltas.

A subscription is *live* (each delta the fan-out dispatches goes out) or *holding*
(its snapshot or catch-up is being read: dispatched deltas are kept, up to
``max_held``). The hand-off happens in one step, with no await between reading the
last page and going live, so nothing is lost or sent twice:

- after a **catch-up** (resume from a cursor), the held deltas newer than what the
  catch-up sent go out, and live deltas at or before that point are dropped;
- after a **snapshot**, the held deltas the snapshot does not reflect go out, and until
  the fan-out has passed every page's position, live deltas the snapshot reflects are
  dropped (:class:`~hub.core.handoff.SnapshotCut`).

A held buffer that overflows starts the subscription over (a ``reset``); after
:data:`MAX_RESETS` in a row the connection gives up (the client cannot keep up).
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Final

from ..cursor import Position

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..handoff import SnapshotCut
    from ..index import Pattern
    from ..model import Delta

__all__ = [
    "DELIVER",
    "HOLD",
    "MAX_RESETS",
    "OVERFLOW",
    "SKIP",
    "CatchUp",
    "SubscriptionSync",
    "Verdict",
]

#: Resets in a row (held buffer overflowing) before the connection is closed.
MAX_RESETS = 3

#: A delta and where it is in the log.
Held = tuple["Delta", Position]


class Verdict(IntEnum):
    """What to do with a delta the fan-out dispatched to a subscription."""

    #: Send it (or conflate it, if the connection is behind).
    DELIVER = 0
    #: Kept for the hand-off: nothing to do now.
    HOLD = 1
    #: Already sent, reflected by the snapshot, or outside what the reader may see.
    SKIP = 2
    #: Kept, but the held buffer is now over its bound: reset or give up.
    OVERFLOW = 3


# The verdicts as module constants: reading an enum member from its class costs about
# 120 ns on CPython 3.11, and a verdict is returned and compared once per delivery.
DELIVER: Final = Verdict.DELIVER
HOLD: Final = Verdict.HOLD
SKIP: Final = Verdict.SKIP
OVERFLOW: Final = Verdict.OVERFLOW


class SubscriptionSync:
    """The hand-off state of one subscription (see the module docstring)."""

    __slots__ = (
        "closed",
        "cut",
        "direct",
        "holding",
        "max_held",
        "name",
        "patterns",
        "read_scope",
        "resets",
        "sent_upto",
    )

    def __init__(
        self, name: str, patterns: Sequence[Pattern], read_scope: str, max_held: int
    ) -> None:
        self.name = name
        self.patterns = list(patterns)
        #: Under private reads, the ids this subscription may see start with this.
        self.read_scope = read_scope
        self.max_held = max_held
        #: Deltas dispatched while the snapshot or catch-up is read; None when live.
        self.holding: list[Held] | None = None
        #: Per partition, the last position a catch-up sent: live deltas at or before
        #: it are not sent again.
        self.sent_upto: dict[int, Position] = {}
        #: After a snapshot, until the fan-out has passed every page position.
        self.cut: SnapshotCut | None = None
        self.resets = 0
        self.closed = False
        #: Every delta offered would be delivered: live, nothing sent by a catch-up
        #: to skip, no snapshot cut, no read scope. The shell reads this flag on the
        #: hot path instead of calling :meth:`offer` (the same rule, kept here).
        self.direct = not read_scope

    def _update_direct(self) -> None:
        self.direct = (
            self.holding is None
            and not self.sent_upto
            and self.cut is None
            and not self.read_scope
            and not self.closed
        )

    def matches(self, entity_id: str) -> bool:
        """Whether a delta of ``entity_id`` belongs to this subscription."""
        return entity_id.startswith(self.read_scope) and any(
            p.matches(entity_id) for p in self.patterns
        )

    @property
    def synced(self) -> bool:
        """Live, with an exact cursor: what a checkpoint may be sent to."""
        return self.holding is None and self.cut is None

    def offer(self, delta: Delta, position: Position) -> Verdict:
        """A delta the fan-out dispatched to this subscription (its id matched)."""
        if self.read_scope and not delta.entity_id.startswith(self.read_scope):
            return SKIP  # a glob that reaches outside the reader's namespace
        holding = self.holding
        if holding is not None:
            holding.append((delta, position))
            return OVERFLOW if len(holding) > self.max_held else HOLD
        if self.sent_upto:  # (empty unless after a catch-up: checked first, it is cheap)
            upto = self.sent_upto.get(position.partition)
            if upto is not None and position <= upto:
                return SKIP
        if self.cut is not None and self.cut.reflected(delta.entity_id, position):
            return SKIP
        return DELIVER

    def hold(self) -> None:
        """Start (or start over) reading a snapshot or catching up: hold live deltas."""
        self.holding = []
        self.cut = None
        self.sent_upto = {}
        self.direct = False

    def overflowed(self) -> bool:
        """The held buffer overflowed: True to give up (too many resets in a row),
        False to start over with a snapshot."""
        self.resets += 1
        return self.resets > MAX_RESETS

    def finish_catch_up(self, sent: dict[int, Position]) -> list[Held]:
        """A catch-up sent every delta up to ``sent``: go live.

        Returns:
            The held deltas to send now, oldest first: those after ``sent``.
            ``sent`` is advanced past them and is the cursor the client is at.
        """
        held, self.holding = self.holding or [], None
        out: list[Held] = []
        for delta, position in held:
            if position > sent[position.partition]:
                out.append((delta, position))
                sent[position.partition] = position
        self.sent_upto = sent
        self.resets = 0
        self._update_direct()
        return out

    def finish_snapshot(self, cut: SnapshotCut) -> list[Held]:
        """Every snapshot page was sent: go live, dropping what the pages reflect.

        Returns:
            The held deltas the snapshot does not reflect, oldest first. The client
            has no exact cursor until :meth:`passed_cut`.
        """
        held, self.holding = self.holding or [], None
        self.cut = cut
        self.direct = False
        return [(d, p) for d, p in held if not cut.reflected(d.entity_id, p)]

    def passed_cut(self) -> None:
        """The fan-out has passed every position the snapshot was read at."""
        self.cut = None
        self.resets = 0
        self._update_direct()

    def close(self) -> None:
        self.closed = True
        self.holding = None
        self.direct = False


class CatchUp:
    """Reading the delta log from a cursor, partition by partition, for a resume.

    Feed it each batch read; it says which deltas to send, and notices when trimming
    overtook the reader (the sequence numbers jump): then the subscription must start
    over from a snapshot.
    """

    def __init__(self, cursor: dict[int, Position]) -> None:
        #: Per partition, the position of the last delta read (the next read's start).
        self.sent = dict(cursor)
        self._expected: dict[int, int] = {}

    def accept(
        self, partition: int, deltas: Sequence[Delta], sync: SubscriptionSync
    ) -> list[Held] | None:
        """The deltas of one read, to send in order; None if some were trimmed
        between this read and the previous one."""
        if not deltas:
            return []
        expected = self._expected.get(partition)
        if expected is not None and deltas[0].seq != expected:
            return None
        self._expected[partition] = deltas[-1].seq + 1
        out: list[Held] = []
        for delta in deltas:
            position = Position.of(partition, delta.position)
            self.sent[partition] = position
            if sync.matches(delta.entity_id):
                out.append((delta, position))
        return out
