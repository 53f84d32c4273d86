"""Redis stalled (SIGSTOP) for longer than the store's reply timeout, then resumed.

Requests in flight and new ones fail with 503 ``unavailable`` (REST) or an
``unavailable`` result (native) within the bound — the store gives up on a reply after
its timeout — and once Redis runs again the hub serves again by itself. A stalled Redis
may have applied a call whose reply was given up on: the retry with the same
``eventId`` is then acknowledged as a duplicate, never applied twice.

The scenario builds its store with a short timeout; the second test sets it as an
operator does, ``FLUX_REDIS_REPLY_TIMEOUT`` for a ``flux serve`` process.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from hub.config import Settings
from hub.errors import ConfigError
from hub.store.store import REPLY_TIMEOUT

from ..conftest import timeout
from ..native_client import event
from ..processes import HubProcess, free_port, until_ready
from .scenarios import ANSWER_BOUND, STORE_TIMEOUT, OwnedRedis, fault_run, owned_hub
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


async def test_flux_serve_answers_503_within_its_reply_timeout_setting(
    tmp_path: Path, key_prefix: str
) -> None:
    owned = OwnedRedis(tmp_path / "redis")
    owned.start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    hub = HubProcess(
        owned.url, key_prefix, port, {"FLUX_REDIS_REPLY_TIMEOUT": f"{STORE_TIMEOUT:g}"}
    )
    try:
        await hub.start()
        await until_ready(url)
        async with httpx.AsyncClient(base_url=url, timeout=timeout(20)) as http:
            assert (await http.post("/api/events", json=event("stall/a", n=1))).status_code == 200
            owned.pause()
            try:
                # A publish waits on the reduce script's connection, a read on the pool's:
                # both give up after the setting's 1 s, not the default 30 s.
                for method, path, body in [
                    ("POST", "/api/events", event("stall/b", n=1)),
                    ("GET", "/api/state/entities/stall%2Fa", None),
                ]:
                    started = time.monotonic()
                    reply = await http.request(method, path, json=body)
                    took = time.monotonic() - started
                    assert reply.status_code == 503, (path, reply.text)
                    assert reply.json()["code"] == "unavailable", reply.text
                    assert STORE_TIMEOUT * 0.9 <= took < ANSWER_BOUND, (path, took)
            finally:
                owned.resume()
            await until_ready(url)
            assert (await http.post("/api/events", json=event("stall/c", n=1))).status_code == 200
    finally:
        await hub.stop()
        owned.stop()


def test_the_reply_timeout_setting_is_checked() -> None:
    assert Settings.from_env({}).redis.reply_timeout == REPLY_TIMEOUT == 30
    assert Settings.from_env({"FLUX_REDIS_REPLY_TIMEOUT": "2.5"}).redis.reply_timeout == 2.5
    for bad, problem in [
        ("0", "greater than or equal to 0.1"),
        ("-1", "greater than or equal to 0.1"),
        ("301", "less than or equal to 300"),
        ("inf", "less than or equal to 300"),
        ("soon", "'soon': not a valid value"),
    ]:
        with pytest.raises(ConfigError, match=f"FLUX_REDIS_REPLY_TIMEOUT.*{problem}"):
            Settings.from_env({"FLUX_REDIS_REPLY_TIMEOUT": bad})
