"""Acks of pipelined publishes: in submission order, whatever order Redis settles them.

A publish frame's events are checked first (limits, authorization, rate limit: each
refusal is that event's result); the accepted ones go to Redis in a submission with
the frames queued beside it. Several submissions may wait for Redis at once, and the
ingest may settle them in any order; :class:`AckOrder` releases them oldest first, so
the acks (and the refusals of frames refused whole) keep the order the frames came in.

Each accepted event's result is its outcome: ``ok`` or ``duplicate`` with the entity's
version and the delta's position, ``conflict`` with the version that won, or
``unavailable`` when Redis could not apply it. The newest position of the connection's
own writes is kept per partition, so that a later live subscription starts after them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ...wire.replies import Ack, ErrorReply
from ..cursor import Position
from ..model import OutcomeStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ...wire.envelope import Envelope
    from ...wire.frames import Ref

__all__ = [
    "AckOrder",
    "Applied",
    "PreparedPublish",
    "acknowledge",
    "event_failure",
    "event_refusal",
]

T = TypeVar("T")

#: One event's result in an ack (None until known).
Result = dict[str, Any] | None


class Applied(Protocol):
    """What the store says of one applied event (``hub.store.Applied``)."""

    @property
    def status(self) -> OutcomeStatus: ...
    @property
    def version(self) -> int: ...
    @property
    def delta_position(self) -> str: ...
    @property
    def partition(self) -> int: ...


@dataclass(slots=True)
class PreparedPublish:
    """A publish frame after its checks, waiting for Redis."""

    ref: Ref
    #: Per event: the refusal, or None for an accepted event (filled by the ack).
    results: list[Result] = field(default_factory=list)
    #: The accepted events with their index in the frame, in order.
    accepted: list[tuple[int, Envelope]] = field(default_factory=list)
    #: Why the whole frame is refused (too many events); None if it is not.
    refusal: str | None = None


class AckOrder(Generic[T]):
    """Submissions waiting for their acks, released oldest first."""

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: deque[T] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, submission: T) -> None:
        self._queue.append(submission)

    def settled(self, is_settled: Callable[[T], bool]) -> list[T]:
        """The submissions at the head that are settled, removed, oldest first.

        One still waiting for Redis holds back every later one, settled or not.
        """
        queue = self._queue
        out: list[T] = []
        while queue and is_settled(queue[0]):
            out.append(queue.popleft())
        return out

    def clear(self) -> None:
        self._queue.clear()


def acknowledge(
    submission: Sequence[PreparedPublish],
    outcome: Sequence[Applied] | str,
    written: dict[int, Position],
) -> list[Ack | ErrorReply]:
    """The replies to a submission's frames, in order.

    Args:
        submission: the frames submitted together.
        outcome: what Redis made of their accepted events, in order; or why it could
            not apply them (the message of an ``unavailable`` result).
        written: per partition, the newest delta of the connection's own writes;
            advanced past this submission's.
    """
    replies: list[Ack | ErrorReply] = []
    start = 0
    for prepared in submission:
        if prepared.refusal is not None:
            # Refused whole; said now, in its turn, so replies keep frame order.
            replies.append(ErrorReply(prepared.ref, "too_many_events", prepared.refusal))
            continue
        results = prepared.results
        accepted = prepared.accepted
        if isinstance(outcome, str):
            for index, envelope in accepted:
                results[index] = _error(envelope.event_id, "unavailable", outcome)
        else:
            applied = outcome[start : start + len(accepted)]
            start += len(accepted)
            for (index, envelope), result in zip(accepted, applied, strict=True):
                results[index] = _result(envelope.event_id, result, written)
        replies.append(Ack(prepared.ref, results))
    return replies


def _result(event_id: str, result: Applied, written: dict[int, Position]) -> dict[str, Any]:
    position = None
    if result.delta_position:
        at = Position.of(result.partition, result.delta_position)
        newest = written.get(result.partition)
        if newest is None or at > newest:
            written[result.partition] = at
        position = str(at)
    if result.status is OutcomeStatus.CONFLICT:
        return {
            "eventId": event_id,
            "error": {"code": "conflict", "message": f"entity is at version {result.version}"},
            "version": result.version,
        }
    return {
        "eventId": event_id,
        "status": "duplicate" if result.status is OutcomeStatus.DUPLICATE else "ok",
        "version": result.version,
        "position": position,
    }


def _error(event_id: str | None, code: str, message: str) -> dict[str, Any]:
    return {"eventId": event_id, "error": {"code": code, "message": message}}


def event_failure(raw: Any, code: str, message: str) -> dict[str, Any]:
    """The result of an event refused before it had an id of the hub's: the client's
    ``eventId`` if it gave a usable one, else null."""
    event_id = raw.get("eventId") if isinstance(raw, dict) else None
    return _error(event_id if isinstance(event_id, str) and event_id else None, code, message)


def event_refusal(envelope: Envelope, code: str, message: str) -> dict[str, Any]:
    """The result of a parsed event refused (authorization, rate limit)."""
    return _error(envelope.event_id, code, message)
