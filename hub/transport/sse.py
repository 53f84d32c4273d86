"""Server-Sent Events: one native subscription streamed as ``text/event-stream``.

``GET /api/stream`` (hub/api/stream.py parses and authorizes it) answers with a
:class:`~hub.transport.responses.Response` whose producer is :meth:`SseSession.run`,
written by the hub's streaming primitive (:mod:`.streaming`). The session is an
:class:`~.native_sync.Output` like a native WebSocket connection: the same
:class:`~.native_sync.Subscriptions` run its snapshot, resume and hand-off to live,
the same :class:`~hub.core.session.outbox.Outbox` conflates for a slow reader, and
every native frame goes out as one event named after its ``type``, its ``data`` the
frame's JSON (docs/sse.md). Which events carry an ``id:`` (the resume cursor) is
:class:`~hub.core.session.sse.EventIds`'s rule.

Bounds (the native connection's, docs/limits.md): past ``FLUX_CONFLATE_AFTER_BYTES``
unsent, deltas merge per entity; past ``FLUX_MAX_PENDING_ENTITIES`` merged or
``FLUX_MAX_SEND_BUFFER_BYTES`` unsent, the stream ends with a ``close`` event naming
the reason (the reader reconnects and resumes from its last id). A heartbeat comment
goes out every ``FLUX_SSE_HEARTBEAT_SECONDS``, a checkpoint every
``FLUX_CHECKPOINT_INTERVAL``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from ..core.cursor import format_cursor, parse_cursor
from ..core.session.outbox import OVERLOADED, Outbox
from ..core.session.sse import EventIds
from ..errors import HubError, Overloaded
from ..wire.codec import JSON
from ..wire.native import DeltaEncoder, delta_frame
from ..wire.replies import Checkpoint, ErrorReply, Reset, Subscribed, Synced
from ..wire.sse import sse_comment, sse_event, sse_retry
from .native_sync import Subscriptions, send_merged
from .streaming import CLIENT_GONE, SHUTTING_DOWN

if TYPE_CHECKING:
    from ..core.cursor import Position
    from ..core.model import Delta
    from ..wire.frames import SubscribeFrame
    from ..wire.replies import ServerFrame
    from .native_sync import NativeSubscription
    from .native_ws import NativeContext
    from .streaming import BodyWriter

__all__ = ["SseSession", "SseStatistics", "SseStreams"]

logger = logging.getLogger("hub.gateway")


@dataclass(frozen=True, slots=True)
class SseStatistics:
    """The open event streams of one hub, for ``/metrics``."""

    streams: int
    held_deltas: int
    conflated_pending: int
    conflated: int
    #: Streams ended since the start, by the code of their ``close`` event
    #: (``slow_consumer``, ``shutting_down``, an error's code...), or ``gone``: the
    #: reader closed its side or the connection dropped first.
    closes: dict[str, int] = field(default_factory=dict)


class SseStreams:
    """Every open event stream of one hub: started here, reset together on a gap.

    Args:
        context: what native sessions share (settings, store, fan-out, tenancy).
        heartbeat: seconds between heartbeat comments.
        retry_ms: the reconnection delay advised to readers.
    """

    def __init__(self, context: NativeContext, *, heartbeat: float, retry_ms: int) -> None:
        self.context = context
        self.heartbeat = heartbeat
        self.retry_ms = retry_ms
        self.sessions: set[SseSession] = set()
        #: Deltas merged by streams already closed (a statistic).
        self.conflated_closed = 0
        #: Streams ended, by code (a statistic: :attr:`SseStatistics.closes`).
        self.closes: Counter[str] = Counter()

    def session(self, frame: SubscribeFrame, scope: str, token: str | None) -> SseSession:
        """A stream of the subscription ``frame`` (already planned and authorized)."""
        return SseSession(self, frame, scope, token)

    def reset_all(self, reason: str) -> None:
        """The hub missed deltas: every stream starts over (``reset``, snapshot)."""
        for session in list(self.sessions):
            session.subscriptions.reset_all(reason)

    def statistics(self) -> SseStatistics:
        sessions = list(self.sessions)
        return SseStatistics(
            streams=len(sessions),
            held_deltas=sum(s.subscriptions.held() for s in sessions),
            conflated_pending=sum(len(s.outbox.pending) for s in sessions),
            conflated=self.conflated_closed + sum(s.outbox.conflated for s in sessions),
            closes=dict(self.closes),
        )


class SseSession:
    """One event stream: the :class:`~.native_sync.Output` of one subscription."""

    codec = JSON

    def __init__(
        self, streams: SseStreams, frame: SubscribeFrame, scope: str, token: str | None
    ) -> None:
        context = streams.context
        fanout = context.fanout_settings
        self.streams = streams
        self.frame = frame
        self.scope = scope
        self.token = token
        self.ids = EventIds()
        self.outbox: Outbox[NativeSubscription] = Outbox(fanout.max_pending_entities)
        self.subscriptions = Subscriptions(
            self,
            store=context.store,
            fanout=context.fanout,
            spawn=context.spawn,
            limit=1,
            max_held=fanout.max_held_deltas,
            page=fanout.snapshot_page,
        )
        self.body: BodyWriter | None = None
        #: Why the stream ends (``code``, ``reason``), when the hub ends it.
        self.closing: tuple[str, str] | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._loop = asyncio.get_running_loop()

    # ------------------------------------------------------------------ the producer

    async def run(self, body: BodyWriter) -> None:
        """Stream the subscription until the reader leaves, the hub stops, or a
        bound is crossed (the producer of hub.transport.streaming)."""
        context, settings = self.streams.context, self.streams.context.fanout_settings
        self.body = body
        body.max_buffer = settings.max_send_buffer_bytes
        conflate = settings.conflate_after_bytes
        body.set_buffer_limits(high=conflate, low=conflate // 4)
        body.on_pause = self._pause
        body.on_resume = self._resume
        if self.frame.from_ is not None:
            self.ids = EventIds(parse_cursor(self.frame.from_))
        self.streams.sessions.add(self)
        unwatch = context.tenancy.watch(self._recheck)
        try:
            self._out.append(sse_retry(self.streams.retry_ms))
            self._schedule_flush()
            await self.subscriptions.subscribe(
                self.frame, self.scope, {}, self.token if self.scope else None
            )
            await self._tick()
        finally:
            unwatch()
            self.streams.sessions.discard(self)
            self.streams.conflated_closed += self.outbox.conflated
            self.subscriptions.close()
            self.outbox.clear()
            self._last_words(body)

    async def _tick(self) -> None:
        """Heartbeats and checkpoints, until cancelled."""
        heartbeat = self.streams.heartbeat
        interval = self.streams.context.fanout_settings.checkpoint_interval
        now = anyio.current_time()
        beat, check = now + heartbeat, now + interval
        while True:
            await anyio.sleep(max(0.0, min(beat, check) - anyio.current_time()))
            now = anyio.current_time()
            if now >= check:
                check = now + interval
                self.checkpoint()
            if now >= beat:
                beat = now + heartbeat
                self._out.append(sse_comment("heartbeat"))
                self._schedule_flush()

    def _last_words(self, body: BodyWriter) -> None:
        """What is queued (unless the reader is too far behind for more), then the
        final ``close`` event naming why (unless the reader left)."""
        out, self._out = self._out, []
        if self.closing is not None:
            code, reason = self.closing
        else:
            reason = body.stop_reason or "the stream ended"
            if reason == SHUTTING_DOWN:
                code = "shutting_down"
            elif reason.startswith("slow consumer"):
                code = "slow_consumer"
            else:
                code = "closed"
        gone = not body.open or body.stop_reason == CLIENT_GONE
        self.streams.closes["gone" if gone else code] += 1
        if not body.open:
            return
        data = JSON.encode({"type": "close", "code": code, "reason": reason})
        if self._behind():
            out = []
        body.write(b"".join([*out, sse_event("close", data)]))

    def _end(self, code: str, reason: str) -> None:
        if self.closing is None:
            self.closing = (code, reason)
        if self.body is not None:
            self.body.stop(reason)

    def _recheck(self) -> None:
        if self.subscriptions.grants:
            tenancy = self.streams.context.tenancy
            self.streams.context.spawn(lambda: self.subscriptions.recheck(tenancy))

    # ------------------------------------------------------------------ Output

    def send(self, frame: ServerFrame) -> None:
        value = frame.value()
        value.pop("ref", None)  # no requests on a stream: nothing to refer to
        event_id: str | None = None
        if isinstance(frame, Subscribed) and frame.cursor is not None:
            event_id = self.ids.at(frame.cursor)
        elif isinstance(frame, Synced | Checkpoint):
            event_id = self.ids.at(frame.cursor, behind=bool(self.outbox.pending))
        elif isinstance(frame, Reset):
            event_id = self.ids.reset()
        self._out.append(sse_event(value["type"], JSON.encode(value), event_id))
        self._schedule_flush()
        if isinstance(frame, ErrorReply) and frame.sub is not None:
            self._end(frame.code, frame.message)  # the subscription ended: so does the stream

    def queue_delta(
        self, sub: NativeSubscription, delta: Delta, position: Position, encoder: DeltaEncoder
    ) -> None:
        """Send a delta, or conflate it if the reader is behind."""
        outbox = self.outbox
        if outbox.direct:
            body = encoder.body(JSON, sub.properties, sub.touches)
            if body is not None:
                self._delta(sub, body, self.ids.delta(position))
        elif outbox.admit(sub, sub.name, delta, position) is OVERLOADED:
            limit = outbox.max_pending
            self.fail(
                Overloaded(
                    f"slow consumer: more than {limit} entities pending; "
                    "reconnect and resume from your last event id"
                )
            )

    async def wait_writable(self) -> None:
        while self.outbox.paused and self.body is not None and not self.body.stopped:
            await self._writable.wait()

    def forget_pending(self, sub: str) -> None:
        self.outbox.forget(sub)

    def fail(self, exc: Exception) -> None:
        """End the stream because of ``exc``."""
        if isinstance(exc, Overloaded):
            self._end("slow_consumer", str(exc))
        elif isinstance(exc, HubError):
            self._end("error", str(exc))
        else:
            logger.error("event stream failed: %r", exc)
            self._end("internal", "internal error while sending a delta")

    # ------------------------------------------------------------------ flow control

    def checkpoint(self) -> None:
        """Tell the reader how far the hub has read (when nothing waits to go out)."""
        if self.outbox.behind:
            return
        for sub in self.subscriptions.synced():
            self.send(Checkpoint(sub.name, format_cursor(self.streams.context.fanout.cursor())))

    def _pause(self) -> None:
        self.outbox.pause()
        self._writable = asyncio.Event()

    def _resume(self) -> None:
        self._writable.set()
        # merged: no exact position, so no event id
        touched = send_merged(self.outbox, JSON, lambda sub, body: self._delta(sub, body, None))
        if touched:
            cursor = format_cursor(self.streams.context.fanout.cursor())
            for sub in touched.values():
                if sub.synced:
                    self.send(Checkpoint(sub.name, cursor))

    # ------------------------------------------------------------------ writing

    def _delta(
        self, sub: NativeSubscription, body: tuple[bytes, int], event_id: str | None
    ) -> None:
        data = delta_frame(JSON, sub.prefix, body)
        self._out.append(sse_event(_frame_type(body[0]), data, event_id))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        """Write what is queued at the end of the running dispatch (one write per
        delta-log read), else at the next turn of the loop."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            dispatching = self.streams.context.fanout.dispatching
            if dispatching is not None:
                dispatching.append(self)
            else:
                self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if out and self.body is not None and not self._behind():
            self.body.write(b"".join(out))

    def _behind(self) -> bool:
        """The stream ends because its reader is too far behind: nothing more but
        the ``close`` goes out (the reader resumes from its last id)."""
        body = self.body
        return (self.closing is not None and self.closing[0] == "slow_consumer") or (
            body is not None and (body.stop_reason or "").startswith("slow consumer")
        )


def _frame_type(body: bytes) -> str:
    """The ``type`` of an encoded JSON delta body (``delta``, ``deleted``, ``left``):
    the encoder writes it first."""
    assert body.startswith(b'"type":"')
    return body[8 : body.index(b'"', 8)].decode()
