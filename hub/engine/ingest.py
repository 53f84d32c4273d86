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

On a Redis Cluster being resharded, a call whose partition's slot is moving is held
by the store until the slot has moved (hub/store/moving.py). Its batch is set aside
then: the submissions the other calls answered are settled at once, the others when
their call is, so a moving slot delays only its own partition's publishes. At most
``queue_size`` submissions are set aside so; past that, no batch is sent until some
are settled (every partition's publishes wait, as behind a slow Redis).

The queue and the signals between the tasks are plain asyncio (a deque and
``asyncio.Event``), not anyio's memory stream and events: those yield to the event loop
at every call, even when nothing needs waiting for, and under fan-out every extra turn
of the loop can wait behind a whole dispatch (bench/RESULTS.md, ``publish_ws.py`` (b)).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import anyio

from ..core.model import OutcomeStatus
from ..errors import Closed, LogUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..store import Applied, PendingApply, Store, Submission
from .metrics import HubMetrics

__all__ = ["Ingest", "IngestStatistics", "Ticket"]


@dataclass(frozen=True, slots=True)
class IngestStatistics:
    """The ingest queue, for ``/metrics``."""

    #: Submissions waiting for a script call.
    queued: int
    #: Its bound: past it, publishers wait (REST) or get ``overloaded`` (native).
    capacity: int


_OUTCOMES = {OutcomeStatus.APPLIED: "ok", OutcomeStatus.DUPLICATE: "duplicate"}

#: Script calls sent and not answered yet: one being answered while the next is sent.
#: More would only make the batches smaller.
DEPTH = 2
#: Fewest events worth a call of their own while another is in flight. Fewer wait for
#: its reply (a call has ~60 µs of fixed cost: sending every single-event publish at
#: once cut their rate by 19 %).
PIPELINE_MIN = 64

logger = logging.getLogger("hub.ingest")


@dataclass(slots=True, eq=False)
class Ticket:
    """A queued submission; :meth:`result` waits until Redis has applied it."""

    items: Sequence[Submission]
    #: Called once the ticket is settled (from the task that settles it).
    on_done: Callable[[Ticket], None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    applied: list[Applied] | None = None
    error: LogUnavailable | Closed | None = None

    def finish(
        self, applied: list[Applied] | None = None, error: LogUnavailable | Closed | None = None
    ) -> None:
        """Settle: the outcomes (or why there are none), then ``on_done``."""
        self.applied, self.error = applied, error
        self.done.set()
        if self.on_done is not None:
            try:
                self.on_done(self)
            except Exception:
                # The ingest settles other publishers' tickets next: it must go on.
                logger.exception("a publish acknowledgement failed")

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


@dataclass(slots=True)
class _SetAside:
    """A batch some of whose events wait for a moving Redis Cluster slot."""

    sent: _Sent
    #: Its submissions not settled yet (the others were).
    waiting: list[Ticket]


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
        self.queue_size = queue_size
        self._queue: deque[Ticket] = deque()
        self._closed = False
        #: Set when a ticket was queued (or the queue closed): wakes the sending task.
        self._queued = asyncio.Event()
        #: Set when the queue has room (or closed): wakes submitters waiting for it.
        self._room = asyncio.Event()
        self._room.set()
        self.depth = depth
        #: Calls sent to Redis that nobody is settling yet, oldest first.
        self._in_flight: deque[_Sent] = deque()
        #: Calls sent and not settled (those above, and those being settled): at most
        #: ``depth``.
        self._unanswered = 0
        #: Calls whose reply a task is waiting for now.
        self._settling = 0
        self._sent = asyncio.Event()
        self._answered = asyncio.Event()
        #: Batches waiting for a moving Redis Cluster slot, oldest first, and how many
        #: of their submissions wait: at most ``queue_size``.
        self._aside: deque[_SetAside] = deque()
        self._aside_tickets = 0
        self._set_aside = asyncio.Event()
        #: Whether the store may hold calls back (Redis Cluster).
        self._partial = store.cluster
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

    async def enqueue(
        self, items: Sequence[Submission], on_done: Callable[[Ticket], None] | None = None
    ) -> Ticket:
        """Queue events without waiting for them to be applied (waiting only for room
        in the queue): a caller can prepare its next submission meanwhile. Tickets
        are applied in the order they were queued. ``on_done`` is called with the
        ticket once it is settled.

        Raises:
            Closed: the hub is shutting down.
        """
        while (ticket := self.try_enqueue(items, on_done)) is None:
            self._room.clear()
            await self._room.wait()
        return ticket

    def has_room(self) -> bool:
        """Whether :meth:`try_enqueue` would take a submission now."""
        return len(self._queue) < self.queue_size and not self._closed

    def try_enqueue(
        self, items: Sequence[Submission], on_done: Callable[[Ticket], None] | None = None
    ) -> Ticket | None:
        """:meth:`enqueue` if there is room now (None if not), without an await.

        Raises:
            Closed: the hub is shutting down.
        """
        if self._closed:
            raise Closed("the hub is shutting down")
        if not self.has_room():
            return None
        ticket = Ticket(items, on_done)
        self._queue.append(ticket)
        self._queued.set()
        return ticket

    def close(self) -> None:
        """Close the queue: what waits in it fails with :class:`Closed`, and so does
        every later submission."""
        self._closed = True
        self._queued.set()
        self._room.set()
        while self._queue:
            self._queue.popleft().finish(error=Closed("the hub is shutting down"))

    def statistics(self) -> IngestStatistics:
        """Submissions waiting, and the queue's bound."""
        return IngestStatistics(queued=len(self._queue), capacity=self.queue_size)

    async def run(self) -> None:
        """Apply queued publishes until cancelled."""
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._settle_in_order)
                if self._partial:
                    tasks.start_soon(self._settle_set_aside)
                await self._send_batches()
        finally:
            # Calls sent are settled, whatever stopped us: publishers get a reply.
            with anyio.CancelScope(shield=True):
                while self._in_flight:
                    await self._settle(self._in_flight.popleft())
                while self._aside:
                    await self._settle_rest(self._aside.popleft())
            # Wake everyone still waiting: the hub is going away.
            self.close()

    async def _send_batches(self) -> None:
        """Take what is queued (up to ``max_batch`` events) and send it to Redis, while
        at most ``depth`` calls are unanswered (and a second one only for at least
        ``PIPELINE_MIN`` events); meanwhile the queue fills, so batches grow with the
        load. While it must wait, this task reads replies itself (the oldest first):
        a waiting hand-off to the other task would cost a turn of the loop per call."""
        while True:
            while self._unanswered >= self.depth or self._aside_tickets >= self.queue_size:
                await self._wait_for_a_reply()
            queue = self._queue
            while not queue:
                if self._closed:
                    return
                self._queued.clear()
                await self._queued.wait()
            if self._aside_tickets >= self.queue_size:
                continue  # (set aside while this task waited for the queue)
            batch = [queue.popleft()]
            try:
                count = len(batch[0].items)
                while True:
                    while count < self.max_batch and queue:
                        nxt = queue.popleft()
                        batch.append(nxt)
                        count += len(nxt.items)
                    self._room.set()
                    # A few events are not worth a call of their own beside one in
                    # flight: they wait for its reply, and what queues meanwhile joins.
                    if not self._unanswered or count >= min(PIPELINE_MIN, self.max_batch):
                        break
                    await self._wait_for_a_reply()
                items = [item for ticket in batch for item in ticket.items]
                started = time.perf_counter()
                pending = await self.store.send_apply(items, math.floor(self.clock() * 1000))
            except LogUnavailable as exc:
                self._fail(batch, count, exc)
                continue
            except anyio.get_cancelled_exc_class():
                for ticket in batch:
                    ticket.finish(error=Closed("the hub is shutting down"))
                raise
            self._unanswered += 1
            self._in_flight.append(_Sent(batch, len(items), pending, started))
            sent, self._sent = self._sent, asyncio.Event()
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
            if self._partial:
                outcomes = await sent.pending.partial()
                if sent.pending.held:
                    self._set_aside_batch(sent, outcomes)
                    return
                results = cast("list[Applied]", outcomes)
            else:
                results = await sent.pending.result()
        except LogUnavailable as exc:
            self._fail(sent.batch, sent.count, exc)
            return
        finally:
            self._settling -= 1
            self._unanswered -= 1
            self._wake_senders()
        self._count(sent, results)
        start = 0
        for ticket in sent.batch:
            end = start + len(ticket.items)
            ticket.finish(results[start:end])
            start = end

    def _wake_senders(self) -> None:
        answered, self._answered = self._answered, asyncio.Event()
        answered.set()

    def _count(self, sent: _Sent, results: list[Applied]) -> None:
        self.metrics.redis_apply.observe(time.perf_counter() - sent.started)
        self.batches += 1
        self.events += sent.count
        for result in results:
            if result.status is OutcomeStatus.CONFLICT:
                self.metrics.rejected["conflict"] += 1
            else:
                self.metrics.accepted[_OUTCOMES[result.status]] += 1

    def _set_aside_batch(self, sent: _Sent, outcomes: list[Applied | None]) -> None:
        """Settle the submissions whose events were all answered; set the batch aside
        for :meth:`_settle_set_aside` to settle the others (a moving slot holds them)."""
        waiting = []
        start = 0
        for ticket in sent.batch:
            end = start + len(ticket.items)
            mine = outcomes[start:end]
            if None in mine:
                waiting.append(ticket)
            else:
                ticket.finish(cast("list[Applied]", mine))
            start = end
        self._aside.append(_SetAside(sent, waiting))
        self._aside_tickets += len(waiting)
        self._set_aside.set()

    async def _settle_set_aside(self) -> None:
        """Settle the batches set aside, oldest first: waiting for one drives the
        moving slots' probes (hub/store/moving.py)."""
        while True:
            while not self._aside:
                self._set_aside.clear()
                await self._set_aside.wait()
            # Shielded: once sent, the reply must reach the publishers.
            with anyio.CancelScope(shield=True):
                await self._settle_rest(self._aside.popleft())

    async def _settle_rest(self, aside: _SetAside) -> None:
        sent = aside.sent
        try:
            results = await sent.pending.result()
        except LogUnavailable as exc:
            self._fail(aside.waiting, sum(len(t.items) for t in aside.waiting), exc)
            return
        else:
            self._count(sent, results)
            waiting = {id(ticket) for ticket in aside.waiting}
            start = 0
            for ticket in sent.batch:
                end = start + len(ticket.items)
                if id(ticket) in waiting:
                    ticket.finish(results[start:end])
                start = end
        finally:
            self._aside_tickets -= len(aside.waiting)
            self._wake_senders()

    def _fail(self, batch: list[Ticket], count: int, exc: LogUnavailable) -> None:
        self.metrics.rejected["unavailable"] += count
        logger.warning("applying %d events failed: %s", count, exc)
        for ticket in batch:
            ticket.finish(error=exc)
