"""A ``where`` subscription's view (hub/core/session/view.py).

The property: for random event sequences and random filters, a client that folds the
frames the view gives holds exactly the entities the query selects, at every
position — live from a snapshot, and after resuming from any cursor (the resume
reads a later snapshot and refreshes the entities touched in between). Conflating
the view's deltas (as a slow consumer's outbox does) changes nothing either. The
events carry leases too: the client's deadlines are the world's as well.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.core import DELETED_PROPERTY, Change, Delta, Entity, World, format_ms
from hub.core.conflate import merge
from hub.core.session.view import ViewDelta, WhereView
from hub.core.where import WhereError, parse_where
from hub.wire.jsonutil import canonical, loads

T0 = 1_772_049_867_000
IDS = ["a", "b", "c"]
PROPS = ["s", "n"]
VALUES: list[Any] = ["open", "done", 0, 1, 5, None]


def change(entity_id: str, ttl_ms: int | None = None, **props: Any) -> Change:
    encoded = {k: canonical(v) for k, v in props.items()}
    return Change.from_parts(entity_id, encoded, ttl_ms=ttl_ms)


def delete(entity_id: str) -> Change:
    return change(entity_id, **{DELETED_PROPERTY: True})


def play(changes: list[Change]) -> tuple[list[Delta], list[dict[str, Entity]]]:
    """The deltas of a sequence, and the world's entities after each (index 0: before
    any)."""
    world = World()
    deltas: list[Delta] = []
    states: list[dict[str, Entity]] = [{}]
    for n, c in enumerate(changes):
        outcome = world.apply(c, T0 + n)
        if outcome.delta is not None:
            deltas.append(outcome.delta)
            states.append(copy.deepcopy(world.entities))
    return deltas, states


#: What a client holds of an entity: version, properties, lease deadline (or None).
Held = tuple[int, dict[str, bytes], int | None]


class Client:
    """Folds view frames the way docs/protocol.md tells a client to."""

    def __init__(self) -> None:
        self.held: dict[str, Held] = {}

    def snapshot(self, entity: Entity) -> None:
        self.held[entity.id] = (entity.version, dict(entity.properties), entity.expires_at)

    def fold(self, delta: Delta, *, resumed: bool = False) -> None:
        if isinstance(delta, ViewDelta) and delta.left:
            held = self.held.pop(delta.entity_id, None)
            # Live, a left always names an entity held, at its version.
            assert resumed or (held is not None and held[0] == delta.base), delta
        elif delta.deleted:
            held = self.held.pop(delta.entity_id)
            assert held[0] == delta.base
        elif delta.created:
            # An entry (or a creation): the properties are exactly `set`, the lease
            # exactly what it says (none when it says nothing).
            self.held[delta.entity_id] = (
                delta.version,
                dict(delta.touched),
                delta.deadline or None,
            )
        else:
            version, properties, expires = self.held[delta.entity_id]
            assert version == delta.base, delta
            if delta.deadline is not None:
                expires = delta.deadline or None  # 0: the lease was removed
            self.held[delta.entity_id] = (delta.version, {**properties, **delta.changed}, expires)

    def view(self) -> dict[str, Held]:
        return self.held


def expected(where: Any, entities: dict[str, Entity]) -> dict[str, Held]:
    parsed = parse_where(where)
    return {
        i: (e.version, e.properties, e.expires_at)
        for i, e in entities.items()
        if parsed.matches({k: loads(v) for k, v in e.properties.items()})
    }


def subscribe(where: Any, entities: dict[str, Entity], client: Client) -> WhereView:
    view = WhereView(parse_where(where), limit=100)
    for entity in copy.deepcopy(list(entities.values())):
        if view.load(entity):
            client.snapshot(entity)
    return view


# ---------------------------------------------------------------- examples

WHERE = {"s": "open", "n": {"lt": 5}}


def test_view_sends_entries_leaves_and_deletions_of_members() -> None:
    deltas, _ = play(
        [
            change("a", s="open", n=1),  # created, matching: the creation itself
            change("b", s="done", n=1),  # created, not matching: nothing
            change("b", s="open"),  # enters: its full state
            change("a", x="y"),  # a member changes an unfiltered property: as is
            change("b", x="z"),  # idem
            change("a", n=9),  # leaves
            change("a", x="w"),  # a non-member changes: nothing
            change("a", n=2),  # enters again
            delete("b"),  # a member deleted: the deletion
            change("c", s="done"),
            delete("c"),  # a non-member deleted: nothing
        ]
    )
    view = WhereView(parse_where(WHERE), limit=10)
    out = [view.apply(d) for d in deltas]
    assert out[0] is deltas[0]
    assert out[1] is None
    entered = out[2]
    assert isinstance(entered, ViewDelta)
    assert (entered.entered, entered.created, entered.replaced) == (True, True, False)
    assert entered.touched == {"n": b"1", "s": b'"open"'}
    assert (entered.base, entered.version) == (1, 2)
    assert out[3] is deltas[3]
    assert out[4] is deltas[4]
    left = out[5]
    assert isinstance(left, ViewDelta)
    assert (left.left, left.deleted, left.base, left.version) == (True, True, 2, 3)
    assert out[6] is None
    assert isinstance(out[7], ViewDelta)
    assert out[7].entered
    assert out[7].touched == {"n": b"2", "s": b'"open"', "x": b'"w"'}
    assert out[8] is deltas[8]
    assert out[9] is None
    assert out[10] is None
    assert view.members == {"a"}
    assert set(view.states) == {"a"}


def test_view_refresh_replaces_a_member_and_leaves_the_others() -> None:
    deltas, states = play([change("a", s="open", n=1), change("b", s="done"), delete("a")])
    view = WhereView(parse_where(WHERE), limit=10)
    for entity in copy.deepcopy(list(states[2].values())):
        view.load(entity)
    entry = view.refresh(deltas[0])
    assert (entry.entered, entry.created, entry.replaced, entry.version) == (True, True, True, 1)
    gone = view.refresh(deltas[1])
    assert (gone.left, gone.base, gone.version) == (True, 1, 1)
    view.apply(deltas[2])
    assert view.refresh(deltas[2]).left


def test_view_is_bounded() -> None:
    view = WhereView(parse_where({"s": "open"}), limit=1)
    deltas, states = play([change("a", s="open"), change("b", s="open"), change("a", s="done")])
    assert view.load(copy.deepcopy(states[1]["a"]))
    with pytest.raises(WhereError, match="at most 1; narrow the filter"):
        view.apply(deltas[1])
    assert view.apply(deltas[2]) is not None  # an entity it holds: room enough
    view.clear()
    assert (view.states, view.members) == ({}, set())
    assert view.apply(deltas[1]) is deltas[1]


def test_view_takes_an_unknown_entity_as_new() -> None:
    # Not expected (the replica follows the log), but never a crash.
    deltas, _ = play([change("a", s="done"), change("a", s="open")])
    view = WhereView(parse_where({"s": "open"}), limit=5)
    entered = view.apply(deltas[1])
    assert isinstance(entered, ViewDelta)
    assert entered.entered


# ---------------------------------------------------------------- properties


@st.composite
def changes(draw: st.DrawFn) -> Change:
    entity_id = draw(st.sampled_from(IDS))
    if draw(st.integers(0, 5)) == 0:
        return delete(entity_id)
    # A lease set, refreshed, removed or left alone; and beats that change nothing
    # else (empty properties).
    ttl_ms = draw(st.sampled_from([None, None, 0, 10_000]))
    least = 0 if ttl_ms else 1
    props = draw(st.dictionaries(st.sampled_from(PROPS), st.sampled_from(VALUES), min_size=least))
    return change(entity_id, ttl_ms, **props)


CONDITIONS = st.one_of(
    st.sampled_from(VALUES),
    st.builds(lambda v: {"ne": v}, st.sampled_from(VALUES)),
    st.builds(lambda v: {"lt": v}, st.sampled_from([1, 5])),
    st.builds(lambda v: {"gte": v}, st.sampled_from([1, 5])),
    st.builds(lambda v: {"in": v}, st.lists(st.sampled_from(VALUES), max_size=2)),
    st.builds(lambda v: {"exists": v}, st.booleans()),
)
WHERES = st.dictionaries(st.sampled_from(PROPS), CONDITIONS, max_size=2)


@settings(max_examples=300, deadline=None)
@given(
    sequence=st.lists(changes(), max_size=30),
    where=WHERES,
    start=st.integers(0, 30),
    resume=st.integers(0, 30),
    lag=st.integers(0, 30),
)
def test_client_view_equals_the_query_at_every_position(
    sequence: list[Change], where: Any, start: int, resume: int, lag: int
) -> None:
    deltas, states = play(sequence)
    start = min(start, len(deltas))
    client = Client()
    view = subscribe(where, states[start], client)
    assert client.view() == expected(where, states[start])
    for i in range(start, len(deltas)):
        out = view.apply(deltas[i])
        if out is not None:
            client.fold(out)
        assert client.view() == expected(where, states[i + 1])
    # The client dropped at `cursor` and resumes; the hub reads its snapshot at
    # `snap`, a little later, and refreshes what changed in between.
    cursor = start + min(resume, len(deltas) - start)
    snap = cursor + min(lag, len(deltas) - cursor)
    resumed = Client()
    resumed.held = {k: (v, dict(p), x) for k, (v, p, x) in expected(where, states[cursor]).items()}
    fresh = subscribe_silently(where, states[snap])
    last: dict[str, Delta] = {}
    for delta in deltas[cursor:snap]:
        last[delta.entity_id] = delta
    for delta in last.values():
        resumed.fold(fresh.refresh(delta), resumed=True)
    assert resumed.view() == expected(where, states[snap])
    for i in range(snap, len(deltas)):
        out = fresh.apply(deltas[i])
        if out is not None:
            resumed.fold(out)
        assert resumed.view() == expected(where, states[i + 1])


def subscribe_silently(where: Any, entities: dict[str, Entity]) -> WhereView:
    view = WhereView(parse_where(where), limit=100)
    for entity in copy.deepcopy(list(entities.values())):
        view.load(entity)
    return view


@settings(max_examples=300, deadline=None)
@given(
    sequence=st.lists(changes(), max_size=30),
    where=WHERES,
    cuts=st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_conflated_view_deltas_end_at_the_same_view(
    sequence: list[Change], where: Any, cuts: list[bool]
) -> None:
    # A slow consumer's outbox merges the view's deltas per entity while paused;
    # `cuts` says after which deltas the socket drains.
    deltas, states = play(sequence)
    client = Client()
    view = subscribe(where, {}, client)
    pending: dict[str, Delta] = {}
    for i, delta in enumerate(deltas):
        out = view.apply(delta)
        if out is not None:
            earlier = pending.get(out.entity_id)
            merged = out if earlier is None else merge(earlier, out)
            if merged is None:
                del pending[out.entity_id]
            else:
                pending[out.entity_id] = merged
        if cuts[i]:
            for item in pending.values():
                client.fold(item)
            pending.clear()
            assert client.view() == expected(where, states[i + 1])


def test_merge_takes_an_entry_after_a_left_whatever_its_base() -> None:
    # The versions between a left and a re-entry were never sent: the entry carries
    # the whole state, and the merge replaces what the client held at the left's base.
    deltas, _ = play(
        [change("a", s="open"), change("a", s="done"), change("a", n=1), change("a", s="open")]
    )
    view = WhereView(parse_where({"s": "open"}), limit=5)
    out = [view.apply(d) for d in deltas]
    left, entry = out[1], out[3]
    assert out[2] is None
    assert left is not None and entry is not None
    assert (left.version, entry.base) == (2, 3)
    merged = merge(left, entry)
    assert merged is not None
    assert (merged.base, merged.version, merged.created, merged.replaced) == (1, 4, True, True)
    with pytest.raises(ValueError, match="cannot merge"):
        merge(deltas[0], entry)  # an update, not a removal, before it: a real gap


def test_view_deltas_go_on_the_wire_as_entered_and_left() -> None:
    from hub.core.cursor import Position
    from hub.wire.codec import JSON
    from hub.wire.native import DeltaEncoder

    deltas, _ = play([change("a", s="open", n=1), change("a", s="done"), change("a", s="open")])
    view = WhereView(parse_where({"s": "open"}), limit=5)
    out = [view.apply(d) for d in deltas]
    position = Position.of(0, "1-0")
    left, entered = out[1], out[2]
    assert left is not None and entered is not None
    body = DeltaEncoder(left, position).body(JSON)
    assert body is not None
    assert json.loads(b"{" + body[0]) == {
        "type": "left",
        "id": "a",
        "base": 1,
        "version": 2,
        "lastUpdated": format_ms(T0 + 1),
        "position": "1-0",
    }
    body = DeltaEncoder(entered, position).body(JSON)
    assert body is not None
    frame = json.loads(b"{" + body[0])
    assert (frame["type"], frame["created"], frame["entered"]) == ("delta", True, True)
    assert frame["set"] == {"s": "open", "n": 1}
    body = DeltaEncoder(out[0] or deltas[0], position).body(JSON)
    assert body is not None
    assert "entered" not in json.loads(b"{" + body[0])
