"""What the store hands back: typed batches, not Redis reply shapes.

Callers (the engine, the transports) read fields with names; how Redis spelled the
reply stays inside this package (:mod:`hub.store.decode`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .decode import decode_delta, entry_seq

if TYPE_CHECKING:
    from ..core.model import Change, Delta, Entity, OutcomeStatus

__all__ = [
    "Applied",
    "DeltaBatch",
    "LogHead",
    "NamespaceTotals",
    "SnapshotPage",
    "Submission",
    "Totals",
]


class Submission(Protocol):
    """What :meth:`Store.apply` needs of an event."""

    @property
    def change(self) -> Change: ...

    @property
    def stored(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Applied:
    """The store's answer for one event."""

    status: OutcomeStatus
    #: Entity version after the event (conflict: its current version).
    version: int
    #: Delta-log id, or "" when the event produced no delta.
    delta_position: str
    #: Event-log id, or "" for a conflict.
    event_position: str
    partition: int = 0


@dataclass(frozen=True, slots=True)
class DeltaBatch:
    """Delta-log entries of one partition read in one call, oldest first.

    Kept undecoded: decoding costs, and the fan-out pays it only when someone
    listens (:meth:`deltas`). Empty when a blocking read timed out.
    """

    partition: int
    #: ``(position, [field, value, ...])`` as Redis sent them.
    entries: list[tuple[bytes, list[bytes]]]

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def last_position(self) -> str:
        """The position of the newest entry (the batch must not be empty)."""
        return self.entries[-1][0].decode()

    @property
    def first_seq(self) -> int:
        """The sequence number of the oldest entry (0 for entries written before
        sequence numbers existed)."""
        return entry_seq(self.entries[0][1])

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest entry."""
        return entry_seq(self.entries[-1][1])

    def deltas(self) -> list[Delta]:
        """Every entry decoded."""
        return [decode_delta(position, flat) for position, flat in self.entries]


@dataclass(frozen=True, slots=True)
class SnapshotPage:
    """Live entities read atomically with the delta-log head of their partition."""

    entities: list[Entity]
    #: The delta-log position the page reflects: a delta after it is news.
    head: str
    #: The last id read, to ask for the next page; None when nothing follows.
    last: str | None = None


@dataclass(frozen=True, slots=True)
class LogHead:
    """The newest delta of a partition (``"0-0"`` and the last sequence number when
    the log is empty)."""

    position: str
    seq: int


@dataclass(frozen=True, slots=True)
class Totals:
    """Figures over every partition."""

    entities: int
    """Live entities."""
    events: int
    """Events accepted, all time."""


@dataclass(frozen=True, slots=True)
class NamespaceTotals:
    """One namespace's figures over every partition."""

    entities: int
    """Live entities."""
    last_update_ms: int
    """When one of its entities last changed (0: never)."""
