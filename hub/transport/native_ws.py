"""The native WebSocket protocol (subprotocols ``flux.v1`` and ``flux.v1.msgpack``).

One :class:`NativeSession` per connection; frames are described in docs/protocol.md.
This module is the I/O shell: it decodes frames, calls Redis (through the ingest and
the store), the tenancy and the fan-out, and writes frames. The protocol's rules live
in sans-I/O state machines in :mod:`hub.core.session`, each with loop-free tests:

- request order, publish pipelining and the request queue's bound:
  :class:`~hub.core.session.requests.RequestQueue`;
- acks in submission order and what they say: :mod:`hub.core.session.acks`;
- snapshot and catch-up hand-off to live, resets: :mod:`hub.core.session.sync`
  (driven by :mod:`.native_sync`);
- slow consumers' conflation and its bound: :class:`~hub.core.session.outbox.Outbox`.

Requests are handled by one task per connection that lives as long as the connection
(starting one per burst cost more than the request: bench/RESULTS.md). Its signals
are ``asyncio.Event``: anyio's yield to the loop on every wait, and on the publish
path each extra turn of the loop may wait behind a whole dispatch.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from pydantic import ValidationError

from ..core.cursor import format_cursor
from ..core.session.acks import AckOrder, PreparedPublish, acknowledge
from ..core.session.outbox import OVERLOADED, Outbox
from ..core.session.requests import RequestQueue
from ..core.session.subscribe import list_prefix
from ..engine.auth import BearerProblem
from ..engine.listing import list_page, optional_where
from ..engine.tenancy import AuthFailure
from ..errors import (
    Closed,
    HubError,
    LogUnavailable,
    Overloaded,
    ProtocolError,
    close_code_for,
)
from ..wire.codec import JSON, MSGPACK, Codec, DecodeError
from ..wire.frames import (
    CLIENT_FRAMES,
    AuthFrame,
    GetFrame,
    ListFrame,
    PublishFrame,
    SubscribeFrame,
    UnsubscribeFrame,
    describe_error,
    ref_of,
)
from ..wire.framing import encode_frame
from ..wire.native import DeltaEncoder, delta_frame, entity_value
from ..wire.replies import (
    Authenticated,
    Checkpoint,
    Entities,
    ErrorReply,
    ServerFrame,
    Synced,
    Unsubscribed,
)
from .native_publish import PublishChecks
from .native_sync import Subscriptions, send_merged

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..config import FanoutSettings, GatewaySettings
    from ..core.cursor import Position
    from ..core.model import Delta
    from ..engine.fanout import Fanout
    from ..engine.ingest import Ingest, Ticket
    from ..engine.publish import PublishPolicy
    from ..engine.tenancy import Tenancy
    from ..store import Applied, Store
    from ..wire.frames import ClientFrame
    from .native_sync import NativeSubscription
    from .ws import WebSocket

__all__ = ["NativeContext", "NativeSession", "NativeStatistics"]

logger = logging.getLogger("hub.gateway")

#: Publish submissions of one connection queued for Redis and not yet acknowledged;
#: past it the session waits for the oldest before parsing more. A few keep parsing
#: and applying overlapped; more would only hold memory.
PUBLISHES_IN_FLIGHT = 4

#: Publish frames submitted together, and what Redis made of them (or why not yet).
_Submission: TypeAlias = "tuple[list[PreparedPublish], Ticket | Closed | None]"


@dataclass(frozen=True, slots=True)
class NativeContext:
    """What every native session of a hub shares: its settings and collaborators."""

    gateway: GatewaySettings
    fanout_settings: FanoutSettings
    #: Limits, authorization and rate limits of publishing (shared with REST).
    policy: PublishPolicy
    store: Store
    ingest: Ingest
    fanout: Fanout
    tenancy: Tenancy
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


class NativeSession:
    """One native-protocol connection: the shell around :mod:`hub.core.session`."""

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
        #: Subscriptions made under private reads are checked again when a namespace goes.
        self._unwatch = context.tenancy.watch(self._recheck)
        gateway, fanout = context.gateway, context.fanout_settings
        self.max_soft_frame = gateway.max_frame_bytes
        self.checks = PublishChecks(context.policy, context.tenancy, gateway.max_events_per_frame)
        self.requests = RequestQueue(
            gateway.max_pending_requests, gateway.max_events_per_frame, PUBLISHES_IN_FLIGHT
        )
        self.acks: AckOrder[_Submission] = AckOrder()
        self.outbox: Outbox[NativeSubscription] = Outbox(fanout.max_pending_entities)
        self.subscriptions = Subscriptions(
            self,
            store=context.store,
            fanout=context.fanout,
            spawn=context.spawn,
            limit=gateway.max_subscriptions,
            max_held=fanout.max_held_deltas,
            page=fanout.snapshot_page,
        )
        #: Whether the task serving requests was started (it runs until the close).
        self._serving = False
        self._closed = False
        #: Set when a request is queued (or the connection closed).
        self._requested = asyncio.Event()
        #: Set while no publish waits for its ack.
        self._acked = asyncio.Event()
        self._acked.set()
        #: Set (and replaced) whenever acks were sent.
        self._ack_sent = asyncio.Event()
        #: Per partition, the newest delta of this connection's acknowledged publishes.
        self._written: dict[int, Position] = {}
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()
        self._fanout = context.fanout
        self._writable = asyncio.Event()
        self._writable.set()

    def statistics(self) -> NativeStatistics:
        """This session's queues (read at scrape time)."""
        return NativeStatistics(
            subscriptions=len(self.subscriptions),
            requests_queued=len(self.requests.queue),
            held_deltas=self.subscriptions.held(),
            conflated_pending=len(self.outbox.pending),
            conflated=self.outbox.conflated,
        )

    # ------------------------------------------------------------------ incoming

    def on_message(self, data: bytes, text: bool) -> None:
        if len(data) > self.max_soft_frame:
            message = f"frame of {len(data)} bytes is over the limit of {self.max_soft_frame}"
            self.send(ErrorReply(None, "too_large", message))
            return
        codec = JSON if text else MSGPACK
        try:
            raw = codec.decode(data)
        except DecodeError as exc:
            self.send(ErrorReply(ref_of(exc.value), "bad_frame", str(exc)))
            return
        try:
            frame = CLIENT_FRAMES.validate_python(raw)
        except ValidationError as exc:
            self.send(ErrorReply(ref_of(raw), "bad_frame", describe_error(exc)))
            return
        if (
            isinstance(frame, PublishFrame)
            and self.requests.can_publish_now(len(self.acks))
            and not self.context.tenancy.enabled
            and self.context.ingest.has_room()
        ):
            self._publish_now(frame)
            return
        # Everything else goes through one queue: handled in the order sent.
        if self.requests.push(frame):
            self.ws.transport.pause_reading()
        if self._serving:
            self._requested.set()
        else:
            self._serving = True
            self.context.spawn(self._serve_requests)

    def on_close(self) -> None:
        self._closed = True
        self._unwatch()
        self.subscriptions.close()
        self.requests.clear()
        self.outbox.clear()
        self._writable.set()
        self._requested.set()

    # ------------------------------------------------------------------ requests

    async def _serve_requests(self) -> None:
        """Handle requests in order until the connection closes."""
        try:
            while not self._closed:
                work = self.requests.take() if self.ws.open else None
                if work is None:
                    self._requested.clear()
                    await self._requested.wait()
                    continue
                if work.resume_reading:
                    self.ws.transport.resume_reading()
                frame: ClientFrame = work.request or work.publishes[0]
                try:
                    if work.publishes:
                        await self._publish(work.publishes)
                        continue
                    # Anything else answers after the publishes sent before it.
                    await self._acked.wait()
                    await self._handle(frame)
                except AuthFailure as exc:
                    self.send(ErrorReply(frame.ref, exc.code, exc.message))
                except ProtocolError as exc:
                    self.send(ErrorReply(frame.ref, "bad_frame", str(exc)))
                except (LogUnavailable, Closed) as exc:
                    self.send(ErrorReply(frame.ref, "unavailable", str(exc)))
        finally:
            self._serving = False

    async def _handle(self, frame: ClientFrame) -> None:
        if isinstance(frame, SubscribeFrame):
            scope = await self._read_scope()
            token = self.token if isinstance(self.token, str) else None
            await self.subscriptions.subscribe(frame, scope, self._written, token)
        elif isinstance(frame, UnsubscribeFrame):
            if self.subscriptions.unsubscribe(frame.sub):
                self.send(Unsubscribed(frame.ref, frame.sub))
            else:
                message = f"no subscription {frame.sub!r} on this connection"
                self.send(ErrorReply(frame.ref, "unknown_subscription", message))
        elif isinstance(frame, GetFrame):
            await self._get(frame)
        elif isinstance(frame, ListFrame):
            await self._list(frame)
        elif isinstance(frame, AuthFrame):
            await self._auth(frame)

    # ------------------------------------------------------------------ publishing

    async def _publish(self, frames: list[PublishFrame]) -> None:
        """Queue publish frames as one submission; their acks go out, in order, from
        :meth:`_send_acks` once Redis has applied them."""
        prepared = [await self.checks.prepare(frame, self.token) for frame in frames]
        events = [e for p in prepared for _, e in p.accepted]
        ticket: Ticket | Closed | None = None
        if events:
            try:
                ticket = await self.context.ingest.enqueue(events, self._on_applied)
            except Closed as exc:
                ticket = exc
        self._track(prepared, ticket)
        while self.requests.over_in_flight(len(self.acks)):
            await self._ack_sent.wait()

    def _publish_now(self, frame: PublishFrame) -> None:
        """:meth:`_publish` from the socket's callback, for a frame with nothing ahead
        of it, when auth is off and the ingest has room: nothing to await, so the
        events reach the ingest a turn of the loop sooner than through the request
        task (under fan-out, a turn of the loop may wait behind a whole dispatch)."""
        prepared = self.checks.parse(frame)
        if prepared.refusal is None:
            self.checks.admit_open(prepared)
        ticket: Ticket | Closed | None = None
        if prepared.accepted:
            events = [e for _, e in prepared.accepted]
            try:
                ticket = self.context.ingest.try_enqueue(events, self._on_applied)
            except Closed as exc:
                ticket = exc
            assert ticket is not None, "has_room() was checked"
        self._track([prepared], ticket)

    def _track(self, prepared: list[PreparedPublish], ticket: Ticket | Closed | None) -> None:
        """Remember a submission until its acks are sent (now, if nothing is pending)."""
        self.acks.push((prepared, ticket))
        self._acked.clear()
        self._send_acks()

    def _on_applied(self, ticket: Ticket) -> None:
        self._send_acks()

    def _send_acks(self) -> None:
        """Acknowledge, in order, the submissions at the head whose events are settled."""
        settled = self.acks.settled(_is_settled)
        for prepared, ticket in settled:
            outcome: list[Applied] | str = []
            if isinstance(ticket, Closed):
                outcome = str(ticket)
            elif ticket is not None:
                if ticket.error is not None:
                    outcome = str(ticket.error)
                else:
                    assert ticket.applied is not None
                    outcome = ticket.applied
            for reply in acknowledge(prepared, outcome, self._written):
                self.send(reply)
        if settled:
            ack_sent, self._ack_sent = self._ack_sent, asyncio.Event()
            ack_sent.set()
        if not self.acks:
            self._acked.set()

    # ------------------------------------------------------------------ reads

    async def _auth(self, frame: AuthFrame) -> None:
        principal = await self.context.tenancy.principal(frame.token)
        if principal.namespace is None and not principal.admin:
            self.send(ErrorReply(frame.ref, "unauthorized", "unknown token"))
            return
        self.token = frame.token
        self.send(Authenticated(frame.ref, principal.namespace, principal.admin))

    async def _read_scope(self) -> str:
        """Under private reads, the prefix this connection may read ("" = all).

        Raises:
            AuthFailure: private reads and no valid token.
        """
        if not self.context.tenancy.private_reads:
            return ""
        # Resolved on every read (cached by the tenancy): a deleted namespace's stops.
        token = self.token if isinstance(self.token, str) else None
        scope = (await self.context.tenancy.principal(token)).read_prefix
        if scope is None:
            raise AuthFailure(401, "private reads: authenticate with a namespace token first")
        return scope

    def _recheck(self) -> None:
        if self.subscriptions.grants:
            self.context.spawn(lambda: self.subscriptions.recheck(self.context.tenancy))

    async def _get(self, frame: GetFrame) -> None:
        scope = await self._read_scope()
        ids = [i for i in dict.fromkeys(frame.ids) if i.startswith(scope)]
        entities = await self.context.store.get_many(ids)
        found = {e.id for e in entities}
        values = [entity_value(e, self.codec) for e in entities]
        missing = [i for i in frame.ids if i not in found]
        self.send(Entities(frame.ref, values, missing=missing))

    async def _list(self, frame: ListFrame) -> None:
        prefix = list_prefix(frame.prefix, frame.namespace, await self._read_scope())
        where = optional_where(frame.where)
        page = await list_page(self.context.store, prefix, frame.limit, frame.cursor, where)
        values = [entity_value(e, self.codec) for e in page.entities]
        self.send(Entities(frame.ref, values, next=page.next))

    # ------------------------------------------------------------------ outgoing

    def reset_all(self, reason: str) -> None:
        """Start every subscription over (the hub missed deltas)."""
        self.subscriptions.reset_all(reason)

    def queue_delta(
        self, sub: NativeSubscription, delta: Delta, position: Position, encoder: DeltaEncoder
    ) -> None:
        """Send a delta to a subscription, or conflate it if the client is behind."""
        outbox = self.outbox
        if outbox.direct:  # (what admit() would say, without the call: per delivery)
            frame = encoder.frame(self.codec, sub.prefix, sub.properties, sub.touches)
            if frame is not None:
                self._out.append(frame)
                self._schedule_flush()
        elif outbox.admit(sub, sub.name, delta, position) is OVERLOADED:
            limit = self.outbox.max_pending
            self.fail(
                Overloaded(
                    f"slow consumer: more than {limit} entities pending; "
                    "reconnect and resume from your cursor"
                )
            )

    def forget_pending(self, sub: str) -> None:
        self.outbox.forget(sub)

    def fail(self, exc: Exception) -> None:
        """End the connection because of ``exc`` (its close code says why)."""
        if isinstance(exc, HubError):
            reason = str(exc)
        else:
            logger.error("native connection %s failed: %r", self.ws.client, exc)
            reason = "internal error while sending a delta"
        self.ws.close(close_code_for(exc), reason)

    def pause_writing(self) -> None:
        self.outbox.pause()
        self._writable = asyncio.Event()

    def resume_writing(self) -> None:
        self._writable.set()
        codec = self.codec
        touched = send_merged(
            self.outbox, codec, lambda sub, body: self._send(delta_frame(codec, sub.prefix, body))
        )
        held = self.outbox.take_held()  # synced frames that waited for the merged deltas
        if touched or held:
            cursor = format_cursor(self.context.fanout.cursor())
            for sub in touched.values():
                if sub.synced and sub.name not in held:
                    self.send(Checkpoint(sub.name, cursor))
            for name in held:
                self.send(Synced(name, cursor))

    def checkpoint(self) -> None:
        """Tell every live subscription how far the hub has read (called periodically)."""
        if self.outbox.behind:
            return
        cursor = format_cursor(self.context.fanout.cursor())
        for sub in self.subscriptions.synced():
            self.send(Checkpoint(sub.name, cursor))

    async def wait_writable(self) -> None:
        while self.outbox.paused and self.ws.open:
            await self._writable.wait()

    def send(self, frame: ServerFrame) -> None:
        if type(frame) is Synced and not self.outbox.may_send_synced(frame.sub):
            return  # held until the merged deltas its cursor covers are sent
        self._send(self.codec.encode(frame.value()))

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


def _is_settled(submission: _Submission) -> bool:
    ticket = submission[1]
    return not (ticket is not None and not isinstance(ticket, Closed) and not ticket.done.is_set())
