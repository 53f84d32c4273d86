"""The pure reducer (hub/core): merge, tombstone, versions, dedup and compare-and-set.

DESIGN.md §3 and FLUX_COMPAT.md §3 are the contract. Property values are canonical JSON
bytes, made here with :func:`hub.wire.jsonutil.canonical` as the envelope makes them.
"""

from __future__ import annotations

from typing import Any

import pytest

from hub.core import (
    DELETED_PROPERTY,
    Change,
    ChangeKind,
    Delta,
    Entity,
    Outcome,
    OutcomeStatus,
    World,
)
from hub.core.model import LeasedDelta
from hub.wire.jsonutil import canonical

T0 = 1_772_049_867_000
T1 = T0 + 1_000
T2 = T0 + 2_000
T3 = T0 + 3_000
T4 = T0 + 4_000

APPLIED = OutcomeStatus.APPLIED
DUPLICATE = OutcomeStatus.DUPLICATE
CONFLICT = OutcomeStatus.CONFLICT


def encode(values: dict[str, Any]) -> dict[str, bytes]:
    """Encode properties as the envelope does: canonical values, sorted names."""
    return {name: canonical(values[name]) for name in sorted(values)}


def update(
    entity_id: str | None,
    values: dict[str, Any],
    *,
    dedup_id: str | None = None,
    if_version: int | None = None,
) -> Change:
    return Change.from_parts(
        entity_id, encode(values), dedup_id=dedup_id, if_version=if_version, source="agent"
    )


def delete(entity_id: str, *, dedup_id: str | None = None, if_version: int | None = None) -> Change:
    return update(entity_id, {DELETED_PROPERTY: True}, dedup_id=dedup_id, if_version=if_version)


def world_with(*changes: Change) -> World:
    """A world that applied ``changes`` at T0, T0+1 ms, …"""
    world = World()
    for n, change in enumerate(changes):
        world.apply(change, T0 + n)
    return world


# ---------------------------------------------------------------- Change.from_parts


def test_change_from_parts_classifies_properties_as_update() -> None:
    properties = encode({"a": 1, "b": "x"})
    change = Change.from_parts(
        "e/1", properties, dedup_id="ev-1", if_version=3, source="sensor-agent"
    )
    assert change == Change(
        ChangeKind.UPDATE,
        "e/1",
        {"a": b"1", "b": b'"x"'},
        dedup_id="ev-1",
        if_version=3,
        source="sensor-agent",
    )


def test_change_from_parts_defaults_to_no_dedup_and_no_condition() -> None:
    change = Change.from_parts("e", encode({"a": 1}))
    assert (change.dedup_id, change.if_version, change.source) == (None, None, "")


@pytest.mark.parametrize(
    ("entity_id", "properties"),
    [
        pytest.param(None, {"a": b"1"}, id="no-entity-id"),
        pytest.param("e", None, id="properties-not-an-object"),
        pytest.param("e", {}, id="empty-properties"),
        pytest.param(None, None, id="neither"),
    ],
)
def test_change_from_parts_classifies_unusable_event_as_log_only(
    entity_id: str | None, properties: dict[str, bytes] | None
) -> None:
    change = Change.from_parts(entity_id, properties, dedup_id="ev-1", source="s")
    assert change.kind is ChangeKind.LOG_ONLY
    assert change.entity_id == entity_id
    assert change.properties == {}
    assert change.dedup_id == "ev-1"


def test_change_from_parts_classifies_deleted_true_as_delete() -> None:
    change = Change.from_parts("e", encode({DELETED_PROPERTY: True, "other": 5}))
    assert change.kind is ChangeKind.DELETE
    assert change.entity_id == "e"
    # Flux ignores every other property of a tombstone.
    assert change.properties == {}


def test_change_from_parts_classifies_deleted_marker_without_entity_as_log_only() -> None:
    change = Change.from_parts(None, encode({DELETED_PROPERTY: True}))
    assert change.kind is ChangeKind.LOG_ONLY


@pytest.mark.parametrize(
    "marker",
    [False, "true", 1, 1.0, None, [True], {"x": True}, "True"],
    ids=repr,
)
def test_change_from_parts_keeps_other_deleted_values_as_property(marker: Any) -> None:
    change = Change.from_parts("e", encode({DELETED_PROPERTY: marker}))
    assert change.kind is ChangeKind.UPDATE
    assert change.properties == {DELETED_PROPERTY: canonical(marker)}


