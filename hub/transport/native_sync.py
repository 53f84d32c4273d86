"""The subscriptions of one native connection: the I/O around their hand-off rules.

The rules — what is held, skipped or sent, when a subscription resets or gives up,
how a catch-up notices trimming — are in :mod:`hub.core.session.sync`; this module
reads the snapshot pages and the delta log they ask for, registers subscriptions with
the fan-out, and runs each snapshot or catch-up as a task that a reset or an
unsubscribe cancels.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ..core.cursor import Position, format_cursor
from ..core.handoff import SnapshotCut, plan_snapshot
from ..core.session.subscribe import Start, plan_subscription
from ..core.session.sync import DELIVER, OVERFLOW, CatchUp, SubscriptionSync
from ..core.session.view import WhereView
from ..engine.listing import optional_where
from ..errors import Closed, LogUnavailable, Overloaded, WhereError
from ..wire.native import DeltaEncoder, SubPrefix, entity_value
from ..wire.replies import ErrorReply, Reset, ServerFrame, Snapshot, Subscribed, Synced
from .where_sync import sync_view

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..core.model import Delta
    from ..core.session.outbox import Outbox
    from ..core.where import Where
    from ..engine.fanout import Fanout
    from ..engine.tenancy import Tenancy
    from ..store import Store
    from ..wire.codec import Codec
    from ..wire.frames import SubscribeFrame

__all__ = ["NativeSubscription", "Output", "Subscriptions", "WhereSubscription", "send_merged"]

logger = logging.getLogger("hub.gateway")

#: Deltas read per round trip while catching up.
CATCH_UP_BATCH = 1000
#: Entities a ``where`` subscription's view may hold (its id filter's): past that
#: the subscription ends with ``too_large`` (docs/protocol.md, Value filters).
MAX_VIEW_ENTITIES = 10_000
#: Per hub (its fan-out), the value filters in use: one object per distinct filter,
#: forgotten when unused. Per hub: a ``Where`` remembers answers by (id, version),
#: which name one state only within one hub's log.
_WHERES: weakref.WeakKeyDictionary[Fanout, weakref.WeakValueDictionary[Where, Where]] = (
    weakref.WeakKeyDictionary()
)


def send_merged(
    outbox: Outbox[NativeSubscription],
    codec: Codec,
    write: Callable[[NativeSubscription, tuple[bytes, int]], None],
) -> dict[str, NativeSubscription]:
    """Once the socket drains: hand each delta the outbox merged meanwhile to ``write``
    (its body marked ``conflated``; none for a closed subscription or a delta that
    changes nothing it shows). Returns the live subscriptions touched, by name: the
    caller tells each how far it is (its own frame and id rules)."""
    touched: dict[str, NativeSubscription] = {}
    for sub, delta, position in outbox.resume():
        if sub.closed:
            continue
        body = DeltaEncoder(delta, position).body(
            codec, sub.properties, sub.touches, conflated=True
        )
        if body is not None:
            write(sub, body)
        touched[sub.name] = sub
    return touched


class Output(Protocol):
    """What the subscriptions need of their connection (:class:`NativeSession`)."""

    codec: Codec

    def send(self, frame: ServerFrame) -> None: ...
    def queue_delta(
        self, sub: NativeSubscription, delta: Delta, position: Position, encoder: DeltaEncoder
    ) -> None: ...
    async def wait_writable(self) -> None: ...
    def forget_pending(self, sub: str) -> None: ...
    def fail(self, exc: Exception) -> None: ...


class NativeSubscription(SubscriptionSync):
    """One subscription: its hand-off state, projection and encoded name."""

    __slots__ = ("on_overflow", "output", "prefix", "properties", "scope", "touches")

    def __init__(
        self, output: Output, frame: SubscribeFrame, patterns: Any, read_scope: str, max_held: int
    ) -> None:
        super().__init__(frame.sub, patterns, read_scope, max_held)
        self.output = output
        self.properties = frozenset(frame.properties) if frame.properties is not None else None
        self.touches = frame.touches
        self.prefix = SubPrefix.of(output.codec, frame.sub)
        #: The running snapshot or catch-up, cancelled by a reset or an unsubscribe.
        self.scope: anyio.CancelScope | None = None
        #: Set by :class:`Subscriptions`: called when the held buffer overflows.
        self.on_overflow: Callable[[NativeSubscription], None] = lambda sub: None

    def on_delta(self, delta: Delta, position: Position, encoder: DeltaEncoder) -> None:
        """Called by the fan-out for every dispatched delta this subscription matches."""
        if not self.direct:  # (the common case skips a call: this runs per delivery)
            verdict = self.offer(delta, position)
            if verdict is not DELIVER:
                if verdict is OVERFLOW:
                    self.on_overflow(self)
                return
        self.output.queue_delta(self, delta, position, encoder)

    def broken(self, exc: Exception) -> None:
        """Sending a delta failed unexpectedly: the connection cannot go on."""
        self.output.fail(exc)


class WhereSubscription(NativeSubscription):
    """A subscription with a ``where``: every delta of its id filter goes through its
    view (hub/core/session/view.py), which says what the client gets."""

    __slots__ = ("on_view_full", "snapshot", "view")

    def __init__(
        self,
        output: Output,
        frame: SubscribeFrame,
        patterns: Any,
        read_scope: str,
        max_held: int,
        view: WhereView,
    ) -> None:
        super().__init__(output, frame, patterns, read_scope, max_held)
        self.view = view
        #: The client asked for the matching entities first.
        self.snapshot = frame.snapshot
        #: Set by :class:`Subscriptions`: the view outgrew its bound.
        self.on_view_full: Callable[[WhereSubscription, WhereError], None] = lambda s, e: None

    def on_delta(self, delta: Delta, position: Position, encoder: DeltaEncoder) -> None:
        if not self.direct:
            verdict = self.offer(delta, position)
            if verdict is not DELIVER:
                if verdict is OVERFLOW:
                    self.on_overflow(self)
                return
        self.deliver(delta, position, encoder)

    def deliver(
        self, delta: Delta, position: Position, encoder: DeltaEncoder | None = None
    ) -> None:
        """A delta of the id filter, live: through the view."""
        try:
            out = self.view.apply(delta)
        except WhereError as exc:
            self.on_view_full(self, exc)
            return
        if out is not None:
            if out is not delta or encoder is None:
                encoder = DeltaEncoder(out, position)
            self.output.queue_delta(self, out, position, encoder)

    def send_view(self, delta: Delta, position: Position) -> None:
        """A delta the view made (a resume's refresh): to the client as it is."""
        self.output.queue_delta(self, delta, position, DeltaEncoder(delta, position))


class Subscriptions:
    """The subscriptions of one native connection."""

    def __init__(
        self,
        output: Output,
        *,
        store: Store,
        fanout: Fanout,
        spawn: Callable[[Callable[[], Awaitable[None]]], None],
        limit: int,
        max_held: int,
        page: int,
    ) -> None:
        self.output = output
        self.store = store
        self.fanout = fanout
        self.spawn = spawn
        self.limit = limit
        self.max_held = max_held
        self.page = page
        self.by_name: dict[str, NativeSubscription] = {}
        #: Under private reads: read scope -> the token that was granted it, checked
        #: again when a namespace is deleted (:meth:`recheck`).
        self.grants: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.by_name)

    def held(self) -> int:
        return sum(len(s.holding or ()) for s in self.by_name.values())

    async def subscribe(
        self,
        frame: SubscribeFrame,
        scope: str,
        written: dict[int, Position],
        token: str | None = None,
    ) -> None:
        """Register a subscription and start it as its frame asks (``scope``: the
        prefix ``token`` may read under private reads)."""
        where = optional_where(frame.where)  # (a WhereError is a bad_frame reply)
        if where is not None:
            # One object per distinct filter: its memo answers the subscriptions that
            # share it once per delta (Where.matches_state).
            where = _WHERES.setdefault(self.fanout, weakref.WeakValueDictionary()).setdefault(
                where, where
            )
        plan = plan_subscription(frame, self.by_name, len(self.by_name), self.limit, scope)
        if isinstance(plan, ErrorReply):
            self.output.send(plan)
            return
        if scope and token is not None:
            self.grants[scope] = token
        sub: NativeSubscription
        if where is not None:
            view = WhereView(where, MAX_VIEW_ENTITIES)
            sub = WhereSubscription(self.output, frame, plan.patterns, scope, self.max_held, view)
            sub.on_view_full = self._view_full
        else:
            sub = NativeSubscription(self.output, frame, plan.patterns, scope, self.max_held)
        sub.on_overflow = self._overflow
        if plan.start is Start.LIVE and not self.fanout.passed(written):
            # Live "from here": after this connection's own acknowledged writes too
            # (the fan-out reads them from the log a moment after their acks).
            await self.fanout.wait_past(written)
        self.by_name[sub.name] = sub
        for pattern in sub.patterns:
            self.fanout.native_index.add(sub, pattern)
        if plan.start is Start.LIVE and where is None:
            cursor = format_cursor(self.fanout.cursor())
            self.output.send(Subscribed(frame.ref, sub.name, cursor))
            return
        sub.hold()
        self.output.send(Subscribed(frame.ref, sub.name))
        self._start_sync(sub, plan.cursor, None)

    async def recheck(self, tenancy: Tenancy) -> None:
        """End, each with an ``unauthorized`` error naming it, the subscriptions whose
        token no longer reads what they read (its namespace was deleted): they would
        otherwise go on to show a later owner's entities of that name."""
        for scope, token in list(self.grants.items()):
            if (await tenancy.principal(token)).read_prefix == scope:
                continue
            self.grants.pop(scope, None)
            for sub in [s for s in self.by_name.values() if s.read_scope == scope]:
                self._drop(sub)
                message = f"subscription {sub.name!r} ended: its token no longer reads {scope!r}"
                self.output.send(ErrorReply(None, "unauthorized", message, sub=sub.name))

    def unsubscribe(self, name: str) -> bool:
        """Drop a subscription; False if there is none of that name."""
        sub = self.by_name.get(name)
        if sub is None:
            return False
        self._drop(sub)
        return True

    def close(self) -> None:
        for sub in list(self.by_name.values()):
            self._drop(sub)

    def _drop(self, sub: NativeSubscription) -> None:
        sub.close()
        self.by_name.pop(sub.name, None)
        for pattern in sub.patterns:
            self.fanout.native_index.remove(sub, pattern)
        if sub.scope is not None:
            sub.scope.cancel()

    def reset(self, sub: NativeSubscription, reason: str) -> None:
        """Start a subscription over: a ``reset`` frame, then a fresh snapshot."""
        if sub.scope is not None:
            sub.scope.cancel()
        # Whatever was conflated for it belongs to the state being replaced.
        self.output.forget_pending(sub.name)
        sub.hold()
        self._start_sync(sub, None, reason)

    def reset_all(self, reason: str) -> None:
        """Start every subscription over (the hub missed deltas)."""
        for sub in list(self.by_name.values()):
            self.reset(sub, reason)

    def synced(self) -> list[NativeSubscription]:
        return [s for s in self.by_name.values() if s.synced]

    def _overflow(self, sub: NativeSubscription) -> None:
        if sub.overflowed():
            self.output.fail(
                Overloaded(
                    f"subscription {sub.name!r} cannot keep up with the update rate; "
                    "reconnect later"
                )
            )
            return
        self.reset(sub, f"more than {self.max_held} deltas arrived while reading the snapshot")

    def _start_sync(
        self, sub: NativeSubscription, cursor: dict[int, Position] | None, reset: str | None
    ) -> None:
        scope = anyio.CancelScope()
        sub.scope = scope

        async def run() -> None:
            with scope:
                try:
                    if isinstance(sub, WhereSubscription):
                        await self._sync_view(sub, cursor, reset)
                    elif cursor is not None:
                        problem = await self._check_cursor(cursor)
                        if problem is None:
                            await self._catch_up(sub, cursor)
                            return
                        await self._snapshot(sub, problem)
                    else:
                        await self._snapshot(sub, reset)
                except WhereError as exc:
                    self._view_full(sub, exc)
                except (LogUnavailable, Closed) as exc:
                    logger.warning("subscription %r: %s", sub.name, exc)
                    if not sub.closed:
                        self._drop(sub)
                        message = f"subscription {sub.name!r} ended: {exc}"
                        self.output.send(ErrorReply(None, "unavailable", message, sub=sub.name))

        self.spawn(run)

    async def _sync_view(
        self, sub: WhereSubscription, cursor: dict[int, Position] | None, reset: str | None
    ) -> None:
        """Start a ``where`` subscription (hub/transport/where_sync.py)."""
        if cursor is not None:
            problem = await self._check_cursor(cursor)
            if problem is not None:
                cursor, reset = None, problem
        snapshot = reset is not None or sub.snapshot
        trimmed = await sync_view(
            sub,
            store=self.store,
            fanout=self.fanout,
            output=self.output,
            page=self.page,
            cursor=cursor,
            reset=reset,
            send_snapshot=snapshot,
        )
        if trimmed is not None:
            self.reset(sub, trimmed)

    def _view_full(self, sub: NativeSubscription, exc: WhereError) -> None:
        if not sub.closed:
            self._drop(sub)
            message = f"subscription {sub.name!r} ended: {exc}"
            self.output.send(ErrorReply(None, "too_large", message, sub=sub.name))

    async def _check_cursor(self, cursor: dict[int, Position]) -> str | None:
        """Why a resume from ``cursor`` is impossible, or None if it is possible."""
        partitions = self.store.keys.partitions
        if set(cursor) != set(range(partitions)):
            return f"the cursor must name all {partitions} partitions"
        for p, position in cursor.items():
            if not await self.store.has_delta(p, position.stream_id):
                return f"the delta log no longer reaches back to {position}"
        return None

    async def _catch_up(self, sub: NativeSubscription, cursor: dict[int, Position]) -> None:
        """Send exactly the deltas after ``cursor``, then the held ones, then go live."""
        reading = CatchUp(cursor)
        for p in range(self.store.keys.partitions):
            while True:
                deltas = await self.store.read_range(p, reading.sent[p].stream_id, CATCH_UP_BATCH)
                matched = reading.accept(p, deltas, sub)
                if matched is None:
                    # Trimming overtook this reader: start over from a snapshot.
                    self.reset(sub, "the delta log was trimmed while catching up")
                    return
                if not deltas:
                    break
                self._deliver(sub, matched)
                await self.output.wait_writable()
        # No await from here on: the hand-off to live happens in one step.
        self._deliver(sub, sub.finish_catch_up(reading.sent))
        self.output.send(Synced(sub.name, format_cursor(reading.sent)))

    async def _snapshot(self, sub: NativeSubscription, reset: str | None) -> None:
        """Send the matching entities, then the held deltas they do not reflect."""
        if reset is not None:
            self.output.send(Reset(sub.name, reset))
        store = self.store
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
                page_of_ids = await store.snapshot_ids(p, chunk)
                cut.add_ids(chunk, Position.of(p, page_of_ids.head))
                await self._snapshot_chunk(sub, page_of_ids.entities)
        self.output.send(Snapshot(sub.name, [], done=True))
        # No await from here on: the hand-off to live happens in one step.
        self._deliver(sub, sub.finish_snapshot(cut))
        # The fan-out may still be behind the positions the pages were read at; until
        # it passes them, the cut keeps filtering live deltas, and the client has no
        # exact cursor yet. Then it does: everything up to the fan-out's position.
        await self.fanout.wait_past(cut.latest())
        sub.passed_cut()
        self.output.send(Synced(sub.name, format_cursor(self.fanout.cursor())))

    async def _snapshot_chunk(self, sub: NativeSubscription, entities: list[Any]) -> None:
        if not entities:
            return
        await self.output.wait_writable()
        codec = self.output.codec
        values = [entity_value(e, codec, sub.properties) for e in entities]
        self.output.send(Snapshot(sub.name, values, done=False))

    def _deliver(self, sub: NativeSubscription, deltas: list[tuple[Delta, Position]]) -> None:
        if isinstance(sub, WhereSubscription):
            for delta, position in deltas:
                sub.deliver(delta, position)
            return
        for delta, position in deltas:
            self.output.queue_delta(sub, delta, position, DeltaEncoder(delta, position))
