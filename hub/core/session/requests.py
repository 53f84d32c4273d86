"""The order a native connection's requests are handled in, and its request bound.

Requests are handled one at a time, in the order sent, so replies keep that order.
Two refinements keep publishing fast without breaking it:

- **pipelining**: publish frames queued back to back are taken together (up to
  ``max_events`` events) as one submission to Redis, and up to ``in_flight_limit``
  submissions may wait for Redis at once; their acks still go out in order
  (:mod:`.acks`). Any other request waits until every publish before it is
  acknowledged, so a ``get`` sees the connection's own writes;
- **fast path**: a publish frame with nothing queued or in progress ahead of it may be
  submitted straight from the socket's callback, a turn of the loop sooner.

Bound: at ``max_pending`` queued requests, reading the socket pauses (TCP
backpressure); it resumes once the queue is under half of that. Reading is never left
paused with the queue emptied: that would hang the connection.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...wire.frames import PublishFrame

if TYPE_CHECKING:
    from ...wire.frames import ClientFrame

__all__ = ["RequestQueue", "Work"]


@dataclass(slots=True)
class Work:
    """The next thing to handle: publish frames submitted together, or one request."""

    publishes: list[PublishFrame] = field(default_factory=list)
    request: ClientFrame | None = None
    #: Reading was paused and may resume now.
    resume_reading: bool = False


class RequestQueue:
    """Queued requests of one connection (see the module docstring)."""

    __slots__ = ("busy", "in_flight_limit", "max_events", "max_pending", "paused", "queue")

    def __init__(self, max_pending: int, max_events: int, in_flight_limit: int) -> None:
        self.max_pending = max_pending
        self.max_events = max_events
        self.in_flight_limit = in_flight_limit
        self.queue: deque[ClientFrame] = deque()
        #: A request taken by :meth:`take` is being handled.
        self.busy = False
        #: Reading the socket is paused for backpressure.
        self.paused = False

    def can_publish_now(self, in_flight: int) -> bool:
        """Whether a publish frame arriving now may skip the queue: nothing is queued
        or being handled before it, and with ``in_flight`` submissions waiting for
        their acks, the in-flight bound has room."""
        return not self.queue and not self.busy and in_flight < self.in_flight_limit

    def push(self, frame: ClientFrame) -> bool:
        """Queue a request. Returns True if reading must pause now."""
        self.queue.append(frame)
        if len(self.queue) >= self.max_pending and not self.paused:
            self.paused = True
            return True
        return False

    def take(self) -> Work | None:
        """The next work, in order; None (and not busy) when the queue is empty."""
        queue = self.queue
        if not queue:
            self.busy = False
            return None
        self.busy = True
        frame = queue.popleft()
        work = Work()
        if isinstance(frame, PublishFrame):
            # Publish frames right behind it join the submission, up to max_events.
            work.publishes.append(frame)
            count = len(frame.events)
            while queue and isinstance(queue[0], PublishFrame):
                nxt = queue[0]
                if count + len(nxt.events) > self.max_events:
                    break
                queue.popleft()
                work.publishes.append(nxt)
                count += len(nxt.events)
        else:
            work.request = frame
        # After taking frames off the queue (several, for publishes), not before: with
        # the queue emptied and reading still paused, nothing would wake us again.
        if self.paused and len(queue) <= self.max_pending // 2:
            self.paused = False
            work.resume_reading = True
        return work

    def over_in_flight(self, in_flight: int) -> bool:
        """With ``in_flight`` submissions waiting for acks, whether the next must wait
        for one to be acknowledged before being taken."""
        return in_flight > self.in_flight_limit

    def clear(self) -> None:
        self.queue.clear()
