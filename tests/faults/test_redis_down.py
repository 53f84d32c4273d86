"""Redis killed or stopped under a running hub, then started again on its data.

With ``appendfsync always`` nothing acknowledged may be lost; meanwhile clients get
503 ``unavailable`` with ``Retry-After`` (REST) or an ``unavailable`` result (native)
within :data:`ANSWER_BOUND`, never a 500 or a hang; the hub recovers by itself.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from .scenarios import ANSWER_BOUND, Outcome, fault_run, owned_hub

EVENTS = 150


def check(outcome: Outcome) -> None:
    assert outcome.lost == 0, outcome
    assert outcome.doubled == 0, outcome
    assert outcome.gaps == 0, outcome
    assert outcome.recovery is not None, outcome
    assert outcome.slowest < ANSWER_BOUND, outcome
    assert outcome.refusals, "the fault was not felt"
    allowed = ("rest 503", "native unavailable", "native ConnectionClosed")
    assert all(kind.startswith(allowed) for kind in outcome.refusals), outcome.refusals
    for path, (status, took) in outcome.probes.items():
        assert status in (200, 503), (path, status)
        assert took < ANSWER_BOUND, (path, took)
    assert outcome.probes["/healthz"][0] == 200
    assert outcome.probes["/readyz"][0] == 503


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
async def test_hub_survives_redis_killed_and_restarted(
    tmp_path: Path, key_prefix: str, sig: signal.Signals
) -> None:
    async with owned_hub(tmp_path / "redis", key_prefix) as (hub, owned):

        async def break_it() -> None:
            await asyncio.to_thread(owned.kill, sig)

        async def mend_it() -> None:
            await asyncio.to_thread(owned.start)

        outcome = await fault_run(
            f"redis {sig.name}",
            hub,
            owned,
            key_prefix,
            events=EVENTS,
            break_it=break_it,
            mend_it=mend_it,
            broken_for=1.5,
        )
    print(outcome)  # noqa: T201
    check(outcome)
