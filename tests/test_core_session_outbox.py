"""A slow consumer's conflation (hub/core/session/outbox.py), loop-free.

The property test plays a connection whose socket fills and drains at random points
while the reducer's deltas arrive for two subscriptions: a client applying what was
sent, then what each drain released, ends with the world's state — with the pending
merged deltas never over their bound.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.core import Change, Delta, World
from hub.core.cursor import Position
from hub.core.session.outbox import Admit, Outbox

from .test_core_conflate import T0, Replica, changes, deletion, encode, update

P = Position(0, T0, 0)


def test_a_writable_connection_sends_at_once() -> None:
    box: Outbox[str] = Outbox(max_pending=10)
    assert not box.behind
    assert box.admit("sub", "s", update(0, 1, encode(p=1), created=True), P) is Admit.SEND
    assert box.pending == {}


def test_a_paused_connection_keeps_one_merged_delta_per_subscription_and_entity() -> None:
    box: Outbox[str] = Outbox(max_pending=10)
    box.pause()
    assert box.behind
    first = update(1, 2, encode(p=1))
    second = update(2, 3, encode(q=2))
    assert box.admit("sub-s", "s", first, P) is Admit.PENDING
    assert box.admit("sub-s", "s", second, P) is Admit.PENDING
    assert box.admit("sub-t", "t", first, P) is Admit.PENDING
    assert box.conflated == 1
    released = box.resume()
    assert not box.paused
    assert [(sub, d.base, d.version) for sub, d, _ in released] == [
        ("sub-s", 1, 3),
        ("sub-t", 1, 2),
    ]
    assert released[0][1].touched == encode(p=1, q=2)
    assert not box.behind


def test_deltas_keep_being_merged_until_the_pending_ones_are_sent() -> None:
    # Resumed writing, but something is still pending: a new delta must not overtake it.
    box: Outbox[str] = Outbox(max_pending=10)
    box.pause()
    box.admit("x", "s", update(1, 2, encode(p=1)), P)
    box.paused = False
    assert box.behind
    assert box.admit("x", "s", update(2, 3, encode(p=2)), P) is Admit.PENDING


def test_an_entity_created_and_deleted_while_pending_is_never_seen() -> None:
    box: Outbox[str] = Outbox(max_pending=10)
    box.pause()
    box.admit("x", "s", update(0, 1, encode(p=1), created=True), P)
    box.admit("x", "s", deletion(1), P)
    assert box.pending == {}
    assert box.resume() == []


def test_past_the_bound_everything_pending_is_dropped_and_the_connection_must_close() -> None:
    box: Outbox[str] = Outbox(max_pending=2)
    box.pause()
    for n in range(2):
        assert box.admit("x", "s", update(1, 2, encode(p=1), entity_id=f"e/{n}"), P) is (
            Admit.PENDING
        )
    # Merging into an entity already pending needs no room.
    assert box.admit("x", "s", update(2, 3, encode(p=2), entity_id="e/0"), P) is Admit.PENDING
    assert box.admit("x", "s", update(1, 2, encode(p=1), entity_id="e/9"), P) is Admit.OVERLOADED
    assert box.pending == {}


def test_forget_drops_only_that_subscriptions_pending_deltas() -> None:
    box: Outbox[str] = Outbox(max_pending=10)
    box.pause()
    box.admit("x", "s", update(1, 2, encode(p=1)), P)
    box.admit("y", "t", update(1, 2, encode(p=1)), P)
    box.forget("s")
    assert list(box.pending) == [("t", "e/1")]
    box.clear()
    assert box.pending == {}
    assert not box.direct  # still paused


def test_sending_directly_resumes_once_nothing_is_pending_and_the_socket_is_writable() -> None:
    box: Outbox[str] = Outbox(max_pending=10)
    box.pause()
    box.admit("x", "s", update(1, 2, encode(p=1)), P)
    box.paused = False  # as if drained, with the merged delta not yet taken
    box.forget("s")
    assert box.direct
    box.admit("x", "s", update(0, 1, encode(p=1), created=True), P)
    assert box.direct
    box.pause()
    box.admit("x", "s", update(0, 1, encode(p=1), created=True), P)
    box.paused = False
    box.admit("x", "s", deletion(1), P)  # cancels out: nothing left pending
    assert box.direct


def test_synced_waits_for_the_merged_deltas_its_cursor_covers() -> None:
    """A ``synced`` sent before the merged deltas would give the client a cursor past
    deltas it never got: one resume from it, and they are lost."""
    box: Outbox[str] = Outbox(max_pending=10)
    assert box.may_send_synced("s")  # nothing pending: at once
    assert box.take_held() == []
    box.pause()
    assert not box.may_send_synced("s")  # paused: held
    box.admit("x", "t", update(1, 2, encode(p=1)), P)
    assert not box.may_send_synced("u")
    assert box.take_held() == []  # still behind: nothing given back
    box.forget("u")  # a subscription that starts over sends its synced again later
    assert box.resume() == [("x", update(1, 2, encode(p=1)), P)]
    assert box.take_held() == ["s"]  # after the merged deltas went out
    assert box.take_held() == []


def test_an_overloaded_outbox_forgets_what_it_held() -> None:
    box: Outbox[str] = Outbox(max_pending=1)
    box.pause()
    assert not box.may_send_synced("s")
    box.admit("x", "s", update(1, 2, encode(p=1)), P)
    assert box.admit("x", "s", update(1, 2, encode(q=1), entity_id="e/2"), P) == Admit.OVERLOADED
    assert box.held == {}


@settings(max_examples=300, deadline=None)
@given(
    sequence=st.lists(changes(), min_size=1, max_size=40),
    toggles=st.lists(st.booleans(), min_size=40, max_size=40),
    max_pending=st.integers(1, 4),
)
def test_a_client_of_a_conflating_connection_ends_with_the_worlds_state(
    sequence: list[Change], toggles: list[bool], max_pending: int
) -> None:
    world = World()
    box: Outbox[Replica] = Outbox(max_pending=max_pending)
    clients = {"s": Replica(), "t": Replica()}
    overloaded = False
    for n, change in enumerate(sequence):
        if toggles[n]:  # the socket fills, or drains
            if box.paused:
                for client, merged, _ in box.resume():
                    client.apply(merged)
            else:
                box.pause()
        found: Delta | None = world.apply(change, T0 + n).delta
        if found is None:
            continue
        for name, client in clients.items():
            # The shell reads direct instead of calling admit(): the same rule.
            assert box.direct == (not box.paused and not box.pending)
            admit = box.admit(client, name, found, P)
            if admit is Admit.SEND:
                client.apply(found)
            elif admit is Admit.OVERLOADED:
                overloaded = True
                break
            assert len(box.pending) <= max_pending
        if overloaded:
            break  # the connection closes; the client resumes elsewhere
    if overloaded:
        return
    for client, merged, _ in box.resume():
        client.apply(merged)
    expected = {
        i: (e.version, e.properties, e.last_updated, e.expires_at)
        for i, e in world.entities.items()
    }
    for client in clients.values():
        assert client.state() == expected