# ---------------------------------------------------------------- merge


def test_reducer_creates_entity_at_version_one() -> None:
    world = World()
    outcome = world.apply(update("e/1", {"temp": 21.5, "unit": "C"}), T0)
    touched = {"temp": b"21.5", "unit": b'"C"'}
    assert outcome == Outcome(
        APPLIED,
        1,
        Delta(
            "e/1",
            0,
            1,
            T0,
            touched=touched,
            unchanged=frozenset(),
            created=True,
            source="agent",
        ),
    )
    assert world.entities == {"e/1": Entity("e/1", touched, 1, T0)}
    assert world.version_of("e/1") == 1


def test_reducer_merges_properties_keeping_untouched_ones() -> None:
    world = world_with(update("e", {"a": 1, "b": 2}))
    outcome = world.apply(update("e", {"b": 3, "c": 4}), T1)
    assert world.entities["e"] == Entity("e", encode({"a": 1, "b": 3, "c": 4}), 2, T1)
    assert outcome.delta is not None
    assert outcome.delta.touched == encode({"b": 3, "c": 4})
    assert outcome.delta.changed == encode({"b": 3, "c": 4})


def test_reducer_overwrites_property_with_value_of_other_type() -> None:
    world = world_with(update("e", {"a": 1}))
    world.apply(update("e", {"a": "one"}), T1)
    assert world.entities["e"].properties == {"a": b'"one"'}


def test_reducer_replaces_nested_object_whole() -> None:
    world = world_with(update("e", {"pos": {"x": 1, "y": 2, "z": {"deep": True}}}))
    world.apply(update("e", {"pos": {"x": 5}}), T1)
    assert world.entities["e"].properties == {"pos": b'{"x":5}'}
    assert world.entities["e"].version == 2


def test_reducer_replaces_array_whole() -> None:
    world = world_with(update("e", {"tags": ["a", "b", "c"]}))
    world.apply(update("e", {"tags": ["z"]}), T1)
    assert world.entities["e"].properties == {"tags": b'["z"]'}


def test_reducer_stores_null_as_a_value() -> None:
    world = world_with(update("e", {"a": 1, "b": 2}))
    outcome = world.apply(update("e", {"a": None}), T1)
    assert world.entities["e"].properties == {"a": b"null", "b": b"2"}
    assert outcome.version == 2
    assert outcome.delta is not None
    assert outcome.delta.changed == {"a": b"null"}


def test_reducer_creates_entity_from_null_property() -> None:
    world = World()
    outcome = world.apply(update("e", {"a": None}), T0)
    assert outcome.version == 1
    assert world.entities["e"].properties == {"a": b"null"}


def test_reducer_treats_int_float_and_bool_as_distinct_values() -> None:
    world = world_with(update("e", {"a": 1}))
    assert world.apply(update("e", {"a": 1.0}), T1).version == 2
    assert world.apply(update("e", {"a": True}), T2).version == 3
    assert world.apply(update("e", {"a": True}), T3).version == 3
    assert world.entities["e"].properties == {"a": b"true"}


def test_reducer_treats_reordered_object_keys_as_unchanged() -> None:
    world = world_with(update("e", {"pos": {"x": 1, "y": 2}}))
    outcome = world.apply(update("e", {"pos": {"y": 2, "x": 1}}), T1)
    assert outcome.version == 1
    assert outcome.delta is not None
    assert outcome.delta.unchanged == frozenset({"pos"})


# ---------------------------------------------------------------- log-only events


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(Change.from_parts("e", {}), id="empty-properties"),
        pytest.param(Change.from_parts("e", None), id="properties-not-an-object"),
    ],
)
def test_reducer_creates_nothing_for_log_only_event(change: Change) -> None:
    world = World()
    outcome = world.apply(change, T0)
    assert outcome == Outcome(APPLIED, 0)
    assert world.entities == {}
    assert world.tombstones == {}


