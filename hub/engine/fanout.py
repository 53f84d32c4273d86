"""Fan-out: tail the delta log and push each delta to the sessions that want it.

One task per partition reads the delta log (XREAD BLOCK) from where it was when the hub
started; nothing is pushed that is not in the log, so every hub process sends the same
records, whichever hub accepted the event.

Each delta is encoded once per protocol; the same frame bytes go to every matching
connection (:meth:`hub.transport.ws.WebSocket.write_frames`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import anyio

from ..core.cursor import Position
from ..core.index import Pattern, SubscriptionIndex
from ..errors import LogUnavailable
from ..wire.compat import delta_messages
from ..wire.framing import encode_frame
from ..wire.native import DeltaEncoder

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ..core.model import Delta
    from ..store import Store

__all__ = ["CompatListener", "Fanout", "FanoutStatistics", "FrameSink", "NativeListener"]


class FrameSink(Protocol):
    """Where a connection's frames go (:class:`hub.transport.ws.WebSocket`)."""

    def write_frames(self, data: bytes, count: int) -> None: ...
    def close(self, code: int, reason: str) -> None: ...


class CompatListener(Protocol):
    """A Flux-compatible connection (:class:`hub.transport.compat_ws.CompatSession`)."""

    @property
    def ws(self) -> FrameSink: ...
    def __hash__(self) -> int: ...

    def sees(self, entity_id: str) -> bool:
        """Whether it may hear of ``entity_id`` at all (private reads)."""
        ...


class NativeListener(Protocol):
    """One native subscription (:class:`hub.transport.native_sync.NativeSubscription`)."""

    @property
    def name(self) -> str: ...
    def __hash__(self) -> int: ...

    def on_delta(self, delta: Delta, position: Position, encoder: DeltaEncoder) -> None:
        """A delta whose entity id matched one of its patterns."""
        ...

    def broken(self, exc: Exception) -> None:
        """Delivering to it raised: its connection must end."""
        ...


class Flushable(Protocol):
    """A connection that buffers frames during a dispatch and writes them at its end."""

    def flush(self) -> None: ...


@dataclass(frozen=True, slots=True)
class FanoutStatistics:
    """The delta-log reader of one hub, for ``/metrics``."""

    #: Delta-log entries read and dispatched.
    deltas_read: int
    #: Times deltas were trimmed before this hub read them (subscribers were reset).
    gaps: int
    #: Compat connections subscribed.
    compat_sessions: int


logger = logging.getLogger("hub.fanout")

#: Longest XREAD BLOCK, in ms: bounds how long cancellation can take.
BLOCK_MS = 1000
#: Backoff bounds, in seconds, while Redis is unreachable.
RETRY_MIN, RETRY_MAX = 0.1, 5.0


