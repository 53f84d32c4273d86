"""The native WebSocket protocol (subprotocols ``flux.v1`` and ``flux.v1.msgpack``).

One :class:`NativeSession` per connection. Frames are described in docs/protocol.md.

Requests (publish, get, list) are handled one at a time, in order, by a task of the
session that lives as long as the connection; at most ``max_pending_requests`` wait,
then the hub stops reading the socket until it catches up (TCP backpressure). Subscribe
and unsubscribe take effect at once. Publishes are pipelined: while Redis applies one
submission, the next frames are parsed and queued (up to ``PUBLISHES_IN_FLIGHT``
submissions); their acks go out in order as the ingest settles them (no task hop). Any
other request waits until every publish before it is acknowledged, so a ``get`` sees
the connection's own writes.

The session's signals are ``asyncio.Event``: anyio's yield to the loop on every wait,
and on the publish path each extra turn of the loop may wait behind a whole dispatch.

A subscription is *live* (deltas go out as the fan-out dispatches them) or *holding*
(while its snapshot or catch-up is read, dispatched deltas are kept, up to
``max_held_deltas``; then it is reset and read again). See hub/core/handoff.py for
the snapshot hand-off, and :meth:`NativeSession._catch_up` for resume.

Slow consumers: past ``conflate_after_bytes`` unsent, a connection's deltas are merged
per (subscription, entity) instead of queued (hub/core/conflate.py); when the socket
drains they go out marked ``conflated``, followed by a ``checkpoint`` per subscription.
More than ``max_pending_entities`` merged deltas, or more than ``max_send_buffer_bytes``
unsent: close 1013 with a reason; the client resumes from its cursor.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
from pydantic import ValidationError

from ..core.conflate import merge
from ..core.cursor import Position, format_cursor, parse_cursor
from ..core.handoff import SnapshotCut, plan_snapshot
from ..core.index import Pattern, confine
from ..core.model import Delta, OutcomeStatus
from ..engine.auth import BearerProblem
from ..engine.ids import uuid7
from ..engine.ingest import Ticket
from ..engine.tenancy import AuthFailure, Principal
from ..errors import Closed, LogUnavailable, PayloadTooLarge, ProtocolError
from ..wire.codec import JSON, MSGPACK, Codec, DecodeError
from ..wire.envelope import Envelope, parse_event
from ..wire.frames import (
    CLIENT_FRAMES,
    AuthFrame,
    ClientFrame,
    Filter,
    GetFrame,
    ListFrame,
    PublishFrame,
    Ref,
    SubscribeFrame,
    UnsubscribeFrame,
    describe_error,
    ref_of,
)
from ..wire.framing import encode_frame
from ..wire.native import DeltaEncoder, SubPrefix, delta_frame, entity_value

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..config import FanoutSettings, GatewaySettings
    from ..engine.fanout import Fanout
    from ..engine.ingest import Ingest
    from ..engine.metrics import HubMetrics
    from ..engine.tenancy import Tenancy
    from ..store import Applied, Store
    from ..wire.envelope import EventLimits
    from .ws import WebSocket

__all__ = [
    "NativeContext",
    "NativeSession",
    "NativeStatistics",
    "NativeSubscription",
    "patterns_of",
]

logger = logging.getLogger("hub.gateway")

#: Deltas read per round trip while catching up.
CATCH_UP_BATCH = 1000
#: Resets in a row (held buffer overflowing) before the connection is closed.
MAX_RESETS = 3
#: Publish submissions of one connection queued for Redis and not yet acknowledged;
#: past it the session waits for the oldest before parsing more. A few keep parsing
#: and applying overlapped; more would only hold memory.
PUBLISHES_IN_FLIGHT = 4


#: A publish frame after checks: per-event results so far and the accepted events,
#: or why the whole frame is refused.
_Prepared: TypeAlias = tuple[list[dict[str, Any] | None], list[tuple[int, Envelope]]] | str
#: What Redis made of a submission, or why it could not.
_Applied: TypeAlias = "list[Applied] | LogUnavailable | Closed"
_InFlight: TypeAlias = tuple[list[tuple[PublishFrame, _Prepared]], Ticket | Closed | None]


@dataclass(frozen=True, slots=True)
class NativeContext:
    """What every native session of a hub shares: its settings and collaborators."""

    gateway: GatewaySettings
    fanout_settings: FanoutSettings
    #: Property count, value size and nesting depth of one event.
    limits: EventLimits
    store: Store
    ingest: Ingest
    fanout: Fanout
    tenancy: Tenancy
    metrics: HubMetrics
    clock: Callable[[], float]
    #: Runs a task in the hub's task group (its failure is logged, not raised).
    spawn: Callable[[Callable[[], Awaitable[None]]], None]


@dataclass(frozen=True, slots=True)
class NativeStatistics:
    """One session's queues, for ``/metrics``."""

    subscriptions: int
    requests_queued: int
    held_deltas: int
    conflated_pending: int
    conflated: int


