"""One subscription's hand-off to live deltas (hub/core/session/sync.py), loop-free.

The unit tests pin each verdict; the property test at the end plays a resume the way
the shell does — a catch-up reading the log in batches while the log grows and the
fan-out dispatches — and checks that the client gets exactly the deltas after its
cursor, each once, in log order per partition.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.core import Delta, Pattern
from hub.core.cursor import Position
from hub.core.handoff import SnapshotCut
from hub.core.session.sync import MAX_RESETS, CatchUp, SubscriptionSync, Verdict

T0 = 1_772_049_867_000


def delta(entity_id: str = "a/1", seq: int = 1, partition: int = 0) -> tuple[Delta, Position]:
    position = Position(partition, T0 + seq, 0)
    return Delta(entity_id, seq - 1, seq, T0, position=position.stream_id, seq=seq), position


def sync(*patterns: Pattern, scope: str = "", max_held: int = 10) -> SubscriptionSync:
    return SubscriptionSync("s", patterns or [Pattern.all()], scope, max_held)


# ---------------------------------------------------------------- offer


def test_live_subscription_delivers_every_delta() -> None:
    s = sync()
    assert s.synced
    assert s.offer(*delta(seq=1)) is Verdict.DELIVER
    assert s.offer(*delta(seq=2)) is Verdict.DELIVER


def test_holding_subscription_keeps_deltas_until_its_bound_then_overflows() -> None:
    s = sync(max_held=2)
    s.hold()
    assert not s.synced
    assert s.offer(*delta(seq=1)) is Verdict.HOLD
    assert s.offer(*delta(seq=2)) is Verdict.HOLD
    assert s.offer(*delta(seq=3)) is Verdict.OVERFLOW
    assert s.holding is not None
    assert [d.seq for d, _ in s.holding] == [1, 2, 3]


def test_delta_outside_the_read_scope_is_skipped_even_while_holding() -> None:
    # A glob such as "*" reaches outside the reader's namespace; the index matched it.
    s = sync(Pattern.glob("*"), scope="mine/")
    assert s.offer(*delta("other/1")) is Verdict.SKIP
    s.hold()
    assert s.offer(*delta("other/1")) is Verdict.SKIP
    assert s.holding == []
    assert s.offer(*delta("mine/1")) is Verdict.HOLD


def test_after_a_catch_up_deltas_it_sent_are_skipped_and_later_ones_delivered() -> None:
    s = sync()
    s.hold()
    s.finish_catch_up({0: Position(0, T0 + 5, 0)})
    assert s.offer(*delta(seq=4)) is Verdict.SKIP
    assert s.offer(*delta(seq=5)) is Verdict.SKIP
    assert s.offer(*delta(seq=6)) is Verdict.DELIVER
    # A partition the catch-up did not name is not filtered.
    assert s.offer(*delta(seq=1, partition=1)) is Verdict.DELIVER


def test_after_a_snapshot_deltas_it_reflects_are_skipped_until_the_cut_is_passed() -> None:
    s = sync()
    s.hold()
    cut = SnapshotCut()
    cut.add_page(0, "", None, Position(0, T0 + 5, 0))
    assert s.finish_snapshot(cut) == []
    assert not s.synced  # no exact cursor yet
    assert s.offer(*delta(seq=5)) is Verdict.SKIP
    assert s.offer(*delta(seq=6)) is Verdict.DELIVER
    s.passed_cut()
    assert s.synced
    assert s.offer(*delta(seq=5)) is Verdict.DELIVER


def test_matches_needs_a_pattern_and_the_read_scope() -> None:
    s = sync(Pattern.prefix("a/"), Pattern.exact("b"), scope="a")
    assert s.matches("a/1")
    assert not s.matches("b")  # outside the scope
    assert not s.matches("ab")  # no pattern


# ---------------------------------------------------------------- hand-offs


def test_finish_catch_up_sends_only_held_deltas_after_what_the_catch_up_sent() -> None:
    s = sync()
    s.hold()
    for seq in (3, 4, 5):
        s.offer(*delta(seq=seq))
    s.offer(*delta(seq=1, partition=1))
    sent = {0: Position(0, T0 + 4, 0), 1: Position(1, T0, 0)}
    out = s.finish_catch_up(sent)
    assert [(d.seq, p.partition) for d, p in out] == [(5, 0), (1, 1)]
    assert sent == {0: Position(0, T0 + 5, 0), 1: Position(1, T0 + 1, 0)}
    assert s.holding is None
    assert s.sent_upto is sent
    assert s.synced


def test_finish_snapshot_sends_held_deltas_the_pages_do_not_reflect() -> None:
    s = sync()
    s.hold()
    for entity_id, seq in (("a", 1), ("z", 2), ("a", 3)):
        s.offer(*delta(entity_id, seq))
    cut = SnapshotCut()
    cut.add_page(0, "", "m", Position(0, T0 + 2, 0))  # "a" read after seq 2
    cut.add_page(0, "", None, Position(0, T0 + 1, 0))  # "z" read after seq 1
    out = s.finish_snapshot(cut)
    assert [(d.entity_id, d.seq) for d, _ in out] == [("z", 2), ("a", 3)]
    assert s.cut is cut


def test_a_reset_clears_what_an_earlier_hand_off_left() -> None:
    s = sync()
    s.hold()
    s.finish_catch_up({0: Position(0, T0 + 9, 0)})
    s.hold()
    assert s.sent_upto == {}
    assert s.cut is None
    assert s.holding == []


def test_overflowed_gives_up_only_after_max_resets_in_a_row() -> None:
    s = sync()
    assert [s.overflowed() for _ in range(MAX_RESETS)] == [False] * MAX_RESETS
    assert s.overflowed()


@pytest.mark.parametrize("finish", ["catch-up", "snapshot"])
def test_a_completed_hand_off_forgives_earlier_resets(finish: str) -> None:
    s = sync()
    for _ in range(MAX_RESETS):
        s.overflowed()
    s.hold()
    if finish == "catch-up":
        s.finish_catch_up({0: Position(0, T0, 0)})
    else:
        s.finish_snapshot(SnapshotCut())
        s.passed_cut()
    assert s.resets == 0
    assert not s.overflowed()


def test_direct_says_when_every_delta_would_be_delivered() -> None:
    # The shell skips offer() while it holds: it must be exactly offer()'s rule.
    s = sync()
    assert s.direct
    s.hold()
    assert not s.direct
    cut = SnapshotCut()
    cut.add_page(0, "", None, Position(0, T0 + 5, 0))
    s.finish_snapshot(cut)
    assert not s.direct  # the cut still filters
    s.passed_cut()
    assert s.direct
    s.hold()
    s.finish_catch_up({0: Position(0, T0 + 5, 0)})
    assert not s.direct  # what the catch-up sent is skipped
    s.close()
    assert not s.direct
    assert not sync(scope="mine/").direct  # deltas outside the scope are skipped


def test_close_drops_held_deltas() -> None:
    s = sync()
    s.hold()
    s.offer(*delta())
    s.close()
    assert s.closed
    assert s.holding is None


# ---------------------------------------------------------------- catch-up reads


def test_catch_up_sends_matching_deltas_and_advances_past_every_delta_read() -> None:
    s = sync(Pattern.prefix("a/"))
    reading = CatchUp({0: Position(0, T0, 0)})
    d1, _ = delta("a/1", 1)
    d2, p2 = delta("b/1", 2)
    out = reading.accept(0, [d1, d2], s)
    assert out is not None
    assert [d for d, _ in out] == [d1]
    assert reading.sent[0] == p2


def test_catch_up_read_of_nothing_sends_nothing() -> None:
    reading = CatchUp({0: Position(0, T0, 0)})
    assert reading.accept(0, [], sync()) == []
    assert reading.sent == {0: Position(0, T0, 0)}


def test_catch_up_notices_deltas_trimmed_between_two_reads() -> None:
    reading = CatchUp({0: Position(0, T0, 0), 1: Position(1, T0, 0)})
    s = sync()
    assert reading.accept(0, [delta(seq=1)[0], delta(seq=2)[0]], s)
    assert reading.accept(0, [delta(seq=3)[0]], s)
    assert reading.accept(0, [delta(seq=5)[0]], s) is None
    # Partitions are counted apart: the first read of another one sets its start.
    assert reading.accept(1, [delta(seq=9, partition=1)[0]], s)


# ---------------------------------------------------------------- a resume, played

IDS = ["a/1", "a/2", "b/1"]


@st.composite
def resumes(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "initial": draw(st.lists(st.tuples(st.integers(0, 1), st.sampled_from(IDS)), max_size=12)),
        "steps": draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["append", "dispatch", "read"]),
                    st.integers(0, 1),
                    st.sampled_from(IDS),
                ),
                max_size=40,
            )
        ),
        "batch": draw(st.integers(1, 4)),
        "cursor": draw(st.tuples(st.integers(0, 12), st.integers(0, 12))),
        "dispatched": draw(st.tuples(st.integers(0, 12), st.integers(0, 12))),
        "patterns": draw(
            st.lists(
                st.sampled_from([Pattern.all(), Pattern.prefix("a/"), Pattern.exact("b/1")]),
                min_size=1,
                max_size=2,
            )
        ),
    }


@settings(max_examples=300, deadline=None)
@given(case=resumes())
def test_a_resume_delivers_exactly_the_deltas_after_the_cursor_once_in_order(
    case: dict[str, Any],
) -> None:
    logs: list[list[tuple[Delta, Position]]] = [[], []]

    def append(partition: int, entity_id: str) -> None:
        log = logs[partition]
        seq = len(log) + 1
        position = Position(partition, T0 + seq, 0)
        log.append((Delta(entity_id, 0, 1, T0, position=position.stream_id, seq=seq), position))

    for partition, entity_id in case["initial"]:
        append(partition, entity_id)
    # The client's cursor, and how far the fan-out had dispatched when it subscribed.
    cursor_at = [min(c, len(logs[p])) for p, c in enumerate(case["cursor"])]
    dispatched = [min(f, len(logs[p])) for p, f in enumerate(case["dispatched"])]
    start = {p: logs[p][cursor_at[p] - 1][1] if cursor_at[p] else Position(p, 0, 0) for p in (0, 1)}

    s = SubscriptionSync("s", case["patterns"], "", max_held=1_000)
    s.hold()
    received: list[tuple[Delta, Position]] = []

    def dispatch(partition: int) -> None:
        assert s.direct == (s.holding is None and not s.sent_upto and s.cut is None)
        if dispatched[partition] < len(logs[partition]):
            d, position = logs[partition][dispatched[partition]]
            dispatched[partition] += 1
            if s.matches(d.entity_id) and s.offer(d, position) is Verdict.DELIVER:
                received.append((d, position))

    reading = CatchUp(start)
    partition = 0
    steps = list(case["steps"])
    while partition < 2:
        kind, p, entity_id = steps.pop(0) if steps else ("read", 0, "")
        if kind == "append":
            append(p, entity_id)
        elif kind == "dispatch":
            dispatch(p)
        else:
            after = reading.sent[partition]
            batch = [d for d, pos in logs[partition] if pos > after][: case["batch"]]
            out = reading.accept(partition, batch, s)
            assert out is not None  # nothing is trimmed here
            received += out
            if not batch:
                partition += 1
    received += s.finish_catch_up(reading.sent)
    # Whatever comes after, live.
    for kind, p, entity_id in steps:
        if kind == "append":
            append(p, entity_id)
        dispatch(p)
    for p in (0, 1):
        while dispatched[p] < len(logs[p]):
            dispatch(p)

    expected = [
        (d, pos)
        for p in (0, 1)
        for d, pos in logs[p][cursor_at[p] :]
        if any(pattern.matches(d.entity_id) for pattern in case["patterns"])
    ]
    for p in (0, 1):
        assert [pos for _, pos in received if pos.partition == p] == [
            pos for _, pos in expected if pos.partition == p
        ]