def test_reducer_ignores_event_without_entity_id() -> None:
    world = world_with(update("e", {"a": 1}))
    outcome = world.apply(update(None, {"a": 2}), T1)
    assert outcome == Outcome(APPLIED, 0)
    assert world.entities == {"e": Entity("e", {"a": b"1"}, 1, T0)}


@pytest.mark.parametrize(
    "properties", [pytest.param({}, id="empty"), pytest.param(None, id="not-an-object")]
)
def test_reducer_leaves_existing_entity_alone_for_log_only_event(
    properties: dict[str, bytes] | None,
) -> None:
    world = world_with(update("e", {"a": 1}), update("e", {"a": 2}))
    outcome = world.apply(Change.from_parts("e", properties), T4)
    assert outcome == Outcome(APPLIED, 2)
    # Not even lastUpdated moves: no property was applied.
    assert world.entities == {"e": Entity("e", {"a": b"2"}, 2, T0 + 1)}


# ---------------------------------------------------------------- tombstone


def test_reducer_deletes_entity_on_tombstone() -> None:
    world = world_with(update("e", {"a": 1}), update("e", {"a": 2}))
    outcome = world.apply(delete("e"), T4)
    assert outcome == Outcome(APPLIED, 3, Delta("e", 2, 3, T4, deleted=True, source="agent"))
    assert world.entities == {}
    assert world.version_of("e") == 0


def test_reducer_ignores_other_properties_of_tombstone() -> None:
    world = world_with(update("e", {"a": 1}))
    outcome = world.apply(update("e", {DELETED_PROPERTY: True, "a": 9, "b": 1}), T1)
    assert outcome.delta is not None
    assert outcome.delta.deleted
    assert outcome.delta.touched == {}
    assert "e" not in world.entities


def test_reducer_deletes_only_the_named_entity() -> None:
    world = world_with(update("a", {"x": 1}), update("b", {"x": 1}))
    world.apply(delete("a"), T1)
    assert list(world.entities) == ["b"]


@pytest.mark.parametrize("marker", [False, "true", 1, None], ids=repr)
def test_reducer_stores_non_true_deleted_marker_as_property(marker: Any) -> None:
    world = world_with(update("e", {"a": 1}))
    outcome = world.apply(update("e", {DELETED_PROPERTY: marker}), T1)
    assert outcome.version == 2
    assert world.entities["e"].properties == {"a": b"1", DELETED_PROPERTY: canonical(marker)}


def test_reducer_treats_delete_of_missing_entity_as_no_op() -> None:
    world = world_with(update("other", {"a": 1}))
    outcome = world.apply(delete("missing"), T1)
    assert outcome == Outcome(APPLIED, 0)
    assert list(world.entities) == ["other"]
    assert world.tombstones == {}


def test_reducer_treats_second_delete_as_no_op() -> None:
    world = world_with(update("e", {"a": 1}), delete("e"))
    assert world.apply(delete("e"), T1) == Outcome(APPLIED, 0)
    assert world.tombstones == {"e": 2}


def test_reducer_continues_versions_after_delete_and_recreation() -> None:
    world = world_with(update("e", {"a": 1}), update("e", {"a": 2}), delete("e"))
    outcome = world.apply(update("e", {"b": 1}), T4)
    assert outcome == Outcome(
        APPLIED, 4, Delta("e", 3, 4, T4, touched={"b": b"1"}, created=True, source="agent")
    )
    # A fresh entity: nothing of the old one comes back.
    assert world.entities == {"e": Entity("e", {"b": b"1"}, 4, T4)}
    assert world.tombstones == {}


def test_reducer_continues_versions_after_delete_of_recreated_entity() -> None:
    world = world_with(update("e", {"a": 1}), delete("e"), update("e", {"a": 1}))
    assert world.apply(delete("e"), T4) == Outcome(
        APPLIED, 4, Delta("e", 3, 4, T4, deleted=True, source="agent")
    )
    assert world.apply(update("e", {"a": 1}), T4 + 1).version == 5


# ---------------------------------------------------------------- versions and lastUpdated


def test_reducer_keeps_version_when_value_unchanged() -> None:
    world = world_with(update("e", {"a": 1, "b": 2}))
    outcome = world.apply(update("e", {"a": 1}), T1)
    assert outcome == Outcome(
        APPLIED,
        1,
        Delta(
            "e",
            1,
            1,
            T1,
            touched={"a": b"1"},
            unchanged=frozenset({"a"}),
            source="agent",
        ),
    )
    assert outcome.delta is not None
    assert outcome.delta.changed == {}


