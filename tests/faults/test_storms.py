"""Connection storms: the hub stays ready, loses no delta, and returns to its baseline.

1,000 native connections opened and closed (half subscribing first), 50 at a time;
then 100 subscribers resuming from their cursors every 0.1-0.6 s while a publisher
changes 50 entities: no replica misses a version, each ends equal to the REST state,
and ``/metrics`` counts no connection left open.
"""

from __future__ import annotations

from .storms import connect_storm, resume_storm


async def test_hub_takes_a_thousand_connects_and_disconnects(base_url: str) -> None:
    outcome = await connect_storm(base_url, total=1000, concurrency=50)
    print(outcome)  # noqa: T201
    assert outcome.failures == 0, outcome
    assert outcome.connections == 1000, outcome
    assert outcome.seconds < 30, outcome
    assert outcome.readyz == 200, outcome
    assert outcome.after == outcome.before, outcome


async def test_subscribers_resuming_in_a_storm_miss_nothing(base_url: str) -> None:
    outcome = await resume_storm(base_url, subscribers=100, seconds=5)
    print(outcome)  # noqa: T201
    assert outcome.gaps == 0, outcome
    assert outcome.failures == 0, outcome
    assert outcome.resumes > 300, outcome
    assert outcome.acked > 0, outcome
    assert outcome.readyz == 200, outcome
    assert outcome.after == outcome.before, outcome
