"""Coalescing publishes into reduce-script calls.

Every publish (REST single or batch, WebSocket frame) is queued here; one task takes
everything waiting (up to ``max_batch`` events) and applies it with one script call per
partition. Under load, batches grow by themselves while the calls in flight run, so the
per-command cost of redis-py is paid per batch, not per event (DESIGN.md §9).

Ordering: calls are sent in queue order on one connection (hub/store/ordered.py), so
events are applied in the order their publishes were submitted — a client that
pipelines publishes without waiting for the acknowledgements still has them applied in
its order. Up to ``DEPTH`` calls are in flight: Redis runs one while the hub reads the
previous reply and sends the next, instead of the two taking turns.

Bound: at most ``queue_size`` submissions wait; past that, :meth:`Ingest.submit` waits
for room (backpressure reaches the client as a slower acknowledgement).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from ..core.model import OutcomeStatus
from ..errors import Closed, LogUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ..store import Applied, PendingApply, Store, Submission
from .metrics import HubMetrics

__all__ = ["Ingest", "Ticket"]

_OUTCOMES = {OutcomeStatus.APPLIED: "ok", OutcomeStatus.DUPLICATE: "duplicate"}

#: Script calls sent and not answered yet: one being answered while the next is sent.
#: More would only make the batches smaller.
DEPTH = 2
#: Fewest events worth a call of their own while another is in flight. Fewer wait for
#: its reply (a call has ~60 µs of fixed cost: sending every single-event publish at
#: once cut their rate by 19 %).
PIPELINE_MIN = 64

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


@dataclass(slots=True)
class _Sent:
    """A batch sent to Redis, waiting for its reply."""

    batch: list[Ticket]
    count: int
    pending: PendingApply
    started: float


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
        depth: int = DEPTH,
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
        self.depth = depth
        #: Calls sent to Redis that nobody is settling yet, oldest first.
        self._in_flight: deque[_Sent] = deque()
        #: Calls sent and not settled (those above, and those being settled): at most
        #: ``depth``.
        self._unanswered = 0
        #: Calls whose reply a task is waiting for now.
        self._settling = 0
        self._sent = anyio.Event()
        self._answered = anyio.Event()
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
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self._settle_in_order)
                    await self._send_batches()
            finally:
                # Calls sent are settled, whatever stopped us: publishers get a reply.
                with anyio.CancelScope(shield=True):
                    while self._in_flight:
                        await self._settle(self._in_flight.popleft())
                # Wake everyone still waiting: the hub is going away.
                self._send.close()
                while True:
                    try:
                        left = self._receive.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                    left.error = Closed("the hub is shutting down")
                    left.done.set()

    async def _send_batches(self) -> None:
        """Take what is queued (up to ``max_batch`` events) and send it to Redis, while
        at most ``depth`` calls are unanswered (and a second one only for at least
        ``PIPELINE_MIN`` events); meanwhile the queue fills, so batches grow with the
        load. While it must wait, this task reads replies itself (the oldest first):
        a waiting hand-off to the other task would cost a turn of the loop per call."""
        while True:
            while self._unanswered >= self.depth:
                await self._wait_for_a_reply()
            try:
                first = await self._receive.receive()
            except anyio.EndOfStream:
                return
            batch = [first]
            try:
                count = len(first.items)
                while True:
                    while count < self.max_batch:
                        try:
                            nxt = self._receive.receive_nowait()
                        except anyio.WouldBlock:
                            break
                        batch.append(nxt)
                        count += len(nxt.items)
                    # A few events are not worth a call of their own beside one in
                    # flight: they wait for its reply, and what queues meanwhile joins.
                    if not self._unanswered or count >= min(PIPELINE_MIN, self.max_batch):
                        break
                    await self._wait_for_a_reply()
                items = [item for ticket in batch for item in ticket.items]
                started = time.perf_counter()
                pending = await self.store.send_apply(items, math.floor(self.clock() * 1000))
            except LogUnavailable as exc:
                self._fail(batch, sum(len(ticket.items) for ticket in batch), exc)
                continue
            except anyio.get_cancelled_exc_class():
                for ticket in batch:
                    ticket.error = Closed("the hub is shutting down")
                    ticket.done.set()
                raise
            self._unanswered += 1
            self._in_flight.append(_Sent(batch, len(items), pending, started))
            sent, self._sent = self._sent, anyio.Event()
            sent.set()

    async def _wait_for_a_reply(self) -> None:
        """Until a call is settled: settle the oldest if nobody is settling one (no
        hand-off), else wait for it (settling a later one here would hold this task
        until that later reply, and only one call would be in flight)."""
        if self._in_flight and not self._settling:
            with anyio.CancelScope(shield=True):
                await self._settle(self._in_flight.popleft())
        else:
            await self._answered.wait()

    async def _settle_in_order(self) -> None:
        """Settle calls while the sending task waits for new publishes."""
        while True:
            while not self._in_flight:
                await self._sent.wait()
            # Shielded: once sent, the reply must reach the publishers.
            with anyio.CancelScope(shield=True):
                await self._settle(self._in_flight.popleft())

    async def _settle(self, sent: _Sent) -> None:
        """Wait for a call's reply (replies are read in the order sent) and settle its
        tickets."""
        self._settling += 1
        try:
            results = await sent.pending.result()
        except LogUnavailable as exc:
            self._fail(sent.batch, sent.count, exc)
            return
        finally:
            self._settling -= 1
            self._unanswered -= 1
            answered, self._answered = self._answered, anyio.Event()
            answered.set()
        self.metrics.redis_apply.observe(time.perf_counter() - sent.started)
        self.batches += 1
        self.events += sent.count
        for result in results:
            if result.status is OutcomeStatus.CONFLICT:
                self.metrics.rejected["conflict"] += 1
            else:
                self.metrics.accepted[_OUTCOMES[result.status]] += 1
        start = 0
        for ticket in sent.batch:
            end = start + len(ticket.items)
            ticket.applied = results[start:end]
            start = end
            ticket.done.set()

    def _fail(self, batch: list[Ticket], count: int, exc: LogUnavailable) -> None:
        self.metrics.rejected["unavailable"] += count
        logger.warning("applying %d events failed: %s", count, exc)
        for ticket in batch:
            ticket.error = exc
            ticket.done.set()
