"""The Lua reducer (in Redis) and the pure reducer (hub/core) agree exactly.

Hypothesis generates random event sequences — updates over a small alphabet of ids,
properties and values (so that values repeat and collide), deletes, re-creations,
``null``, nested values, log-only events, repeated ``eventId``s, ``if_version``
conditions and leases (``ttl`` absent, 0 or positive) — cut into batches the way the
ingest coalesces them. Both reducers apply them; every per-event outcome, every delta
and the final state must be identical, versions included. Leases run on Redis's
clock in Redis and on the given time in the pure reducer, so of a deadline they must
agree on the news: none, removed (0) or set, and on which entities hold one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.config import LogSettings
from hub.core import Change, Delta, Entity, OutcomeStatus, World
from hub.store import Keys, Store
from hub.wire.jsonutil import canonical, dumps

IDS = ["a", "b", "ns/c", "ns/d/e"]
PROPS = ["p", "q", "r"]
VALUES: list[Any] = [0, 1, 1.0, True, False, None, "x", "", {"n": 1}, {"n": [1, 2]}, [1], []]
EVENT_IDS = ["e1", "e2", "e3"]


@dataclass(frozen=True)
class Item:
    """An event as the store takes it."""

    change: Change
    stored: bytes


def _item(change: Change) -> Item:
    return Item(change, dumps({"entity_id": change.entity_id}))


properties = st.dictionaries(st.sampled_from(PROPS), st.sampled_from(VALUES), max_size=3)

change_strategy = st.builds(
    lambda kind, entity_id, props, dedup_id, if_version, ttl_ms: Change.from_parts(
        None if kind == "no-entity" else entity_id,
        (
            None
            if kind == "no-props"
            else {"__deleted__": canonical(True)}
            if kind == "delete"
            else {"__deleted__": canonical(False)}
            if kind == "not-a-delete"
            else {k: canonical(v) for k, v in sorted(props.items())}
        ),
        dedup_id=dedup_id,
        if_version=if_version,
        source="src",
        ttl_ms=ttl_ms,
    ),
    st.sampled_from(["update"] * 6 + ["delete"] * 2 + ["no-entity", "no-props", "not-a-delete"]),
    st.sampled_from(IDS),
    properties,
    st.none() | st.none() | st.sampled_from(EVENT_IDS),
    st.none() | st.none() | st.none() | st.integers(min_value=0, max_value=3),
    st.none() | st.none() | st.sampled_from([0, 60_000]),
)

batches = st.lists(st.lists(change_strategy, min_size=1, max_size=5), min_size=1, max_size=12)


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    # Hypothesis drives sync tests; this loop runs the store calls of each example.
    with asyncio.Runner() as r:
        yield r


def _delta_key(d: Delta) -> tuple[Any, ...]:
    return (
        d.entity_id,
        d.base,
        d.version,
        d.last_updated,
        d.touched,
        d.unchanged,
        d.deleted,
        d.created,
        _news(d.deadline),
    )


def _news(deadline: int | None) -> str:
    """What a deadline says, whatever the clock it was taken on."""
    return "none" if deadline is None else "removed" if deadline == 0 else "set"


def _entity_key(e: Entity | None) -> Any:
    return None if e is None else replace(e, expires_at=e.expires_at is not None)


def _per_entity_event_ids(plan: list[list[Change]]) -> list[list[Change]]:
    """Make every eventId unique to its entity.

    De-duplication is per partition (the dedup key lives in the entity's hash slot, so
    the reduce call stays atomic in Redis Cluster): one eventId reused for entities in
    different partitions is not recognised. Clients never do that — eventIds are
    unique per event — and docs/semantics.md says so.
    """
    return [
        [replace(c, dedup_id=f"{c.entity_id}:{c.dedup_id}") if c.dedup_id else c for c in batch]
        for batch in plan
    ]


async def _fold(redis_url: str, partitions: int, plan: list[list[Change]]) -> None:
    keys = Keys("eq" + uuid.uuid4().hex[:10], partitions)
    world = World()
    expected_deltas: list[Delta] = []
    async with await Store.connect(redis_url, keys, LogSettings()) as store:
        for n, batch in enumerate(plan):
            now = 1_700_000_000_000 + n
            applied = await store.apply([_item(c) for c in batch], now)
            for change, got in zip(batch, applied, strict=True):
                outcome = world.apply(change, now)
                assert (got.status, got.version) == (outcome.status, outcome.version), change
                if got.status is OutcomeStatus.APPLIED:
                    assert bool(got.delta_position) == (outcome.delta is not None), change
                if outcome.delta is not None:
                    expected_deltas.append(outcome.delta)
                if got.status is OutcomeStatus.CONFLICT:
                    assert got.event_position == ""

        # Deltas: per partition, in order; compare per entity (no order across partitions).
        got_deltas = [
            d for p in range(partitions) for d in await store.read_deltas(p, "0-0", 100_000, None)
        ]
        for entity_id in IDS:
            mine = [_delta_key(d) for d in expected_deltas if d.entity_id == entity_id]
            theirs = [_delta_key(d) for d in got_deltas if d.entity_id == entity_id]
            assert theirs == mine, entity_id

        # Final state, versions included; deleted and absent entities read as None.
        for entity_id in IDS:
            stored = await store.get(entity_id)
            mine_entity = world.entities.get(entity_id)
            if mine_entity is None:
                assert stored is None, entity_id
            else:
                assert _entity_key(stored) == _entity_key(mine_entity), entity_id
        assert sorted(await store.list_ids("", 100)) == sorted(world.entities)


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(plan=batches)
def test_lua_reducer_agrees_with_pure_reducer(
    runner: asyncio.Runner, redis_url: str, plan: list[list[Change]]
) -> None:
    runner.run(_fold(redis_url, 1, plan))


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(plan=batches)
def test_lua_reducer_agrees_with_pure_reducer_across_partitions(
    runner: asyncio.Runner, redis_url: str, plan: list[list[Change]]
) -> None:
    runner.run(_fold(redis_url, 3, _per_entity_event_ids(plan)))
