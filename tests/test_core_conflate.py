"""Conflation (hub/core/conflate.py): merging consecutive deltas of one entity.

A slow connection keeps one pending delta per entity and merges each new one into it
(``pending[entity] = merge(pending[entity], delta)``, dropping the entry on None). The
contract: a client applying the merged delta ends exactly where applying each delta
one by one would have taken it. The property test at the end checks that against the
reducer's own delta stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.core import DELETED_PROPERTY, Change, Delta, World
from hub.core.conflate import merge
from hub.core.model import LeasedDelta
from hub.wire.jsonutil import canonical

T0 = 1_772_049_867_000
T1 = T0 + 1_000
T2 = T0 + 2_000


def encode(**values: Any) -> dict[str, bytes]:
    """Properties as deltas carry them: canonical JSON, sorted by name."""
    return {name: canonical(values[name]) for name in sorted(values)}


def update(
    base: int,
    version: int,
    touched: dict[str, bytes],
    *,
    unchanged: frozenset[str] = frozenset(),
    created: bool = False,
    replaced: bool = False,
    at: int = T1,
    entity_id: str = "e/1",
    position: str = "",
) -> Delta:
    return Delta(
        entity_id,
        base,
        version,
        at,
        touched=touched,
        unchanged=unchanged,
        created=created,
        replaced=replaced,
        source=f"src-{version}",
        position=position,
    )


def deletion(base: int, *, at: int = T2, entity_id: str = "e/1", position: str = "") -> Delta:
    return Delta(
        entity_id, base, base + 1, at, deleted=True, source=f"src-{base + 1}", position=position
    )


# ---------------------------------------------------------------- update after update


def test_merge_update_after_update_takes_changes_of_both_with_later_value_winning() -> None:
    a = update(3, 4, encode(p=1, q="x"), unchanged=frozenset({"q"}), at=T1, position="1-0")
    b = update(4, 5, encode(p=2, r=True), at=T2, position="2-0")
    merged = merge(a, b)
    assert merged == Delta(
        "e/1",
        3,
        5,
        T2,
        touched=encode(p=2, q="x", r=True),
        unchanged=frozenset({"q"}),
        source="src-5",
        position="2-0",
    )
    assert merged is not None
    assert merged.changed == encode(p=2, r=True)


def test_merge_update_after_update_counts_property_changed_by_first_only_as_changed() -> None:
    # b repeats the value a set: unchanged for b, but the client at a.base lacks it.
    a = update(3, 4, encode(p=1))
    b = update(4, 4, encode(p=1), unchanged=frozenset({"p"}))
    merged = merge(a, b)
    assert merged is not None
    assert (merged.base, merged.version) == (3, 4)
    assert merged.unchanged == frozenset()
    assert merged.changed == encode(p=1)


def test_merge_update_after_update_keeps_property_unchanged_by_both_unchanged() -> None:
    a = update(3, 3, encode(p=1), unchanged=frozenset({"p"}))
    b = update(3, 4, encode(p=1, q=2), unchanged=frozenset({"p"}))
    merged = merge(a, b)
    assert merged is not None
    assert merged.unchanged == frozenset({"p"})
    assert merged.changed == encode(q=2)


def test_merge_touches_only_deltas_stay_touches_only() -> None:
    a = update(7, 7, encode(p=1), unchanged=frozenset({"p"}))
    b = update(7, 7, encode(q=2), unchanged=frozenset({"q"}))
    merged = merge(a, b)
    assert merged is not None
    assert (merged.base, merged.version) == (7, 7)
    assert merged.changed == {}
    assert merged.touched == encode(p=1, q=2)


def test_merge_update_after_update_sorts_touched_by_name() -> None:
    a = update(1, 2, encode(z=1, m=2))
    b = update(2, 3, encode(a=3, n=4))
    merged = merge(a, b)
    assert merged is not None
    assert list(merged.touched) == ["a", "m", "n", "z"]


def leased(delta: Delta, deadline: int) -> Delta:
    """``delta`` with news of the lease (0: removed)."""
    values = {f.name: getattr(delta, f.name) for f in fields(Delta)}
    return LeasedDelta(**values, deadline=deadline)


def test_merge_keeps_the_earlier_deadline_when_the_later_delta_says_nothing() -> None:
    merged = merge(leased(update(1, 2, encode(p=1)), T2), update(2, 3, encode(q=2)))
    assert merged is not None and merged.deadline == T2


def test_merge_takes_the_later_news_of_the_lease_removal_included() -> None:
    first = leased(update(1, 2, encode(p=1)), T1)
    merged = merge(first, leased(update(2, 2, {}), T2))  # a beat: the news alone
    assert merged is not None and merged.deadline == T2
    assert merged.changed == encode(p=1)
    merged = merge(first, leased(update(2, 3, encode(q=2)), 0))
    assert merged is not None and merged.deadline == 0


def test_merge_of_a_deletion_and_a_recreation_keeps_only_the_recreations_lease() -> None:
    gone = leased(update(1, 1, {}), T1), deletion(1)
    held = merge(*gone)
    assert held is not None and held.deadline is None  # a deletion says none
    merged = merge(held, update(2, 3, encode(p=1), created=True))
    assert merged is not None and (merged.created, merged.deadline) == (True, None)
    merged = merge(held, leased(update(2, 3, encode(p=1), created=True), T2))
    assert merged is not None and merged.deadline == T2
    assert merge(leased(update(0, 1, encode(p=1), created=True), T1), deletion(1)) is None


def test_merge_update_after_creation_stays_a_creation() -> None:
    a = update(0, 1, encode(p=1), created=True)
    b = update(1, 2, encode(q=2))
    merged = merge(a, b)
    assert merged == Delta("e/1", 0, 2, T1, touched=encode(p=1, q=2), created=True, source="src-2")


def test_merge_update_after_replacement_stays_a_replacement() -> None:
    a = update(3, 5, encode(p=1), created=True, replaced=True)
    b = update(5, 6, encode(p=2))
    merged = merge(a, b)
    assert merged is not None
    assert (merged.base, merged.version) == (3, 6)
    assert (merged.created, merged.replaced) == (True, True)
    assert merged.changed == encode(p=2)


def test_merge_leaves_its_inputs_unchanged() -> None:
    a = update(1, 2, encode(p=1))
    b = update(2, 3, encode(q=2))
    merge(a, b)
    assert a.touched == encode(p=1)
    assert b.touched == encode(q=2)


# ---------------------------------------------------------------- deletions


def test_merge_deletion_after_update_is_deletion_from_first_base() -> None:
    a = update(3, 4, encode(p=1), position="1-0")
    b = deletion(4, position="2-0")
    assert merge(a, b) == Delta("e/1", 3, 5, T2, deleted=True, source="src-5", position="2-0")


@pytest.mark.parametrize("base", [0, 6], ids=["new-entity", "re-created-after-deletion"])
def test_merge_deletion_after_creation_from_nothing_cancels_out(base: int) -> None:
    # The client at ``base`` never held the entity: it needs to hear nothing.
    a = update(base, base + 1, encode(p=1), created=True)
    assert merge(a, deletion(base + 1)) is None


def test_merge_deletion_after_merged_creation_and_update_cancels_out() -> None:
    first = merge(update(0, 1, encode(p=1), created=True), update(1, 2, encode(p=2)))
    assert first is not None
    assert merge(first, deletion(2)) is None


def test_merge_deletion_after_replacement_is_deletion_not_nothing() -> None:
    # The client held the entity at 3; it must drop it.
    a = update(3, 5, encode(p=1), created=True, replaced=True)
    merged = merge(a, deletion(5))
    assert merged == Delta("e/1", 3, 6, T2, deleted=True, source="src-6")


def test_merge_update_after_deletion_is_replacement_from_deletion_base() -> None:
    a = deletion(3, position="1-0")
    b = update(4, 5, encode(p=1, q=2), created=True, at=T2, position="2-0")
    merged = merge(a, b)
    assert merged == Delta(
        "e/1",
        3,
        5,
        T2,
        touched=encode(p=1, q=2),
        created=True,
        replaced=True,
        source="src-5",
        position="2-0",
    )


def test_merge_deletion_then_creation_then_deletion_is_deletion_from_first_base() -> None:
    replaced = merge(deletion(3), update(4, 5, encode(p=1), created=True))
    assert replaced is not None
    assert merge(replaced, deletion(5)) == Delta("e/1", 3, 6, T2, deleted=True, source="src-6")


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        pytest.param(
            update(3, 4, encode(p=1)),
            update(5, 6, encode(p=2)),
            "cannot merge e/1@3->4 with e/1@5->6",
            id="gap",
        ),
        pytest.param(
            update(3, 4, encode(p=1)),
            update(3, 4, encode(p=1)),
            "cannot merge e/1@3->4 with e/1@3->4",
            id="same-delta-twice",
        ),
        pytest.param(
            update(3, 4, encode(p=1)),
            update(4, 5, encode(p=2), entity_id="e/2"),
            "cannot merge e/1@3->4 with e/2@4->5",
            id="other-entity",
        ),
        pytest.param(
            deletion(3),
            deletion(4, entity_id="e/2"),
            "cannot merge e/1@3->4 with e/2@4->5",
            id="other-entity-deleted",
        ),
    ],
)
def test_merge_refuses_deltas_that_do_not_follow_each_other(
    a: Delta, b: Delta, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        merge(a, b)


# ---------------------------------------------------------------- against the reducer

IDS = ["a", "b", "ns/c"]
PROPS = ["p", "q", "r"]
VALUES: list[Any] = [0, 1, 1.0, True, None, "x", {"n": 1}, [1]]


@st.composite
def changes(draw: st.DrawFn) -> Change:
    # Mostly one entity, and many deletions: delete, re-create, delete again within
    # one conflated stretch is the case that needs ``replaced``.
    entity_id = draw(st.sampled_from([IDS[0], IDS[0], *IDS]))
    # Leases set, refreshed, removed or left alone, by updates or by beats that change
    # nothing else (empty properties).
    ttl_ms = draw(st.sampled_from([None, None, 0, 5_000]))
    if draw(st.integers(0, 2)) == 0:
        values: dict[str, Any] = {DELETED_PROPERTY: True}
    else:
        values = draw(
            st.dictionaries(
                st.sampled_from(PROPS),
                st.sampled_from(VALUES),
                min_size=0 if ttl_ms else 1,
                max_size=3,
            )
        )
    encoded = {k: canonical(v) for k, v in values.items()}
    return Change.from_parts(entity_id, encoded, ttl_ms=ttl_ms)


@dataclass
class Held:
    version: int
    properties: dict[str, bytes]
    last_updated: int
    expires_at: int | None


@dataclass
class Replica:
    """A client's copy, applying deltas by the client rules (tests/native_client.py)."""

    entities: dict[str, Held] = field(default_factory=dict)

    def apply(self, delta: Delta) -> None:
        held = self.entities.get(delta.entity_id)
        if delta.deleted:
            assert held is not None, f"deletion of an entity not held: {delta}"
            assert delta.base == held.version, f"held {held.version}, got {delta}"
            del self.entities[delta.entity_id]
        elif held is None:
            assert delta.created, f"gap: delta for an entity not held: {delta}"
            self.entities[delta.entity_id] = Held(
                delta.version, dict(delta.changed), delta.last_updated, delta.deadline or None
            )
        else:
            assert delta.base == held.version, f"held {held.version}, got {delta}"
            if delta.created:
                held.properties = dict(delta.changed)
                held.expires_at = None  # a re-created entity: only what the delta says
            else:
                held.properties.update(delta.changed)
            if delta.deadline is not None:
                held.expires_at = delta.deadline or None  # 0: removed
            held.version = delta.version
            held.last_updated = delta.last_updated

    def state(self) -> dict[str, tuple[int, dict[str, bytes], int, int | None]]:
        return {
            i: (h.version, h.properties, h.last_updated, h.expires_at)
            for i, h in self.entities.items()
        }


