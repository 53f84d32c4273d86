"""Properties of the pure reducer over random event sequences.

Small alphabets of ids, property names, values and event ids make collisions common:
repeated values, deletes of live and missing entities, re-creations, duplicate
``eventId``s and stale ``if_version`` conditions all happen in most examples.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.core import DELETED_PROPERTY, Change, Delta, Entity, Outcome, OutcomeStatus, World
from hub.wire.jsonutil import canonical

IDS = ["a", "b", "ns/c"]
PROPS = ["p", "q", "r", DELETED_PROPERTY]
VALUES: list[Any] = [0, 1, 1.0, True, False, None, "x", "true", {"n": 1}, {"n": [1, 2]}, [1], []]
EVENT_IDS = ["e1", "e2", "e3", "e4"]
T0 = 1_772_049_867_000


@st.composite
def changes(draw: st.DrawFn) -> Change:
    entity_id = draw(st.sampled_from([*IDS, *IDS, None]))
    shape = draw(
        st.sampled_from(["properties"] * 6 + ["tombstone"] * 2 + ["empty", "not-an-object"])
    )
    properties: dict[str, bytes] | None
    if shape == "not-an-object":
        properties = None
    elif shape == "empty":
        properties = {}
    else:
        values = draw(
            st.dictionaries(st.sampled_from(PROPS), st.sampled_from(VALUES), min_size=1, max_size=3)
        )
        if shape == "tombstone":
            values[DELETED_PROPERTY] = True
        properties = {name: canonical(values[name]) for name in sorted(values)}
    return Change.from_parts(
        entity_id,
        properties,
        # Mostly unconditional, fresh events, so that most of them apply.
        dedup_id=draw(st.sampled_from([None] * 6 + EVENT_IDS)),
        if_version=draw(st.sampled_from([None] * 8 + [0, 1, 2, 3])),
        source="src",
    )


# At least a few events: hypothesis favours short lists, and a delete followed by a
# re-creation of the same id needs several.
sequences = st.lists(changes(), min_size=6, max_size=40)


def run(sequence: list[Change]) -> tuple[World, list[Outcome]]:
    world = World()
    outcomes = [world.apply(change, T0 + n) for n, change in enumerate(sequence)]
    return world, outcomes


def known_version(world: World, entity_id: str) -> int:
    """The last version a subscriber heard of: live, or left behind by a delete."""
    entity = world.entities.get(entity_id)
    return entity.version if entity is not None else world.tombstones.get(entity_id, 0)


@dataclass
class Replica:
    """A client that starts empty and folds every delta, as DESIGN.md §3 describes."""

    live: dict[str, Entity] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)

    def held(self, entity_id: str) -> int:
        entity = self.live.get(entity_id)
        return entity.version if entity is not None else self.deleted.get(entity_id, 0)

    def fold(self, delta: Delta) -> None:
        assert delta.base == self.held(delta.entity_id), delta
        if delta.deleted:
            del self.live[delta.entity_id]
            self.deleted[delta.entity_id] = delta.version
            return
        entity = self.live.get(delta.entity_id)
        # ``created`` tells a client holding no copy that nothing came before.
        assert delta.created == (entity is None), delta
        if entity is None:
            self.deleted.pop(delta.entity_id, None)
            entity = self.live[delta.entity_id] = Entity(delta.entity_id, {}, delta.base, 0)
        # A client applies only what changed (the delta's ``set``).
        entity.properties.update(delta.changed)
        entity.version = delta.version
        entity.last_updated = delta.last_updated


@settings(max_examples=200, deadline=None)
@given(sequence=sequences)
def test_reducer_never_lowers_a_version(sequence: list[Change]) -> None:
    world = World()
    for n, change in enumerate(sequence):
        before = {entity_id: known_version(world, entity_id) for entity_id in IDS}
        world.apply(change, T0 + n)
        for entity_id in IDS:
            assert known_version(world, entity_id) >= before[entity_id], change


@settings(max_examples=200, deadline=None)
@given(sequence=sequences)
def test_reducer_bumps_version_by_one_exactly_when_delta_changes_something(
    sequence: list[Change],
) -> None:
    world = World()
    for n, change in enumerate(sequence):
        before = known_version(world, change.entity_id) if change.entity_id is not None else 0
        outcome = world.apply(change, T0 + n)
        delta = outcome.delta
        if delta is None:
            if change.entity_id is not None:
                assert known_version(world, change.entity_id) == before, change
            continue
        step = 1 if delta.changed or delta.deleted else 0
        assert delta.base == before, change
        assert delta.version == delta.base + step, change
        assert outcome.version == delta.version
        assert known_version(world, delta.entity_id) == delta.version


@settings(max_examples=200, deadline=None)
@given(sequence=sequences)
def test_replica_folding_deltas_ends_equal_to_world(sequence: list[Change]) -> None:
    world = World()
    replica = Replica()
    for n, change in enumerate(sequence):
        outcome = world.apply(change, T0 + n)
        if outcome.delta is not None:
            replica.fold(outcome.delta)
    assert replica.live == world.entities
    assert replica.deleted == world.tombstones


@settings(max_examples=100, deadline=None)
@given(sequence=sequences)
def test_reducer_replaying_a_sequence_gives_same_state(sequence: list[Change]) -> None:
    first, first_outcomes = run(sequence)
    second, second_outcomes = run(sequence)
    assert second_outcomes == first_outcomes
    assert second.entities == first.entities
    assert second.tombstones == first.tombstones
    assert second.seen == first.seen


@settings(max_examples=200, deadline=None)
@given(sequence=sequences)
def test_reducer_duplicate_event_id_never_changes_state(sequence: list[Change]) -> None:
    world = World()
    accepted: dict[str, int] = {}  # eventId -> version its first application gave
    for n, change in enumerate(sequence):
        dedup_id = change.dedup_id
        if dedup_id is None or dedup_id not in accepted:
            outcome = world.apply(change, T0 + n)
            if dedup_id is not None and outcome.status is not OutcomeStatus.CONFLICT:
                accepted[dedup_id] = outcome.version
            continue
        state = copy.deepcopy((world.entities, world.tombstones))
        outcome = world.apply(change, T0 + n)
        assert outcome == Outcome(OutcomeStatus.DUPLICATE, accepted[dedup_id])
        assert (world.entities, world.tombstones) == state