def test_reducer_moves_last_updated_when_value_unchanged() -> None:
    world = world_with(update("e", {"a": 1}))
    world.apply(update("e", {"a": 1}), T3)
    assert world.entities["e"] == Entity("e", {"a": b"1"}, 1, T3)


def test_reducer_bumps_version_once_for_several_changed_properties() -> None:
    world = world_with(update("e", {"a": 1, "b": 1}))
    outcome = world.apply(update("e", {"a": 2, "b": 2, "c": 2}), T1)
    assert outcome.version == 2
    assert outcome.delta is not None
    assert (outcome.delta.base, outcome.delta.version) == (1, 2)


def test_reducer_reports_unchanged_properties_beside_changed_ones() -> None:
    world = world_with(update("e", {"a": 1, "b": 2}))
    outcome = world.apply(update("e", {"a": 1, "b": 3}), T1)
    assert outcome.delta == Delta(
        "e",
        1,
        2,
        T1,
        touched={"a": b"1", "b": b"3"},
        unchanged=frozenset({"a"}),
        source="agent",
    )
    assert outcome.delta.changed == {"b": b"3"}


def test_reducer_keeps_versions_per_entity() -> None:
    world = world_with(update("a", {"x": 1}), update("a", {"x": 2}), update("b", {"x": 1}))
    assert (world.version_of("a"), world.version_of("b"), world.version_of("c")) == (2, 1, 0)


def test_reducer_marks_only_creating_delta_as_created() -> None:
    world = World()
    deltas = [
        world.apply(change, T0 + n).delta
        for n, change in enumerate(
            [
                update("e", {"a": 1}),
                update("e", {"a": 2}),
                update("e", {"a": 2}),
                delete("e"),
                update("e", {"a": 2}),
            ]
        )
    ]
    assert [(d.base, d.version, d.created, d.deleted) for d in deltas if d is not None] == [
        (0, 1, True, False),
        (1, 2, False, False),
        (2, 2, False, False),
        (2, 3, False, True),
        (3, 4, True, False),
    ]


def test_reducer_carries_event_source_into_delta() -> None:
    world = World()
    change = Change.from_parts("e", encode({"a": 1}), source="camera-7")
    outcome = world.apply(change, T0)
    assert outcome.delta is not None
    assert outcome.delta.source == "camera-7"
    assert outcome.delta.position == ""


# ---------------------------------------------------------------- dedup


def test_reducer_acknowledges_duplicate_event_id_without_applying_it() -> None:
    world = world_with(update("e", {"a": 1}, dedup_id="ev-1"))
    outcome = world.apply(update("e", {"a": 2}, dedup_id="ev-1"), T1)
    assert outcome == Outcome(DUPLICATE, 1)
    assert world.entities == {"e": Entity("e", {"a": b"1"}, 1, T0)}


def test_reducer_reports_first_version_for_duplicate_after_later_changes() -> None:
    world = world_with(update("e", {"a": 1}, dedup_id="ev-1"), update("e", {"a": 2}))
    assert world.apply(update("e", {"a": 1}, dedup_id="ev-1"), T1) == Outcome(DUPLICATE, 1)
    assert world.entities["e"].properties == {"a": b"2"}
    assert world.version_of("e") == 2


def test_reducer_treats_event_ids_as_global_across_entities() -> None:
    world = world_with(update("a", {"x": 1}, dedup_id="ev-1"))
    assert world.apply(update("b", {"x": 1}, dedup_id="ev-1"), T1) == Outcome(DUPLICATE, 1)
    assert "b" not in world.entities


def test_reducer_acknowledges_duplicate_tombstone_without_deleting_again() -> None:
    world = world_with(update("e", {"a": 1}), delete("e", dedup_id="del-1"))
    world.apply(update("e", {"a": 1}), T1)
    assert world.apply(delete("e", dedup_id="del-1"), T2) == Outcome(DUPLICATE, 2)
    assert world.entities == {"e": Entity("e", {"a": b"1"}, 3, T1)}


