"""Acks of pipelined publishes (hub/core/session/acks.py), loop-free.

The property test settles submissions in a random order, as the ingest may, and checks
that the acks still go out in the order the frames were sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.core import Change, OutcomeStatus
from hub.core.cursor import Position
from hub.core.session.acks import (
    AckOrder,
    PreparedPublish,
    acknowledge,
    event_failure,
    event_refusal,
)
from hub.wire.envelope import Envelope
from hub.wire.replies import Ack, ErrorReply

T0 = 1_772_049_867_000


@dataclass(frozen=True)
class Applied:
    status: OutcomeStatus
    version: int
    delta_position: str
    partition: int = 0


def envelope(event_id: str) -> Envelope:
    change = Change.from_parts("e/1", {"p": b"1"})
    return Envelope(event_id, "s", "src", T0, "e/1", change, b"{}")


def prepared(ref: int, *event_ids: str) -> PreparedPublish:
    return PreparedPublish(
        ref, [None] * len(event_ids), [(i, envelope(e)) for i, e in enumerate(event_ids)]
    )


def test_acks_report_each_outcome_and_keep_refusals_in_place() -> None:
    frame = PreparedPublish(
        1,
        [None, event_failure({"eventId": "bad"}, "invalid", "no stream"), None, None],
        [(0, envelope("e0")), (2, envelope("e2")), (3, envelope("e3"))],
    )
    written: dict[int, Position] = {}
    replies = acknowledge(
        [frame],
        [
            Applied(OutcomeStatus.APPLIED, 1, f"{T0}-0"),
            Applied(OutcomeStatus.DUPLICATE, 1, ""),
            Applied(OutcomeStatus.CONFLICT, 7, ""),
        ],
        written,
    )
    assert replies == [
        Ack(
            1,
            [
                {"eventId": "e0", "status": "ok", "version": 1, "position": f"{T0}-0"},
                {"eventId": "bad", "error": {"code": "invalid", "message": "no stream"}},
                {"eventId": "e2", "status": "duplicate", "version": 1, "position": None},
                {
                    "eventId": "e3",
                    "error": {"code": "conflict", "message": "entity is at version 7"},
                    "version": 7,
                },
            ],
        )
    ]
    assert written == {0: Position(0, T0, 0)}


def test_outcomes_are_split_between_the_frames_of_one_submission() -> None:
    frames = [prepared(1, "a", "b"), PreparedPublish(2, refusal="too many"), prepared(3, "c")]
    outcome = [Applied(OutcomeStatus.APPLIED, n, "") for n in (1, 2, 3)]
    replies = acknowledge(frames, outcome, {})
    assert [type(r) for r in replies] == [Ack, ErrorReply, Ack]
    first, refused, last = replies
    assert isinstance(first, Ack)
    assert isinstance(last, Ack)
    assert [r and r["version"] for r in first.results] == [1, 2]
    assert refused == ErrorReply(2, "too_many_events", "too many")
    assert [r and r["version"] for r in last.results] == [3]


def test_unapplied_submission_reports_unavailable_for_every_accepted_event() -> None:
    frame = prepared(1, "a", "b")
    (reply,) = acknowledge([frame], "Redis is unreachable", {})
    assert isinstance(reply, Ack)
    assert reply.results == [
        {"eventId": "a", "error": {"code": "unavailable", "message": "Redis is unreachable"}},
        {"eventId": "b", "error": {"code": "unavailable", "message": "Redis is unreachable"}},
    ]


def test_written_keeps_the_newest_position_per_partition() -> None:
    written = {0: Position(0, T0 + 5, 0)}
    acknowledge(
        [prepared(1, "a", "b", "c")],
        [
            Applied(OutcomeStatus.APPLIED, 1, f"{T0 + 3}-0"),
            Applied(OutcomeStatus.APPLIED, 1, f"{T0 + 7}-0", partition=1),
            Applied(OutcomeStatus.APPLIED, 1, f"{T0 + 6}-0"),
        ],
        written,
    )
    assert written == {0: Position(0, T0 + 6, 0), 1: Position(1, T0 + 7, 0)}


def test_event_failure_names_the_clients_event_id_only_when_usable() -> None:
    error = {"code": "invalid", "message": "m"}
    assert event_failure({"eventId": "x"}, "invalid", "m") == {"eventId": "x", "error": error}
    assert event_failure({"eventId": ""}, "invalid", "m")["eventId"] is None
    assert event_failure({"eventId": 5}, "invalid", "m")["eventId"] is None
    assert event_failure(["not", "an", "object"], "invalid", "m")["eventId"] is None
    assert event_refusal(envelope("y"), "forbidden", "m") == {
        "eventId": "y",
        "error": {"code": "forbidden", "message": "m"},
    }


def test_ack_order_holds_later_settled_submissions_behind_an_earlier_one() -> None:
    order: AckOrder[int] = AckOrder()
    for n in range(3):
        order.push(n)
    done = {1, 2}
    assert order.settled(done.__contains__) == []
    done.add(0)
    assert order.settled(done.__contains__) == [0, 1, 2]
    assert len(order) == 0
    order.push(9)
    order.clear()
    assert len(order) == 0


@settings(max_examples=300, deadline=None)
@given(settle_order=st.permutations(range(6)), pushes=st.integers(1, 6))
def test_acks_go_out_in_submission_order_whatever_order_redis_settles_them(
    settle_order: list[int], pushes: int
) -> None:
    order: AckOrder[int] = AckOrder()
    for n in range(pushes):
        order.push(n)
    done: set[int] = set()
    released: list[int] = []
    for n in settle_order:
        done.add(n)
        batch = order.settled(done.__contains__)
        # Only a prefix of what is settled: never one whose predecessor waits.
        assert all(m in done for m in batch)
        released += batch
    assert released == list(range(pushes))
