"""Request order and the request queue's bound (hub/core/session/requests.py), loop-free.

The property test drives the queue as the shell does — frames arriving in bursts, a
task taking work, submissions acknowledged in between — and checks the rules a client
relies on: every request is handled once, in the order sent; publish submissions never
exceed ``max_events`` events; reading is paused only while the queue is at its bound,
and never left paused with nothing queued (that would hang the connection).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.core.session.requests import RequestQueue
from hub.wire.frames import CLIENT_FRAMES, ClientFrame, GetFrame, PublishFrame


def publish(ref: int, events: int = 1) -> ClientFrame:
    return CLIENT_FRAMES.validate_python({"type": "publish", "ref": ref, "events": [{}] * events})


def get(ref: int) -> ClientFrame:
    return CLIENT_FRAMES.validate_python({"type": "get", "ref": ref, "ids": ["x"]})


def refs(frames: list[Any]) -> list[Any]:
    return [f.ref for f in frames]


def test_a_publish_with_nothing_ahead_may_skip_the_queue() -> None:
    q = RequestQueue(max_pending=4, max_events=10, in_flight_limit=2)
    assert q.can_publish_now(in_flight=0)
    assert q.can_publish_now(in_flight=1)
    assert not q.can_publish_now(in_flight=2)
    q.push(get(1))
    assert not q.can_publish_now(in_flight=0)  # a request is queued before it
    assert q.take() is not None
    assert not q.can_publish_now(in_flight=0)  # one is being handled
    assert q.take() is None
    assert not q.busy
    assert q.can_publish_now(in_flight=0)


def test_consecutive_publishes_are_taken_together_up_to_max_events() -> None:
    q = RequestQueue(max_pending=10, max_events=5, in_flight_limit=2)
    for frame in [publish(1, 2), publish(2, 3), publish(3, 1), get(4), publish(5)]:
        q.push(frame)
    first = q.take()
    assert first is not None
    assert refs(first.publishes) == [1, 2]  # a third would make 6 events
    assert first.request is None
    second = q.take()
    assert second is not None
    assert refs(second.publishes) == [3]  # stops at the get
    third = q.take()
    assert third is not None
    assert isinstance(third.request, GetFrame)
    assert third.publishes == []
    fourth = q.take()
    assert fourth is not None
    assert refs(fourth.publishes) == [5]
    assert q.take() is None


def test_reading_pauses_at_the_bound_and_resumes_at_half() -> None:
    q = RequestQueue(max_pending=4, max_events=10, in_flight_limit=2)
    assert [q.push(get(n)) for n in range(4)] == [False, False, False, True]
    assert q.paused
    assert not q.push(get(4))  # already paused: said once
    resumed = []
    while (work := q.take()) is not None:
        resumed.append(work.resume_reading)
    assert resumed == [False, False, True, False, False]
    assert not q.paused


def test_a_queue_bound_of_one_still_resumes_reading() -> None:
    q = RequestQueue(max_pending=1, max_events=10, in_flight_limit=2)
    assert q.push(get(1))
    work = q.take()
    assert work is not None
    assert work.resume_reading


def test_publishes_taken_in_bulk_resume_reading_when_they_empty_the_queue() -> None:
    # A flood of publishes taken in one submission must not leave reading paused.
    q = RequestQueue(max_pending=3, max_events=100, in_flight_limit=2)
    for n in range(3):
        q.push(publish(n))
    work = q.take()
    assert work is not None
    assert len(work.publishes) == 3
    assert work.resume_reading


def test_a_submission_waits_past_the_in_flight_limit() -> None:
    q = RequestQueue(max_pending=4, max_events=10, in_flight_limit=2)
    assert not q.over_in_flight(2)
    assert q.over_in_flight(3)


def test_clear_forgets_queued_requests() -> None:
    q = RequestQueue(max_pending=4, max_events=10, in_flight_limit=2)
    q.push(get(1))
    q.clear()
    assert q.take() is None


@settings(max_examples=300, deadline=None)
@given(
    arrivals=st.lists(
        st.lists(st.tuples(st.booleans(), st.integers(1, 4)), max_size=6), max_size=12
    ),
    takes=st.lists(st.integers(0, 3), min_size=12, max_size=12),
    max_pending=st.integers(1, 6),
    max_events=st.integers(4, 8),
)
def test_every_request_is_handled_once_in_order_and_reading_never_hangs(
    arrivals: list[list[tuple[bool, int]]], takes: list[int], max_pending: int, max_events: int
) -> None:
    q = RequestQueue(max_pending, max_events, in_flight_limit=2)
    sent: list[int] = []
    handled: list[int] = []
    reading = True
    ref = 0

    def take_one() -> bool:
        nonlocal reading
        work = q.take()
        if work is None:
            return False
        if work.resume_reading:
            assert not reading
            reading = True
        if work.publishes:
            assert sum(len(f.events) for f in work.publishes) <= max(
                max_events, len(work.publishes[0].events)
            )
            assert all(isinstance(f, PublishFrame) for f in work.publishes)
            handled.extend(f.ref for f in work.publishes)  # type: ignore[misc]
        else:
            assert work.request is not None
            handled.append(work.request.ref)  # type: ignore[arg-type]
        return True

    for burst, count in zip(arrivals, takes, strict=False):
        for is_publish, events in burst:
            if not reading:
                break  # the socket is not read: the client's frames wait in TCP
            ref += 1
            sent.append(ref)
            if q.push(publish(ref, events) if is_publish else get(ref)):
                reading = False
        for _ in range(count):
            take_one()
        assert reading or len(q.queue) > max_pending // 2
    while take_one():
        pass
    assert handled == sent
    assert reading