def test_reducer_remembers_event_id_of_log_only_event() -> None:
    world = world_with(update("e", {"a": 1}))
    assert world.apply(Change.from_parts("e", {}, dedup_id="ev-1"), T1) == Outcome(APPLIED, 1)
    assert world.apply(update("e", {"a": 2}, dedup_id="ev-1"), T2) == Outcome(DUPLICATE, 1)
    assert world.entities["e"].properties == {"a": b"1"}


def test_reducer_applies_repeated_event_without_event_id_again() -> None:
    world = world_with(update("e", {"a": 1}))
    outcome = world.apply(update("e", {"a": 1}), T1)
    assert outcome.status is APPLIED
    assert outcome.delta is not None
    assert outcome.delta.unchanged == frozenset({"a"})
    assert world.seen == {}


# ---------------------------------------------------------------- if_version


def test_reducer_creates_entity_when_if_version_zero_and_missing() -> None:
    world = World()
    assert world.apply(update("e", {"a": 1}, if_version=0), T0).version == 1
    assert world.entities["e"].version == 1


def test_reducer_refuses_if_version_zero_when_entity_exists() -> None:
    world = world_with(update("e", {"a": 1}))
    assert world.apply(update("e", {"a": 2}, if_version=0), T1) == Outcome(CONFLICT, 1)
    assert world.entities == {"e": Entity("e", {"a": b"1"}, 1, T0)}


def test_reducer_applies_when_if_version_matches() -> None:
    world = world_with(update("e", {"a": 1}), update("e", {"a": 2}))
    outcome = world.apply(update("e", {"a": 3}, if_version=2), T1)
    assert (outcome.status, outcome.version) == (APPLIED, 3)


@pytest.mark.parametrize("stale", [1, 3, 99])
def test_reducer_refuses_if_version_mismatch_with_current_version(stale: int) -> None:
    world = world_with(update("e", {"a": 1}), update("e", {"a": 2}))
    assert world.apply(update("e", {"a": 3}, if_version=stale), T1) == Outcome(CONFLICT, 2)
    assert world.entities["e"] == Entity("e", {"a": b"2"}, 2, T0 + 1)


def test_reducer_refuses_if_version_on_missing_entity_with_version_zero() -> None:
    world = World()
    assert world.apply(update("e", {"a": 1}, if_version=1), T0) == Outcome(CONFLICT, 0)
    assert world.entities == {}


def test_reducer_counts_deleted_entity_as_missing_for_if_version() -> None:
    world = world_with(update("e", {"a": 1}), delete("e"))
    assert world.apply(update("e", {"a": 1}, if_version=2), T1) == Outcome(CONFLICT, 0)
    outcome = world.apply(update("e", {"a": 1}, if_version=0), T2)
    # Allowed (the entity does not exist), and the version still continues.
    assert outcome == Outcome(
        APPLIED, 3, Delta("e", 2, 3, T2, touched={"a": b"1"}, created=True, source="agent")
    )


def test_reducer_applies_conditional_delete_only_at_expected_version() -> None:
    world = world_with(update("e", {"a": 1}), update("e", {"a": 2}))
    assert world.apply(delete("e", if_version=1), T1) == Outcome(CONFLICT, 2)
    assert "e" in world.entities
    assert world.apply(delete("e", if_version=2), T2).version == 3
    assert "e" not in world.entities


def test_reducer_applies_retry_of_event_that_conflicted() -> None:
    world = world_with(update("e", {"a": 1}))
    assert world.apply(update("e", {"a": 2}, dedup_id="ev-1", if_version=0), T1).status is CONFLICT
    # A conflict is not remembered: the same eventId may be sent again, corrected.
    outcome = world.apply(update("e", {"a": 2}, dedup_id="ev-1", if_version=1), T2)
    assert (outcome.status, outcome.version) == (APPLIED, 2)
    assert world.apply(update("e", {"a": 3}, dedup_id="ev-1"), T3) == Outcome(DUPLICATE, 2)


def test_reducer_reports_duplicate_before_checking_if_version() -> None:
    world = world_with(update("e", {"a": 1}, dedup_id="ev-1"), update("e", {"a": 2}))
    assert world.apply(update("e", {"a": 1}, dedup_id="ev-1", if_version=0), T1) == Outcome(
        DUPLICATE, 1
    )


