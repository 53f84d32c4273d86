"""hub/core/lease.py: ttl validation, deadlines and the lease table; the ttl on the wire
(envelope, deleted frames). No loop, no Redis."""

from __future__ import annotations

import json
import math

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.core.cursor import Position
from hub.core.lease import EXPIRED, MAX_TTL_SECONDS, Leases, deadline_ms, parse_ttl
from hub.core.model import Delta, ExpiredDelta
from hub.errors import InvalidEvent
from hub.wire.codec import JSON, MSGPACK, Codec
from hub.wire.envelope import Envelope, parse_event
from hub.wire.native import DeltaEncoder, SubPrefix, delta_frame

T0 = 1_796_000_000_000


def test_parse_ttl_reads_seconds_as_milliseconds() -> None:
    assert parse_ttl(30) == 30_000
    assert parse_ttl(1.5) == 1_500
    assert parse_ttl(MAX_TTL_SECONDS) == MAX_TTL_SECONDS * 1000


def test_parse_ttl_rounds_fractions_of_a_millisecond_up() -> None:
    assert parse_ttl(0.0001) == 1
    assert parse_ttl(0.0015) == 2


def test_parse_ttl_of_null_leaves_the_lease_alone_and_zero_removes_it() -> None:
    assert parse_ttl(None) is None
    assert parse_ttl(0) == 0
    assert parse_ttl(0.0) == 0


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (-1, "-1"),
        (MAX_TTL_SECONDS + 1, str(MAX_TTL_SECONDS + 1)),
        ("30", '"30"'),
        (True, "true"),
        ([30], "[30]"),
        ({"s": 1}, '{"s": 1}'),
        (math.inf, "Infinity"),
        (math.nan, "NaN"),
        (b"30", "b'30'"),
    ],
)
def test_parse_ttl_refuses_anything_but_a_number_in_range_naming_the_field(
    value: object, shown: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_ttl(value)
    assert str(caught.value) == (
        f"ttl must be a number of seconds from 0 to {MAX_TTL_SECONDS} "
        f"(0 removes the lease), got {shown}"
    )


def test_deadline_is_now_plus_ttl_and_needs_a_positive_ttl() -> None:
    assert deadline_ms(T0, 1) == T0 + 1
    with pytest.raises(ValueError, match="positive ttl"):
        deadline_ms(T0, 0)


def test_leases_event_with_ttl_sets_and_refreshes_the_deadline() -> None:
    leases = Leases()
    leases.after_event("a", 10_000, live=True, now_ms=T0)
    assert leases.deadlines == {"a": T0 + 10_000}
    leases.after_event("a", 2_000, live=True, now_ms=T0 + 5_000)
    assert leases.deadlines == {"a": T0 + 7_000}


def test_leases_event_without_ttl_leaves_the_lease_as_it_is() -> None:
    leases = Leases()
    leases.after_event("a", 10_000, live=True, now_ms=T0)
    leases.after_event("a", None, live=True, now_ms=T0 + 9_000)
    assert leases.deadlines == {"a": T0 + 10_000}


def test_leases_zero_ttl_or_deletion_removes_the_lease() -> None:
    leases = Leases()
    leases.after_event("a", 10_000, live=True, now_ms=T0)
    leases.after_event("b", 10_000, live=True, now_ms=T0)
    leases.after_event("a", 0, live=True, now_ms=T0)
    leases.after_event("b", None, live=False, now_ms=T0)
    assert leases.deadlines == {}


def test_leases_event_news_is_the_new_deadline_a_removal_or_nothing() -> None:
    leases = Leases()
    assert leases.after_event("a", 10_000, live=True, now_ms=T0) == T0 + 10_000
    assert leases.after_event("a", 10_000, live=True, now_ms=T0 + 1) == T0 + 10_001  # a beat
    assert leases.after_event("a", None, live=True, now_ms=T0 + 2) is None  # left as it is
    assert leases.after_event("a", 0, live=True, now_ms=T0 + 3) == 0  # removed
    assert leases.after_event("a", 0, live=True, now_ms=T0 + 4) is None  # none to remove
    assert leases.after_event("b", 10_000, live=True, now_ms=T0) == T0 + 10_000
    assert leases.after_event("b", 10_000, live=False, now_ms=T0) is None  # a deletion says it
    assert leases.deadlines == {}


def test_leases_event_that_leaves_no_entity_sets_no_lease() -> None:
    leases = Leases()
    leases.after_event("a", 10_000, live=False, now_ms=T0)
    assert leases.deadlines == {}


def test_sweep_takes_due_entities_oldest_deadline_first_ties_by_id_up_to_limit() -> None:
    leases = Leases()
    leases.after_event("c", 1_000, live=True, now_ms=T0)
    leases.after_event("b", 1_000, live=True, now_ms=T0)
    leases.after_event("a", 2_000, live=True, now_ms=T0)
    leases.after_event("z", 500, live=True, now_ms=T0)
    leases.after_event("later", 9_000, live=True, now_ms=T0)
    assert leases.due(T0 + 499, 10) == []
    assert leases.sweep(T0 + 2_000, 3) == ["z", "b", "c"]
    assert leases.sweep(T0 + 2_000, 3) == ["a"]  # the backlog, next sweep
    assert leases.deadlines == {"later": T0 + 9_000}
    assert EXPIRED == "expired"


_ops = st.lists(
    st.tuples(
        st.sampled_from("abcde"),
        st.one_of(st.none(), st.integers(0, 5_000)),
        st.booleans(),
        st.integers(0, 3_000),
    ),
    max_size=40,
)


@given(_ops, st.integers(0, 20_000), st.integers(1, 5))
def test_sweeps_expire_each_due_entity_once_and_never_one_not_due(
    ops: list[tuple[str, int | None, bool, int]], horizon: int, limit: int
) -> None:
    leases = Leases()
    now = T0
    for entity_id, ttl, live, step in ops:
        now += step
        leases.after_event(entity_id, ttl, live, now)
    at = now + horizon
    due = {i for i, d in leases.deadlines.items() if d <= at}
    swept: list[str] = []
    while batch := leases.sweep(at, limit):
        assert len(batch) <= limit
        swept += batch
    assert sorted(swept) == sorted(due)
    assert all(d > at for d in leases.deadlines.values())


# ---------------------------------------------------------------------- the wire


def _parse(raw: dict[str, object]) -> Envelope:
    return parse_event(raw, now_ms=T0, new_id=lambda: "id-1")


def _event(**extra: object) -> dict[str, object]:
    return {"stream": "s", "source": "a", "payload": {"entity_id": "e", "properties": {"x": 1}}, **extra}  # fmt: skip


def test_envelope_carries_the_ttl_to_the_reducer_and_keeps_it_in_the_stored_event() -> None:
    envelope = _parse(_event(ttl=2.5))
    assert envelope.change.ttl_ms == 2_500
    assert json.loads(envelope.stored)["ttl"] == 2.5


def test_envelope_without_ttl_or_with_null_leaves_the_lease_alone() -> None:
    for raw in (_event(), _event(ttl=None)):
        envelope = _parse(raw)
        assert envelope.change.ttl_ms is None
        assert "ttl" not in json.loads(envelope.stored)


def test_envelope_refuses_a_bad_ttl_naming_the_field() -> None:
    with pytest.raises(InvalidEvent, match=r"^ttl must be a number of seconds"):
        _parse(_event(ttl="10"))


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])
def test_deleted_frame_names_the_reason_of_an_expiry_only(codec: Codec) -> None:
    at = Position(0, T0, 0)
    prefix = SubPrefix.of(codec, "s")
    for delta, reason in (
        (ExpiredDelta("e/1", 5, 6, T0, deleted=True), "expired"),
        (Delta("e/1", 5, 6, T0, deleted=True), ""),
    ):
        body = DeltaEncoder(delta, at).body(codec)
        assert body is not None
        frame = delta_frame(codec, prefix, body)
        value = json.loads(frame) if codec.text else msgpack.unpackb(frame)
        assert value.get("reason") == (reason or None)
        assert list(value)[:5] == ["sub", "type", "id", "base", "version"]