def patterns_of(spec: Filter) -> list[Pattern]:
    """The index patterns of a subscription filter."""
    if spec.all:
        return [Pattern.all()]
    patterns = [Pattern.exact(i) for i in spec.ids]
    patterns += [Pattern.prefix(p) for p in spec.prefixes]
    patterns += [Pattern.namespace(n) for n in spec.namespaces]
    patterns += [Pattern.glob(g) for g in spec.globs]
    return list(dict.fromkeys(patterns))


class NativeSubscription:
    """One subscription of a native connection."""

    def __init__(self, session: NativeSession, frame: SubscribeFrame, scope: str = "") -> None:
        self.session = session
        self.sub = frame.sub
        #: Under private reads, the ids this subscription may see start with this.
        self.read_scope = scope
        self.patterns = confine(patterns_of(frame.filter), scope)
        self.properties = frozenset(frame.properties) if frame.properties is not None else None
        self.touches = frame.touches
        self.prefix = SubPrefix.of(session.codec, frame.sub)
        #: Deltas dispatched while the snapshot or catch-up is read; None when live.
        self.holding: list[tuple[Delta, Position]] | None = None
        #: Per partition, the last position already sent by a catch-up: live deltas
        #: at or before it are not sent again.
        self.sent_upto: dict[int, Position] = {}
        #: After a snapshot, until the fan-out has passed every page position: live
        #: deltas the snapshot already reflects are dropped by it.
        self.cut: SnapshotCut | None = None
        self.scope: anyio.CancelScope | None = None
        self.resets = 0
        self.closed = False

    def matches(self, entity_id: str) -> bool:
        return entity_id.startswith(self.read_scope) and any(
            p.matches(entity_id) for p in self.patterns
        )

    def on_delta(self, delta: Delta, position: Position, encoder: DeltaEncoder) -> None:
        """Called by the fan-out for every dispatched delta this subscription matches."""
        if self.read_scope and not delta.entity_id.startswith(self.read_scope):
            return  # a glob that reaches outside the reader's namespace
        if self.holding is not None:
            self.holding.append((delta, position))
            if len(self.holding) > self.session.max_held:
                self.session.overflow(self)
            return
        if self.sent_upto:  # (empty but after a catch-up: checked first, it is cheap)
            upto = self.sent_upto.get(position.partition)
            if upto is not None and position <= upto:
                return
        if self.cut is not None and self.cut.reflected(delta.entity_id, position):
            return
        self.session.queue_delta(self, delta, position, encoder)

    @property
    def synced(self) -> bool:
        """Live, with an exact cursor: what a checkpoint may be sent to."""
        return self.holding is None and self.cut is None