# ---------------------------------------------------------------- leases


def leased(entity_id: str, values: dict[str, Any], ttl_ms: int) -> Change:
    return Change.from_parts(entity_id, encode(values), source="agent", ttl_ms=ttl_ms)


def test_reducer_gives_the_entity_a_deadline_and_its_delta_the_news() -> None:
    world = World()
    outcome = world.apply(leased("e", {"a": 1}, 10_000), T0)
    assert outcome.delta == LeasedDelta(
        "e", 0, 1, T0, touched=encode({"a": 1}), created=True, source="agent", deadline=T0 + 10_000
    )
    assert world.entities["e"] == Entity("e", encode({"a": 1}), 1, T0, T0 + 10_000)
    beat = world.apply(leased("e", {"a": 1}, 10_000), T1)  # same value: a heartbeat
    assert beat.delta is not None and (beat.delta.base, beat.delta.version) == (1, 1)
    assert (beat.delta.changed, beat.delta.deadline) == ({}, T1 + 10_000)
    assert world.entities["e"].expires_at == T1 + 10_000


def test_reducer_event_without_ttl_says_nothing_of_the_lease() -> None:
    world = world_with(leased("e", {"a": 1}, 10_000))
    outcome = world.apply(update("e", {"a": 2}), T1)
    assert outcome.delta is not None and type(outcome.delta) is Delta
    assert outcome.delta.deadline is None
    assert world.entities["e"].expires_at == T0 + 10_000


def test_reducer_ttl_zero_removes_the_lease_and_says_so_once() -> None:
    world = world_with(leased("e", {"a": 1}, 10_000))
    outcome = world.apply(leased("e", {"a": 1}, 0), T1)
    assert outcome.delta is not None and outcome.delta.deadline == 0
    assert world.entities["e"].expires_at is None
    again = world.apply(leased("e", {"a": 1}, 0), T2)  # no lease to remove
    assert again.delta is not None and again.delta.deadline is None


def test_reducer_beat_with_empty_properties_has_a_delta_of_the_news_alone() -> None:
    world = world_with(update("e", {"a": 1}))
    outcome = world.apply(leased("e", {}, 5_000), T1)
    assert outcome == Outcome(
        APPLIED, 1, LeasedDelta("e", 1, 1, T0, source="agent", deadline=T1 + 5_000)
    )
    assert world.entities["e"] == Entity("e", encode({"a": 1}), 1, T0, T1 + 5_000)
    # Nothing to say: no lease to remove, or no entity to lease.
    assert world.apply(leased("e", {}, 0), T2).delta is not None  # removes it
    assert world.apply(leased("e", {}, 0), T2).delta is None
    assert world.apply(leased("f", {}, 5_000), T2) == Outcome(APPLIED, 0)
    assert "f" not in world.leases.deadlines


def test_reducer_deletion_ends_the_lease_and_a_recreated_entity_has_none() -> None:
    world = world_with(leased("e", {"a": 1}, 10_000), delete("e"))
    assert world.leases.deadlines == {}
    outcome = world.apply(update("e", {"a": 2}), T1)
    assert outcome.delta is not None and outcome.delta.created
    assert outcome.delta.deadline is None and world.entities["e"].expires_at is None


# ---------------------------------------------------------------- Delta.changed


def test_delta_changed_is_touched_when_nothing_unchanged() -> None:
    delta = Delta("e", 1, 2, T0, touched={"a": b"1", "b": b"2"})
    assert delta.changed == {"a": b"1", "b": b"2"}


def test_delta_changed_leaves_out_unchanged_properties() -> None:
    delta = Delta(
        "e", 1, 2, T0, touched={"a": b"1", "b": b"2", "c": b"3"}, unchanged=frozenset({"b"})
    )
    assert delta.changed == {"a": b"1", "c": b"3"}
    assert list(delta.changed) == ["a", "c"]


def test_delta_changed_is_empty_when_all_unchanged() -> None:
    delta = Delta("e", 1, 1, T0, touched={"a": b"1"}, unchanged=frozenset({"a"}))
    assert delta.changed == {}


def test_delta_changed_is_empty_for_deletion() -> None:
    assert Delta("e", 1, 2, T0, deleted=True).changed == {}
