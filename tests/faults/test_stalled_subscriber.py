"""One subscriber whose network stalls among 20: conflated, closed 1013, resumed right.

The short variant of ``bench/faults.py``'s stalled-subscriber row (``stall.py``): one
stall of 4 s while a publisher changes 50 entities (300 events/s) and another 1,000
(150 events/s). It checks what the stalled one sees — its deltas conflated past the
threshold, then the connection closed with 1013 and the documented reason once its
merged deltas pass the bound, then a resume from its cursor that ends at the REST
state with no gap — and that its memory on the hub stayed bounded: unsent bytes under
the threshold plus one dispatch batch, merged deltas at most the bound. The others'
latency is only reported here (one 4 s window is noise on 2 vCPUs); the bench pools
three stalls and compares.
"""

from __future__ import annotations

import pytest

from .stall import stall_run

CONFLATE_AFTER = 64 * 1024
MAX_PENDING = 200
#: The most one dispatch can add past the threshold: read_count deltas of ~256 bytes.
DISPATCH_BATCH_BYTES = 1000 * 256


@pytest.mark.alone
async def test_stalled_subscriber_is_conflated_then_closed_1013_and_resumes(
    redis_url: str, key_prefix: str
) -> None:
    outcome = await stall_run(
        redis_url,
        key_prefix,
        others=20,
        processes=1,
        rate=300,
        rounds=1,
        reading=2,
        stalled=4,
        conflate_after=CONFLATE_AFTER,
        max_pending=MAX_PENDING,
    )
    assert outcome.conflated > 0, f"the stalled subscriber was never conflated: {outcome}"
    assert 0 < outcome.peak_pending <= MAX_PENDING, outcome
    assert outcome.peak_unsent <= CONFLATE_AFTER + DISPATCH_BATCH_BYTES, outcome
    # Closed during the stall (read as it reads again); a resume whose catch-up spans
    # more than the bound's entities may be closed again, the same way, having advanced.
    assert outcome.to_close, f"not closed while stalled: {outcome}"
    assert outcome.close_phases[0].startswith("recover0"), outcome
    for code, reason in outcome.closes:
        assert code == 1013, outcome.closes
        assert reason.startswith(f"slow consumer: more than {MAX_PENDING} entities pending")
        assert reason.endswith("reconnect and resume from your cursor")
    assert outcome.gaps == 0, outcome
    assert outcome.equal, "after resuming, the stalled one's replica is not the REST state"
    # The others kept receiving while it was stalled (their latency: bench/faults.py).
    assert outcome.samples_with > 1000, outcome
