"""Redis stalled (SIGSTOP) for longer than the store's reply timeout, then resumed.

Requests in flight and new ones fail with 503 ``unavailable`` (REST) or an
``unavailable`` result (native) within the bound — the store gives up on a reply after
its timeout — and once Redis runs again the hub serves again by itself. A stalled Redis
may have applied a call whose reply was given up on: the retry with the same
``eventId`` is then acknowledged as a duplicate, never applied twice.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from .scenarios import STORE_TIMEOUT, fault_run, owned_hub
from .test_redis_down import EVENTS, check


async def test_hub_survives_redis_stalled_past_the_reply_timeout(
    tmp_path: Path, key_prefix: str
) -> None:
    async with owned_hub(tmp_path / "redis", key_prefix) as (hub, owned):

        async def break_it() -> None:
            owned.pause()

        async def mend_it() -> None:
            owned.resume()

        outcome = await fault_run(
            "redis SIGSTOP",
            hub,
            owned,
            key_prefix,
            events=EVENTS,
            break_it=break_it,
            mend_it=mend_it,
            broken_for=6 * STORE_TIMEOUT,
        )
    print(outcome)  # noqa: T201
    check(outcome)
    await asyncio.sleep(0)
