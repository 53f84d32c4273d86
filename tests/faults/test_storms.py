"""Connection storms: the hub stays ready, loses no delta, and returns to its baseline.

Against a ``flux serve`` process (so that its memory is its own): 1,000 native
connections opened and closed (half subscribing first), 50 at a time, twice; its
resident memory may grow in the first storm (allocator arenas, caches warming up) but
not again in the second. In process: 100 subscribers resuming from their cursors every
0.1-0.6 s while a publisher changes 50 entities: no replica misses a version, each ends
equal to the REST state, and ``/metrics`` counts no connection left open.
"""

from __future__ import annotations

from ..processes import HubProcess, free_port
from .storms import connect_storm, resume_storm, rss_kib

#: How much a second storm may add to the hub's resident memory, in KiB.
RSS_SLACK_KIB = 8 * 1024


async def test_hub_takes_a_thousand_connects_and_disconnects_twice(
    redis_url: str, key_prefix: str
) -> None:
    hub = HubProcess(redis_url, key_prefix, free_port())
    await hub.start()
    try:
        assert hub.process is not None
        base_url = f"http://127.0.0.1:{hub.port}"
        rss = [rss_kib(hub.process.pid)]
        for _ in range(2):
            outcome = await connect_storm(base_url, total=1000, concurrency=50)
            rss.append(rss_kib(hub.process.pid))
            print(outcome, rss)  # noqa: T201
            assert outcome.failures == 0, outcome
            assert outcome.connections == 1000, outcome
            assert outcome.seconds < 30, outcome
            assert outcome.readyz == 200, outcome
            assert outcome.after == outcome.before, outcome
        assert rss[2] - rss[1] < RSS_SLACK_KIB, rss
    finally:
        await hub.stop()


async def test_subscribers_resuming_in_a_storm_miss_nothing(base_url: str) -> None:
    outcome = await resume_storm(base_url, subscribers=100, seconds=3)
    print(outcome)  # noqa: T201
    assert outcome.gaps == 0, outcome
    assert outcome.failures == 0, outcome
    assert outcome.resumes > 150, outcome  # 100 of them: the last, each
    assert outcome.acked > 0, outcome
    assert outcome.readyz == 200, outcome
    assert outcome.after == outcome.before, outcome
