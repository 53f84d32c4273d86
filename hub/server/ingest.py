"""Coalescing publishes into reduce-script calls.

Every publish (REST single or batch, WebSocket frame) is queued here; one task takes
everything waiting (up to ``max_batch`` events) and applies it with one script call per
partition. Under load, batches grow by themselves while the previous call runs, so the
per-command cost of redis-py is paid per batch, not per event (DESIGN.md §9).

Ordering: one call at a time, in queue order, so events are applied in the order their
publishes were submitted — a client that pipelines publishes without waiting for the
acknowledgements still has them applied in its order.

Bound: at most ``queue_size`` submissions wait; past that, :meth:`Ingest.submit` waits
for room (backpressure reaches the client as a slower acknowledgement).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from ..core.model import OutcomeStatus
from ..errors import Closed, LogUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ..store import Applied, Store, Submission
from .metrics import HubMetrics

__all__ = ["Ingest", "Ticket"]

_OUTCOMES = {OutcomeStatus.APPLIED: "ok", OutcomeStatus.DUPLICATE: "duplicate"}

logger = logging.getLogger("hub.ingest")


@dataclass(slots=True)
class Ticket:
    """A queued submission; :meth:`result` waits until Redis has applied it."""

    items: Sequence[Submission]
    done: anyio.Event
    applied: list[Applied] | None = None
    error: BaseException | None = None

    async def result(self) -> list[Applied]:
        """The outcomes, in submission order.

        Raises:
            LogUnavailable: as for :meth:`Ingest.submit`.
            Closed: the hub shut down before applying it.
        """
        await self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.applied is not None
        return self.applied


class Ingest:
    """Queue of publishes and the task that applies them.

    Run :meth:`run` in a task group; call :meth:`submit` from anywhere.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_batch: int,
        queue_size: int,
        clock: Callable[[], float],
        metrics: HubMetrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics if metrics is not None else HubMetrics()
        self.max_batch = max_batch
        self.clock = clock
        send: MemoryObjectSendStream[Ticket]
        receive: MemoryObjectReceiveStream[Ticket]
        send, receive = anyio.create_memory_object_stream[Ticket](queue_size)
        self._send = send
        self._receive = receive
        # Statistics.
        self.batches = 0
        self.events = 0

    async def submit(self, items: Sequence[Submission]) -> list[Applied]:
        """Apply events, in order; returns when Redis has applied them.

        Raises:
            LogUnavailable: Redis failed; none of these events was applied... unless
                the failure came after Redis ran the script (a lost reply), which the
                client can only tell by retrying with the same ``eventId``.
            Closed: the hub is shutting down.
        """
        if not items:
            return []
        return await (await self.enqueue(items)).result()

    async def enqueue(self, items: Sequence[Submission]) -> Ticket:
        """Queue events without waiting for them to be applied (waiting only for room
        in the queue): a caller can prepare its next submission meanwhile. Tickets
        are applied in the order they were queued.

        Raises:
            Closed: the hub is shutting down.
        """
        ticket = Ticket(items, anyio.Event())
        try:
            await self._send.send(ticket)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise Closed("the hub is shutting down") from None
        return ticket

    def close(self) -> None:
        """Close the queue without running (when the hub fails to start)."""
        self._send.close()
        self._receive.close()

    def statistics(self) -> tuple[int, int]:
        """``(submissions waiting, capacity)``."""
        stats = self._receive.statistics()
        return stats.current_buffer_used, int(stats.max_buffer_size)

    async def run(self) -> None:
        """Apply queued publishes until cancelled."""
        async with self._receive:
            try:
                async for first in self._receive:
                    batch = [first]
                    count = len(first.items)
                    while count < self.max_batch:
                        try:
                            nxt = self._receive.receive_nowait()
                        except anyio.WouldBlock:
                            break
                        batch.append(nxt)
                        count += len(nxt.items)
                    await self._apply(batch)
            finally:
                # Wake everyone still waiting: the hub is going away.
                self._send.close()
                while True:
                    try:
                        left = self._receive.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                    left.error = Closed("the hub is shutting down")
                    left.done.set()

    async def _apply(self, batch: list[Ticket]) -> None:
        items = [item for ticket in batch for item in ticket.items]
        now_ms = math.floor(self.clock() * 1000)
        started = time.perf_counter()
        try:
            with anyio.CancelScope(shield=True):
                # Shielded: once sent, the reply must reach the publishers.
                results = await self.store.apply(items, now_ms)
        except LogUnavailable as exc:
            self.metrics.rejected["unavailable"] += len(items)
            logger.warning("applying %d events failed: %s", len(items), exc)
            for ticket in batch:
                ticket.error = exc
                ticket.done.set()
            return
        self.metrics.redis_apply.observe(time.perf_counter() - started)
        self.batches += 1
        self.events += len(items)
        for result in results:
            if result.status is OutcomeStatus.CONFLICT:
                self.metrics.rejected["conflict"] += 1
            else:
                self.metrics.accepted[_OUTCOMES[result.status]] += 1
        start = 0
        for ticket in batch:
            end = start + len(ticket.items)
            ticket.applied = results[start:end]
            start = end
            ticket.done.set()