def conflate(deltas: list[Delta]) -> list[Delta]:
    """Merge per entity, in order, as a connection does while the socket is full."""
    pending: dict[str, Delta] = {}
    first: dict[str, Delta] = {}
    for delta in deltas:
        earlier = pending.get(delta.entity_id)
        if earlier is None:
            pending[delta.entity_id] = first[delta.entity_id] = delta
            continue
        merged = merge(earlier, delta)
        if merged is None:
            del pending[delta.entity_id]
        else:
            # The merged delta spans the first pending one's base to the last version.
            assert merged.base == first[delta.entity_id].base
            assert merged.version == delta.version
            pending[delta.entity_id] = merged
    return list(pending.values())


@settings(max_examples=300, deadline=None)
@given(
    sequence=st.lists(changes(), min_size=1, max_size=40),
    data=st.data(),
)
def test_client_applying_conflated_deltas_ends_like_client_applying_each(
    sequence: list[Change], data: st.DataObject
) -> None:
    world = World()
    deltas: list[Delta] = []
    for n, change in enumerate(sequence):
        outcome = world.apply(change, T0 + n)
        if outcome.delta is not None:
            deltas.append(outcome.delta)

    # Where the client is when it falls behind, and when the socket drains again
    # (the flushes after the first one start from a state reached by merged deltas).
    start = data.draw(st.integers(0, len(deltas)), label="start")
    flushes = sorted(
        data.draw(st.lists(st.integers(start, len(deltas)), max_size=3), label="flushes")
    )
    replica = Replica()
    for delta in deltas[:start]:
        replica.apply(delta)
    for lo, hi in zip([start, *flushes], [*flushes, len(deltas)], strict=True):
        for merged in conflate(deltas[lo:hi]):
            replica.apply(merged)

    one_by_one = Replica()
    for delta in deltas:
        one_by_one.apply(delta)
    assert replica.state() == one_by_one.state()
    assert replica.state() == {
        i: (e.version, e.properties, e.last_updated, e.expires_at)
        for i, e in world.entities.items()
    }