class Fanout:
    """Routes deltas from the log to subscribed sessions."""

    def __init__(self, store: Store, *, read_count: int) -> None:
        self.store = store
        self.read_count = read_count
        self.compat_index: SubscriptionIndex[CompatListener] = SubscriptionIndex()
        self.compat_sessions: set[CompatListener] = set()
        self.native_index: SubscriptionIndex[NativeListener] = SubscriptionIndex()
        #: Last time (loop clock) each event source was seen in the delta log.
        self.sources: dict[str, float] = {}
        #: Newest position read, per partition.
        self.positions: dict[int, str] = {}
        self.deltas_read = 0
        self.ready = anyio.Event()
        self._started = 0
        # Set (and replaced) after every dispatch: wakes wait_past().
        self._progress = asyncio.Event()
        #: Sequence number of the last delta read, per partition.
        self.seqs: dict[int, int] = {}
        #: Called with a partition when deltas were trimmed before this hub read them.
        self.on_gap: Callable[[int], None] = lambda p: None
        self.gaps = 0
        #: While a dispatch runs: the native sessions given frames, flushed at its end
        #: (one write per connection per delta-log read); None between dispatches.
        self.dispatching: list[Flushable] | None = None

    def statistics(self) -> FanoutStatistics:
        """What this hub read from the delta log (read at scrape time)."""
        return FanoutStatistics(
            deltas_read=self.deltas_read, gaps=self.gaps, compat_sessions=len(self.compat_sessions)
        )

    # ------------------------------------------------------------------ sessions

    def add_compat(self, session: CompatListener, patterns: Iterable[Pattern]) -> None:
        self.compat_sessions.add(session)
        for pattern in patterns:
            self.compat_index.add(session, pattern)

    def reindex_compat(
        self, session: CompatListener, old: Iterable[Pattern], new: Iterable[Pattern]
    ) -> None:
        for pattern in old:
            self.compat_index.remove(session, pattern)
        for pattern in new:
            self.compat_index.add(session, pattern)

    def remove_compat(self, session: CompatListener, patterns: Iterable[Pattern]) -> None:
        self.compat_sessions.discard(session)
        for pattern in patterns:
            self.compat_index.remove(session, pattern)

    def passed(self, positions: dict[int, Position]) -> bool:
        """Whether every delta up to ``positions`` has been dispatched."""
        current = self.cursor()
        return all(p in current and current[p] >= pos for p, pos in positions.items())

    async def wait_past(self, positions: dict[int, Position]) -> None:
        """Return once every delta up to ``positions`` has been dispatched."""
        while not self.passed(positions):
            await self._progress.wait()

    def cursor(self) -> dict[int, Position]:
        """How far the fan-out has read, per partition: every delta up to here has
        been dispatched (sent, held or conflated) to every subscription."""
        return {p: Position.of(p, text) for p, text in self.positions.items()}

    # ------------------------------------------------------------------ tailing

    async def run(self) -> None:
        """Tail every partition until cancelled."""
        async with anyio.create_task_group() as tg:
            for p in range(self.store.keys.partitions):
                tg.start_soon(self._tail, p)

    async def _tail(self, p: int) -> None:
        delay = RETRY_MIN
        position: str | None = None
        while True:
            try:
                if position is None:
                    head = await self.store.delta_log_head(p)
                    position, self.seqs[p] = head.position, head.seq
                    self.positions[p] = position
                    self._started += 1
                    if self._started == self.store.keys.partitions:
                        self.ready.set()
                batch = await self.store.read_entries(p, position, self.read_count, BLOCK_MS)
            except LogUnavailable as exc:
                logger.warning("delta log of partition %d unreachable (%s); retrying", p, exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_MIN
            if batch:
                self._check_sequence(p, batch.first_seq, batch.last_seq)
                position = batch.last_position
                self.positions[p] = position
                self.deltas_read += len(batch)
                # Decoding costs: only when someone may want the deltas.
                if self.compat_sessions or not self.native_index.is_empty():
                    deltas = batch.deltas()
                    # The loop's clock is anyio's, without its backend look-up per call.
                    self.dispatch(deltas, asyncio.get_running_loop().time(), p)
                progress, self._progress = self._progress, asyncio.Event()
                progress.set()

    def _check_sequence(self, p: int, first: int, last: int) -> None:
        """Detect deltas trimmed from the log before this hub could read them.

        That happens only when a hub falls behind by more than the log's retention
        (stalled, or Redis unreachable for long). Subscribers are told — reset or
        closed — instead of silently missing updates.
        """
        expected = self.seqs.get(p, 0) + 1
        if first and first != expected:
            self.gaps += 1
            logger.warning(
                "partition %d: %d deltas were trimmed before this hub read them; "
                "resetting its subscribers",
                p,
                first - expected,
            )
            self.on_gap(p)
        self.seqs[p] = last

    def dispatch(self, deltas: Iterable[Delta], now: float, partition: int = 0) -> None:
        """Send deltas to every matching session (synchronously: no awaits)."""
        touched: list[Flushable] = []
        self.dispatching = touched
        try:
            self._dispatch(deltas, now, partition)
        finally:
            self.dispatching = None
            for session in touched:
                session.flush()

    def _dispatch(self, deltas: Iterable[Delta], now: float, partition: int) -> None:
        sources = self.sources
        native = self.native_index
        compat_out: dict[CompatListener, list[bytes]] = {}
        compat_counts: dict[CompatListener, int] = {}
        for delta in deltas:
            if delta.source:
                sources[delta.source] = now
            subs = native.match(delta.entity_id)
            if subs:
                position = Position.of(partition, delta.position)
                encoder = DeltaEncoder(delta, position)
                for sub in subs:
                    try:
                        sub.on_delta(delta, position, encoder)
                    except Exception as exc:
                        # One connection's failure must not stop the fan-out.
                        logger.exception("delivering a delta to %r failed; closing", sub.name)
                        sub.broken(exc)
            if delta.deleted:
                # Flux sends entity_deleted to every connection, subscribed or not
                # (that may see the entity at all, under private reads).
                entity = delta.entity_id
                targets: Iterable[CompatListener] = [
                    c for c in self.compat_sessions if c.sees(entity)
                ]
            else:
                targets = self.compat_index.match(delta.entity_id)
            if not targets:
                continue
            messages = delta_messages(delta)
            if not messages:
                continue
            frames = b"".join(encode_frame(m) for m in messages)
            for session in targets:
                queued = compat_out.get(session)
                if queued is None:
                    compat_out[session] = [frames]
                else:
                    queued.append(frames)
                compat_counts[session] = compat_counts.get(session, 0) + len(messages)
        # One write per connection per batch: a system call costs more than the frames.
        for session, chunks in compat_out.items():
            session.ws.write_frames(b"".join(chunks), compat_counts[session])

    def active_sources(self, now: float, window: float) -> int:
        """Distinct sources seen within ``window`` seconds; forgets older ones."""
        cutoff = now - window
        stale = [s for s, seen in self.sources.items() if seen < cutoff]
        for source in stale:
            del self.sources[source]
        return len(self.sources)
