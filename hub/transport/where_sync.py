"""How a ``where`` subscription starts: the I/O around its view (hub/core/session/view.py).

A ``where`` subscription always reads the snapshot of its id filter, into its view
(the hub's replica), whatever the client asked for:

- ``snapshot: true``: the matching entities go out as ``snapshot`` chunks;
- live (neither ``snapshot`` nor ``from``): nothing goes out; the cursor comes with
  ``synced`` (from there, members' deltas, entries and ``left``);
- ``from: <cursor>``: the delta log is read from the cursor up to where the snapshot
  was read, and each entity touched in between is refreshed — an entry with its full
  state if it matches now, else a ``left`` (ignored by a client not holding it). The
  entities not touched are as the client holds them. That is the client's view at
  the snapshot, exactly.

Then, as for any subscription, the held deltas the snapshot does not reflect, and
``synced`` once the fan-out has passed the snapshot's positions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..core.cursor import Position, format_cursor
from ..core.handoff import SnapshotCut, plan_snapshot
from ..core.session.sync import CatchUp
from ..wire.native import entity_value
from ..wire.replies import Reset, ServerFrame, Snapshot, Synced

if TYPE_CHECKING:
    from ..core.index import Pattern
    from ..core.model import Delta, Entity
    from ..core.session.sync import Held
    from ..core.session.view import WhereView
    from ..engine.fanout import Fanout
    from ..store import Store
    from ..wire.codec import Codec

__all__ = ["CATCH_UP_BATCH", "ViewOutput", "ViewSubscription", "sync_view"]

#: Deltas read per round trip while looking for what changed since a cursor.
CATCH_UP_BATCH = 1000


class ViewOutput(Protocol):
    codec: Codec

    def send(self, frame: ServerFrame) -> None: ...
    async def wait_writable(self) -> None: ...


class ViewSubscription(Protocol):
    """What this module needs of a ``where`` subscription (native_sync.py)."""

    @property
    def name(self) -> str: ...
    @property
    def patterns(self) -> list[Pattern]: ...
    @property
    def read_scope(self) -> str: ...
    @property
    def properties(self) -> frozenset[str] | None: ...
    @property
    def view(self) -> WhereView: ...

    def matches(self, entity_id: str) -> bool: ...
    def finish_snapshot(self, cut: SnapshotCut) -> list[Held]: ...
    def passed_cut(self) -> None: ...
    def deliver(self, delta: Delta, position: Position) -> None: ...
    def send_view(self, delta: Delta, position: Position) -> None: ...


async def sync_view(
    sub: ViewSubscription,
    *,
    store: Store,
    fanout: Fanout,
    output: ViewOutput,
    page: int,
    cursor: dict[int, Position] | None,
    reset: str | None,
    send_snapshot: bool,
) -> str | None:
    """Read the view's snapshot, bring the client to it, and go live (see above).

    Returns:
        None, or why the subscription must start over (the log was trimmed past the
        cursor while reading it).

    Raises:
        WhereError: the id filter selects more entities than the view may hold.
    """
    if reset is not None:
        output.send(Reset(sub.name, reset))
    view = sub.view
    view.clear()
    plan = plan_snapshot(sub.patterns, sub.read_scope)
    cut = SnapshotCut()

    async def load(entities: list[Entity]) -> None:
        matching = [e for e in entities if view.load(e)]
        if send_snapshot and matching:
            await output.wait_writable()
            values = [entity_value(e, output.codec, sub.properties) for e in matching]
            output.send(Snapshot(sub.name, values, done=False))

    for p in range(store.keys.partitions):
        for prefix in plan.ranges:
            after: str | None = None
            while True:
                got = await store.snapshot_range(p, prefix, after, page)
                cut.add_page(p, prefix, got.last, Position.of(p, got.head))
                await load([e for e in got.entities if sub.matches(e.id)])
                if got.last is None:
                    break
                after = got.last
        ids = [i for i in plan.ids if store.keys.partition_of(i) == p]
        for start in range(0, len(ids), page):
            chunk = ids[start : start + page]
            got_ids = await store.snapshot_ids(p, chunk)
            cut.add_ids(chunk, Position.of(p, got_ids.head))
            await load(list(got_ids.entities))
    if send_snapshot:
        output.send(Snapshot(sub.name, [], done=True))
    if cursor is not None:
        touched = await _touched_since(sub, store, cursor, cut)
        if touched is None:
            return "the delta log was trimmed while catching up"
        for delta, position in touched:
            sub.send_view(view.refresh(delta), position)
    # No await from here on: the hand-off to live happens in one step.
    for delta, position in sub.finish_snapshot(cut):
        sub.deliver(delta, position)
    await fanout.wait_past(cut.latest())
    sub.passed_cut()
    output.send(Synced(sub.name, format_cursor(fanout.cursor())))
    return None


async def _touched_since(
    sub: ViewSubscription, store: Store, cursor: dict[int, Position], cut: SnapshotCut
) -> list[Held] | None:
    """Per entity of the id filter changed after ``cursor`` and before the snapshot
    read it: its newest such delta (memory: one per entity, at most the log's).
    None if the log was trimmed meanwhile."""
    reading = CatchUp(cursor)
    latest = cut.latest()
    newest: dict[str, Held] = {}
    for p in range(store.keys.partitions):
        end = latest.get(p)
        while end is not None and reading.sent[p] < end:
            deltas = await store.read_range(p, reading.sent[p].stream_id, CATCH_UP_BATCH)
            matched = reading.accept(p, deltas, sub)  # type: ignore[arg-type]
            if matched is None:
                return None
            if not deltas:
                break
            for delta, position in matched:
                if cut.reflected(delta.entity_id, position):
                    newest.pop(delta.entity_id, None)  # keep them in log order
                    newest[delta.entity_id] = (delta, position)
    return list(newest.values())