class NativeSession:
    """State of one native-protocol connection."""

    def __init__(
        self,
        ws: WebSocket,
        context: NativeContext,
        codec: Codec,
        token: str | BearerProblem = BearerProblem.MISSING,
    ) -> None:
        self.ws = ws
        self.context = context
        self.codec = codec
        #: The token this connection speaks with (upgrade header, ?token=, auth frame),
        #: or what was wrong with the upgrade's Authorization header.
        self.token = token
        self._principal: Principal | None = None
        self.max_soft_frame = context.gateway.max_frame_bytes
        self.max_events = context.gateway.max_events_per_frame
        self.max_subscriptions = context.gateway.max_subscriptions
        self.max_requests = context.gateway.max_pending_requests
        self.max_held = context.fanout_settings.max_held_deltas
        self.max_pending = context.fanout_settings.max_pending_entities
        self.page = context.fanout_settings.snapshot_page
        self.subscriptions: dict[str, NativeSubscription] = {}
        self._requests: deque[ClientFrame] = deque()
        #: Whether the task serving requests was started (it runs until the close).
        self._serving = False
        #: Whether that task waits for a request (nothing in progress).
        self._idle = False
        self._closed = False
        #: Set when a request is queued (or the connection closed).
        self._requested = asyncio.Event()
        #: Publishes queued for Redis, oldest first, with what their acks need.
        self._in_flight: deque[_InFlight] = deque()
        #: Set while no publish waits for its ack.
        self._acked = asyncio.Event()
        self._acked.set()
        #: Set (and replaced) whenever acks were sent.
        self._ack_sent = asyncio.Event()
        #: Per partition, the newest delta of this connection's acknowledged publishes.
        self._written: dict[int, Position] = {}
        self._reading_paused = False
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()
        self._fanout = context.fanout
        #: Conflated deltas waiting for the socket to drain, in arrival order.
        self._pending: dict[tuple[str, str], tuple[NativeSubscription, Delta, Position]] = {}
        self.paused = False
        self._writable = asyncio.Event()
        self._writable.set()
        # Statistics.
        self.conflated = 0

    def statistics(self) -> NativeStatistics:
        """This session's queues (read at scrape time)."""
        return NativeStatistics(
            subscriptions=len(self.subscriptions),
            requests_queued=len(self._requests),
            held_deltas=sum(len(s.holding or ()) for s in self.subscriptions.values()),
            conflated_pending=len(self._pending),
            conflated=self.conflated,
        )

    # ------------------------------------------------------------------ incoming

    def on_message(self, data: bytes, text: bool) -> None:
        if len(data) > self.max_soft_frame:
            self._error(
                None,
                "too_large",
                f"frame of {len(data)} bytes is over the limit of {self.max_soft_frame}",
            )
            return
        codec = JSON if text else MSGPACK
        try:
            raw = codec.decode(data)
        except DecodeError as exc:
            self._error(None, "bad_frame", str(exc))
            return
        try:
            frame = CLIENT_FRAMES.validate_python(raw)
        except ValidationError as exc:
            self._error(ref_of(raw), "bad_frame", describe_error(exc))
            return
        if (
            isinstance(frame, PublishFrame)
            and not self._requests
            and (self._idle or not self._serving)
            and len(self._in_flight) < PUBLISHES_IN_FLIGHT
            and not self.context.tenancy.enabled
            and self.context.ingest.has_room()
        ):
            self._publish_now(frame)
            return
        # Everything else goes through one queue: handled in the order sent.
        self._requests.append(frame)
        if len(self._requests) >= self.max_requests and not self._reading_paused:
            self._reading_paused = True
            self.ws.transport.pause_reading()
        if self._serving:
            self._requested.set()
        else:
            # One task for the connection's whole life: starting one per burst of
            # requests cost more than the request (bench/RESULTS.md).
            self._serving = True
            self.context.spawn(self._serve_requests)

    def on_close(self) -> None:
        self._closed = True
        for sub in list(self.subscriptions.values()):
            self._drop(sub)
        self._requests.clear()
        self._pending.clear()
        self._writable.set()
        self._requested.set()

    # ------------------------------------------------------------------ requests

    async def _serve_requests(self) -> None:
        """Handle requests in order until the connection closes."""
        try:
            while not self._closed:
                if not self._requests or not self.ws.open:
                    self._requested.clear()
                    self._idle = True
                    try:
                        await self._requested.wait()
                    finally:
                        self._idle = False
                    continue
                frame = self._requests.popleft()
                publishes = (
                    self._consecutive_publishes(frame) if isinstance(frame, PublishFrame) else []
                )
                # After taking frames off the queue (several, for publishes), not before:
                # with the queue emptied and reading still paused, nothing would ever
                # wake this task again.
                if self._reading_paused and len(self._requests) < self.max_requests // 2:
                    self._reading_paused = False
                    self.ws.transport.resume_reading()
                try:
                    if publishes:
                        await self._publish(publishes)
                        continue
                    # Anything else answers after the publishes sent before it.
                    await self._acked.wait()
                    if isinstance(frame, SubscribeFrame):
                        await self._subscribe(frame)
                    elif isinstance(frame, UnsubscribeFrame):
                        self._unsubscribe(frame)
                    elif isinstance(frame, GetFrame):
                        await self._get(frame)
                    elif isinstance(frame, ListFrame):
                        await self._list(frame)
                    elif isinstance(frame, AuthFrame):
                        await self._auth(frame)
                except AuthFailure as exc:
                    self._error(frame.ref, exc.code, exc.message)
                except ProtocolError as exc:
                    self._error(frame.ref, "bad_frame", str(exc))
                except (LogUnavailable, Closed) as exc:
                    self._error(frame.ref, "unavailable", str(exc))
        finally:
            self._serving = False

    def _consecutive_publishes(self, first: PublishFrame) -> list[PublishFrame]:
        """``first`` and the publish frames queued right behind it (up to
        ``max_events`` events in all): a client that publishes without waiting for
        acks gets one Redis call for several frames, not one round trip each."""
        frames = [first]
        count = len(first.events)
        queue = self._requests
        while queue and isinstance(queue[0], PublishFrame):
            if count + len(queue[0].events) > self.max_events:
                break
            nxt = queue.popleft()
            assert isinstance(nxt, PublishFrame)
            frames.append(nxt)
            count += len(nxt.events)
        return frames

    async def _publish(self, frames: list[PublishFrame]) -> None:
        """Queue publish frames as one submission; their acks go out, in order, from
        :meth:`_send_acks` once Redis has applied them."""
        prepared = [(frame, await self._prepare(frame)) for frame in frames]
        events = [e for _, p in prepared if not isinstance(p, str) for _, e in p[1]]
        ticket: Ticket | Closed | None = None
        if events:
            try:
                ticket = await self.context.ingest.enqueue(events, self._on_applied)
            except Closed as exc:
                ticket = exc
        self._track(prepared, ticket)
        while len(self._in_flight) > PUBLISHES_IN_FLIGHT:
            await self._ack_sent.wait()

    def _publish_now(self, frame: PublishFrame) -> None:
        """:meth:`_publish` from the socket's callback, for a frame with nothing ahead
        of it, when auth is off and the ingest has room: nothing to await, so the
        events reach the ingest a turn of the loop sooner than through the request
        task (under fan-out, a turn of the loop may wait behind a whole dispatch)."""
        prepared = self._prepare_open(frame)
        ticket: Ticket | Closed | None = None
        if not isinstance(prepared, str) and prepared[1]:
            try:
                ticket = self.context.ingest.try_enqueue(
                    [e for _, e in prepared[1]], self._on_applied
                )
            except Closed as exc:
                ticket = exc
            assert ticket is not None, "has_room() was checked"
        self._track([(frame, prepared)], ticket)

    def _track(
        self, prepared: list[tuple[PublishFrame, _Prepared]], ticket: Ticket | Closed | None
    ) -> None:
        """Remember a submission until its acks are sent (now, if nothing is pending)."""
        self._in_flight.append((prepared, ticket))
        self._acked.clear()
        self._send_acks()

    def _on_applied(self, ticket: Ticket) -> None:
        self._send_acks()

    def _send_acks(self) -> None:
        """Acknowledge, in order, the publishes at the head whose events are settled."""
        sent = False
        while self._in_flight:
            prepared, ticket = self._in_flight[0]
            applied: _Applied = []
            if isinstance(ticket, Closed):
                applied = ticket
            elif ticket is not None:
                if not ticket.done.is_set():
                    break
                if ticket.error is not None:
                    applied = ticket.error
                else:
                    assert ticket.applied is not None
                    applied = ticket.applied
            self._in_flight.popleft()
            self._acknowledge_frames(prepared, applied)
            sent = True
        if sent:
            ack_sent, self._ack_sent = self._ack_sent, asyncio.Event()
            ack_sent.set()
        if not self._in_flight:
            self._acked.set()

    def _acknowledge_frames(
        self, prepared: list[tuple[PublishFrame, _Prepared]], applied: _Applied
    ) -> None:
        start = 0
        for frame, ready in prepared:
            if isinstance(ready, str):
                # Refused whole; said now, in its turn, so replies keep frame order.
                self._error(frame.ref, "too_many_events", ready)
                continue
            results, accepted = ready
            if isinstance(applied, LogUnavailable | Closed):
                self._acknowledge(frame, results, accepted, applied)
            else:
                self._acknowledge(frame, results, accepted, applied[start : start + len(accepted)])
                start += len(accepted)

    async def _prepare(self, frame: PublishFrame) -> _Prepared:
        """Validate, authorize and rate-limit a frame's events: per-event results so
        far, and the accepted events in order; or why the whole frame is refused."""
        if not self.context.tenancy.enabled:
            return self._prepare_open(frame)
        checked = self._validate(frame)
        if isinstance(checked, str):
            return checked
        results, valid = checked
        # Authorization, then the namespace's rate limit, per event in order.
        tenancy = self.context.tenancy
        bearer = self.token
        by_namespace: dict[str | None, list[tuple[int, Envelope]]] = {}
        for index, envelope in valid:
            try:
                namespace = await tenancy.authorize_token(bearer, envelope.entity_id)
            except AuthFailure as exc:
                self.context.metrics.rejected[exc.code] += 1
                results[index] = _refused(envelope, exc.code, exc.message)
                continue
            by_namespace.setdefault(namespace, []).append((index, envelope))
        accepted: list[tuple[int, Envelope]] = []
        for namespace, items in by_namespace.items():
            granted = len(items)
            wait = 0.0
            if namespace is not None:
                granted, wait = await tenancy.take(namespace, len(items))
            accepted += items[:granted]
            for index, envelope in items[granted:]:
                self.context.metrics.rejected["rate_limited"] += 1
                refusal = _refused(envelope, "rate_limited", "rate limit exceeded")
                refusal["retry_after_ms"] = math.ceil(wait * 1000)
                results[index] = refusal
        accepted.sort(key=lambda item: item[0])
        return results, accepted

    def _prepare_open(self, frame: PublishFrame) -> _Prepared:
        """:meth:`_prepare` when auth is off: no token to look up, no rate limit, so no
        await."""
        checked = self._validate(frame)
        if isinstance(checked, str):
            return checked
        results, accepted = checked
        refused = False
        for index, envelope in accepted:
            try:
                self.context.tenancy.authorize_open(envelope.entity_id)
            except AuthFailure as exc:
                self.context.metrics.rejected[exc.code] += 1
                results[index] = _refused(envelope, exc.code, exc.message)
                refused = True
        if refused:
            accepted = [(i, e) for i, e in accepted if results[i] is None]
        return results, accepted

    def _validate(
        self, frame: PublishFrame
    ) -> tuple[list[dict[str, Any] | None], list[tuple[int, Envelope]]] | str:
        """Parse a frame's events: the failures by index, and the valid events in
        order; or why the whole frame is refused."""
        if len(frame.events) > self.max_events:
            return f"{len(frame.events)} events in one frame; the limit is {self.max_events}"
        now = math.floor(self.context.clock() * 1000)
        results: list[dict[str, Any] | None] = [None] * len(frame.events)
        valid: list[tuple[int, Envelope]] = []
        for index, raw in enumerate(frame.events):
            try:
                envelope = parse_event(
                    raw,
                    now_ms=now,
                    new_id=lambda: uuid7(now),
                    limits=self.context.limits,
                )
            except PayloadTooLarge as exc:
                self.context.metrics.rejected["too_large"] += 1
                results[index] = _failure(raw, "too_large", str(exc))
                continue
            except ProtocolError as exc:
                self.context.metrics.rejected["invalid"] += 1
                results[index] = _failure(raw, "invalid", str(exc))
                continue
            valid.append((index, envelope))
        return results, valid

    def _acknowledge(
        self,
        frame: PublishFrame,
        results: list[dict[str, Any] | None],
        accepted: list[tuple[int, Envelope]],
        applied: _Applied,
    ) -> None:
        """Send a frame's ``ack`` once its accepted events were applied (or not)."""
        if accepted:
            if isinstance(applied, LogUnavailable | Closed):
                exc = applied
                for index, envelope in accepted:
                    results[index] = {
                        "eventId": envelope.event_id,
                        "error": {"code": "unavailable", "message": str(exc)},
                    }
            else:
                for (index, envelope), result in zip(accepted, applied, strict=True):
                    position = None
                    if result.delta_position:
                        written = Position.of(result.partition, result.delta_position)
                        newest = self._written.get(result.partition)
                        if newest is None or written > newest:
                            self._written[result.partition] = written
                        position = str(written)
                    if result.status is OutcomeStatus.CONFLICT:
                        results[index] = {
                            "eventId": envelope.event_id,
                            "error": {
                                "code": "conflict",
                                "message": f"entity is at version {result.version}",
                            },
                            "version": result.version,
                        }
                    else:
                        results[index] = {
                            "eventId": envelope.event_id,
                            "status": "duplicate"
                            if result.status is OutcomeStatus.DUPLICATE
                            else "ok",
                            "version": result.version,
                            "position": position,
                        }
        self._send_value({"type": "ack", "ref": frame.ref, "results": results})

    async def _auth(self, frame: AuthFrame) -> None:
        principal = await self.context.tenancy.principal(frame.token)
        if principal.namespace is None and not principal.admin:
            self._error(frame.ref, "unauthorized", "unknown token")
            return
        self.token = frame.token
        self._principal = principal
        self._send_value(
            {
                "type": "authenticated",
                "ref": frame.ref,
                "namespace": principal.namespace,
                "admin": principal.admin,
            }
        )

    async def _read_scope(self) -> str:
        """Under private reads, the prefix this connection may read ("" = all).

        Raises:
            AuthFailure: private reads and no valid token.
        """
        if not self.context.tenancy.private_reads:
            return ""
        if self._principal is None:
            token = self.token if isinstance(self.token, str) else None
            self._principal = await self.context.tenancy.principal(token)
        scope = self._principal.read_prefix
        if scope is None:
            raise AuthFailure(401, "private reads: authenticate with a namespace token first")
        return scope

    async def _get(self, frame: GetFrame) -> None:
        scope = await self._read_scope()
        ids = [i for i in dict.fromkeys(frame.ids) if i.startswith(scope)]
        entities = await self.context.store.get_many(ids)
        found = {e.id for e in entities}
        self._send_value(
            {
                "type": "entities",
                "ref": frame.ref,
                "entities": [entity_value(e, self.codec) for e in entities],
                "missing": [i for i in frame.ids if i not in found],
            }
        )

    async def _list(self, frame: ListFrame) -> None:
        scope = await self._read_scope()
        prefix = frame.prefix
        if frame.namespace is not None:
            ns_prefix = frame.namespace + "/"
            if prefix.startswith(ns_prefix):
                pass
            elif ns_prefix.startswith(prefix) and "/" not in frame.namespace:
                prefix = ns_prefix
            else:
                self._send_value(
                    {"type": "entities", "ref": frame.ref, "entities": [], "next": None}
                )
                return
        if prefix.startswith(scope):
            pass
        elif scope.startswith(prefix):
            prefix = scope
        else:
            self._send_value({"type": "entities", "ref": frame.ref, "entities": [], "next": None})
            return
        ids = await self.context.store.list_ids(prefix, frame.limit, frame.cursor)
        entities = await self.context.store.get_many(ids)
        self._send_value(
            {
                "type": "entities",
                "ref": frame.ref,
                "entities": [entity_value(e, self.codec) for e in entities],
                "next": ids[-1] if len(ids) == frame.limit else None,
            }
        )

    # ------------------------------------------------------------------ subscriptions

    async def _subscribe(self, frame: SubscribeFrame) -> None:
        scope = await self._read_scope()
        if frame.sub in self.subscriptions:
            self._error(
                frame.ref,
                "duplicate_subscription",
                f"subscription {frame.sub!r} already exists on this connection",
            )
            return
        if len(self.subscriptions) >= self.max_subscriptions:
            self._error(
                frame.ref,
                "too_many_subscriptions",
                f"a connection may hold {self.max_subscriptions} subscriptions",
            )
            return
        cursor = None
        if frame.from_ is not None:
            try:
                cursor = parse_cursor(frame.from_)
            except ValueError as exc:
                self._error(frame.ref, "bad_cursor", str(exc))
                return
        sub = NativeSubscription(self, frame, scope)
        if not sub.patterns:
            self._error(
                frame.ref,
                "forbidden",
                f"the filter matches nothing under {scope!r}, which is all this token may read",
            )
            return
        if not frame.snapshot and cursor is None and not self.context.fanout.passed(self._written):
            # Live "from here": after this connection's own acknowledged writes too
            # (the fan-out reads them from the log a moment after their acks).
            await self.context.fanout.wait_past(self._written)
        self.subscriptions[sub.sub] = sub
        for pattern in sub.patterns:
            self.context.fanout.native_index.add(sub, pattern)
        if frame.snapshot or cursor is not None:
            sub.holding = []
            self._send_value({"type": "subscribed", "ref": frame.ref, "sub": sub.sub})
            self._start_sync(sub, cursor, None)
        else:
            # Live from here: every delta the fan-out dispatches from now on.
            cursor_text = format_cursor(self.context.fanout.cursor())
            self._send_value(
                {"type": "subscribed", "ref": frame.ref, "sub": sub.sub, "cursor": cursor_text}
            )

    def _unsubscribe(self, frame: UnsubscribeFrame) -> None:
        sub = self.subscriptions.get(frame.sub)
        if sub is None:
            self._error(
                frame.ref,
                "unknown_subscription",
                f"no subscription {frame.sub!r} on this connection",
            )
            return
        self._drop(sub)
        self._send_value({"type": "unsubscribed", "ref": frame.ref, "sub": frame.sub})

    def _drop(self, sub: NativeSubscription) -> None:
        sub.closed = True
        self.subscriptions.pop(sub.sub, None)
        for pattern in sub.patterns:
            self.context.fanout.native_index.remove(sub, pattern)
        if sub.scope is not None:
            sub.scope.cancel()
        sub.holding = None

    def _start_sync(
        self, sub: NativeSubscription, cursor: dict[int, Position] | None, reset: str | None
    ) -> None:
        scope = anyio.CancelScope()
        sub.scope = scope

        async def run() -> None:
            with scope:
                try:
                    if cursor is not None and reset is None:
                        problem = await self._check_cursor(cursor)
                        if problem is None:
                            await self._catch_up(sub, cursor)
                            return
                        await self._snapshot(sub, problem)
                    else:
                        await self._snapshot(sub, reset)
                except (LogUnavailable, Closed) as exc:
                    logger.warning("subscription %r: %s", sub.sub, exc)
                    if not sub.closed:
                        self._drop(sub)
                        self._error(
                            None,
                            "unavailable",
                            f"subscription {sub.sub!r} ended: {exc}",
                            sub=sub.sub,
                        )

        self.context.spawn(run)

    def overflow(self, sub: NativeSubscription) -> None:
        """The held buffer overflowed: start the subscription over, or give up."""
        sub.resets += 1
        if sub.resets > MAX_RESETS:
            self.ws.close(
                1013,
                f"subscription {sub.sub!r} cannot keep up with the update rate; reconnect later",
            )
            return
        self.reset(sub, f"more than {self.max_held} deltas arrived while reading the snapshot")

    def reset(self, sub: NativeSubscription, reason: str) -> None:
        """Start a subscription over: a ``reset`` frame, then a fresh snapshot."""
        if sub.scope is not None:
            sub.scope.cancel()
        # Whatever was conflated for it belongs to the state being replaced.
        for key in [k for k in self._pending if k[0] == sub.sub]:
            del self._pending[key]
        sub.holding = []
        sub.cut = None
        sub.sent_upto = {}
        self._start_sync(sub, None, reason)

    def reset_all(self, reason: str) -> None:
        """Start every subscription over (the hub missed deltas)."""
        for sub in list(self.subscriptions.values()):
            self.reset(sub, reason)

    async def _check_cursor(self, cursor: dict[int, Position]) -> str | None:
        """Why a resume from ``cursor`` is impossible, or None if it is possible."""
        partitions = self.context.store.keys.partitions
        if set(cursor) != set(range(partitions)):
            return f"the cursor must name all {partitions} partitions"
        for p, position in cursor.items():
            if not await self.context.store.has_delta(p, position.stream_id):
                return f"the delta log no longer reaches back to {position}"
        return None

    async def _catch_up(self, sub: NativeSubscription, cursor: dict[int, Position]) -> None:
        """Send exactly the deltas after ``cursor``, then the held ones, then go live."""
        store = self.context.store
        sent = dict(cursor)
        for p in range(store.keys.partitions):
            expected_seq = None
            while True:
                deltas = await store.read_range(p, sent[p].stream_id, CATCH_UP_BATCH)
                if not deltas:
                    break
                if expected_seq is not None and deltas[0].seq != expected_seq:
                    # Trimming overtook this reader: start over from a snapshot.
                    self.reset(sub, "the delta log was trimmed while catching up")
                    return
                expected_seq = deltas[-1].seq + 1
                for delta in deltas:
                    position = Position.of(p, delta.position)
                    sent[p] = position
                    if sub.matches(delta.entity_id):
                        self.queue_delta(sub, delta, position, DeltaEncoder(delta, position))
                await self._wait_writable()
        # No await from here on: the hand-off to live happens in one step.
        held, sub.holding = sub.holding or [], None
        for delta, position in held:
            if position > sent[position.partition]:
                self.queue_delta(sub, delta, position, DeltaEncoder(delta, position))
                sent[position.partition] = position
        sub.sent_upto = sent
        sub.resets = 0
        self._send_value({"type": "synced", "sub": sub.sub, "cursor": format_cursor(sent)})

    async def _snapshot(self, sub: NativeSubscription, reset: str | None) -> None:
        """Send the matching entities, then the held deltas they do not reflect."""
        if reset is not None:
            self._send_value({"type": "reset", "sub": sub.sub, "reason": reset})
        store = self.context.store
        plan = plan_snapshot(sub.patterns, sub.read_scope)
        cut = SnapshotCut()
        for p in range(store.keys.partitions):
            for prefix in plan.ranges:
                after: str | None = None
                while True:
                    page = await store.snapshot_range(p, prefix, after, self.page)
                    cut.add_page(p, prefix, page.last, Position.of(p, page.head))
                    await self._snapshot_chunk(sub, [e for e in page.entities if sub.matches(e.id)])
                    if page.last is None:
                        break
                    after = page.last
            ids = [i for i in plan.ids if store.keys.partition_of(i) == p]
            for start in range(0, len(ids), self.page):
                chunk = ids[start : start + self.page]
                page = await store.snapshot_ids(p, chunk)
                cut.add_ids(chunk, Position.of(p, page.head))
                await self._snapshot_chunk(sub, page.entities)
        self._send_value({"type": "snapshot", "sub": sub.sub, "entities": [], "done": True})
        # No await from here on: the hand-off to live happens in one step.
        held, sub.holding = sub.holding or [], None
        sub.cut = cut
        for delta, position in held:
            if not cut.reflected(delta.entity_id, position):
                self.queue_delta(sub, delta, position, DeltaEncoder(delta, position))
        # The fan-out may still be behind the positions the pages were read at; until
        # it passes them, the cut keeps filtering live deltas, and the client has no
        # exact cursor yet. Then it does: everything up to the fan-out's position.
        await self.context.fanout.wait_past(cut.latest())
        sub.cut = None
        sub.resets = 0
        cursor = format_cursor(self.context.fanout.cursor())
        self._send_value({"type": "synced", "sub": sub.sub, "cursor": cursor})

    async def _snapshot_chunk(self, sub: NativeSubscription, entities: list[Any]) -> None:
        if not entities:
            return
        await self._wait_writable()
        values = [entity_value(e, self.codec, sub.properties) for e in entities]
        self._send_value({"type": "snapshot", "sub": sub.sub, "entities": values, "done": False})

    # ------------------------------------------------------------------ outgoing

    def queue_delta(
        self, sub: NativeSubscription, delta: Delta, position: Position, encoder: DeltaEncoder
    ) -> None:
        """Send a delta to a subscription, or conflate it if the client is behind."""
        if self.paused or self._pending:
            key = (sub.sub, delta.entity_id)
            earlier = self._pending.get(key)
            if earlier is None:
                if len(self._pending) >= self.max_pending:
                    self.ws.close(
                        1013,
                        f"slow consumer: more than {self.max_pending} entities pending; reconnect and resume from your cursor",
                    )
                    self._pending.clear()
                    return
                self._pending[key] = (sub, delta, position)
                return
            self.conflated += 1
            merged = merge(earlier[1], delta)
            if merged is None:
                del self._pending[key]
            else:
                self._pending[key] = (sub, merged, position)
            return
        frame = encoder.frame(self.codec, sub.prefix, sub.properties, sub.touches)
        if frame is not None:
            self._out.append(frame)
            self._schedule_flush()

    def pause_writing(self) -> None:
        self.paused = True
        self._writable = asyncio.Event()

    def resume_writing(self) -> None:
        self.paused = False
        self._writable.set()
        if self._pending:
            self._flush_pending()

    def _flush_pending(self) -> None:
        items, self._pending = list(self._pending.values()), {}
        touched: dict[str, NativeSubscription] = {}
        for sub, delta, position in items:
            if sub.closed:
                continue
            body = DeltaEncoder(delta, position).body(
                self.codec, sub.properties, sub.touches, conflated=True
            )
            if body is not None:
                self._send(delta_frame(self.codec, sub.prefix, body))
            touched[sub.sub] = sub
        cursor = format_cursor(self.context.fanout.cursor())
        for sub in touched.values():
            if sub.synced:
                self._send_value({"type": "checkpoint", "sub": sub.sub, "cursor": cursor})

    def checkpoint(self) -> None:
        """Tell every live subscription how far the hub has read (called periodically)."""
        if self.paused or self._pending:
            return
        cursor = format_cursor(self.context.fanout.cursor())
        for sub in self.subscriptions.values():
            if sub.synced:
                self._send_value({"type": "checkpoint", "sub": sub.sub, "cursor": cursor})

    async def _wait_writable(self) -> None:
        while self.paused and self.ws.open:
            await self._writable.wait()

    def _send_value(self, value: dict[str, Any]) -> None:
        self._send(self.codec.encode(value))

    def _error(self, ref: Ref, code: str, message: str, sub: str | None = None) -> None:
        frame: dict[str, Any] = {"type": "error", "ref": ref, "code": code, "message": message}
        if sub is not None:
            frame["sub"] = sub
        self._send_value(frame)

    def _send(self, payload: bytes) -> None:
        self._out.append(encode_frame(payload, self.codec.text))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        """Write what is queued soon: at the end of the running dispatch if one runs
        (all of a delta-log read in one write), else at the next loop turn."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            dispatching = self._fanout.dispatching
            if dispatching is not None:
                dispatching.append(self)
            else:
                self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write every frame queued since the last flush, in one write."""
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        self._out = []
        # (write_frames checks that the connection is open.)
        self.ws.write_frames(out[0] if len(out) == 1 else b"".join(out), len(out))


def _refused(envelope: Envelope, code: str, message: str) -> dict[str, Any]:
    return {"eventId": envelope.event_id, "error": {"code": code, "message": message}}


def _failure(raw: Any, code: str, message: str) -> dict[str, Any]:
    event_id = raw.get("eventId") if isinstance(raw, dict) else None
    return {
        "eventId": event_id if isinstance(event_id, str) and event_id else None,
        "error": {"code": code, "message": message},
    }
