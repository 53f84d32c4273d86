"""``FLUX_REDIS_WAIT_REPLICAS``: a WAIT after each reduce call, on one real Redis.

The session's Redis has no replica: ``WAIT 0`` is answered at once (every call goes
through the WAIT reply's path), ``WAIT 1`` never is (every call is applied but not
acknowledged). The cluster's replicas confirm it: tests/test_cluster_failover.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from hub.config import Settings
from hub.errors import ConfigError, LogUnavailable
from hub.store import Keys, Store

from .conftest import make_settings
from .test_store_channel import send_many


@pytest.fixture
async def waiting(redis_url: str, key_prefix: str) -> AsyncIterator[Store]:
    """A store that WAITs for 0 replicas: the WAIT reply is read after every call."""
    settings = make_settings(key_prefix)
    async with await Store.connect(redis_url, Keys(key_prefix), settings.log, wait=(0, 100)) as s:
        yield s


async def test_calls_followed_by_a_wait_apply_in_order(waiting: Store) -> None:
    assert await send_many(waiting, "w/1", 50) == list(range(1, 51))
    entity = await waiting.get("w/1")
    assert entity is not None and entity.properties == {"n": b"49"}


async def test_a_flushed_script_with_waits_in_flight_is_recovered_in_order(
    waiting: Store,
) -> None:
    assert await send_many(waiting, "w/2", 1) == [1]
    await waiting.client.script_flush()
    assert await send_many(waiting, "w/2", 20, first=1) == list(range(2, 22))
    assert await send_many(waiting, "w/2", 5, first=21) == list(range(22, 27))


async def test_a_write_no_replica_confirms_is_applied_but_answered_unavailable(
    redis_url: str, key_prefix: str
) -> None:
    settings = make_settings(key_prefix)
    async with await Store.connect(
        redis_url, Keys(key_prefix), settings.log, wait=(1, 200)
    ) as store:
        began = time.monotonic()
        with pytest.raises(LogUnavailable, match=r"only 0 of the 1 replicas .* within 200 ms"):
            await send_many(store, "w/3", 1)
        assert time.monotonic() - began >= 0.2
        # Applied on the master all the same: a retry (same eventId) is a duplicate.
        entity = await store.get("w/3")
        assert entity is not None and entity.version == 1


def test_the_wait_settings_are_read_and_bounded() -> None:
    settings = Settings.from_env(
        {"FLUX_REDIS_WAIT_REPLICAS": "1", "FLUX_REDIS_WAIT_TIMEOUT_MS": "250"}
    )
    assert settings.redis.wait() == (1, 250)
    assert Settings.from_env({}).redis.wait() is None
    with pytest.raises(ConfigError, match="FLUX_REDIS_WAIT_TIMEOUT_MS: .* greater than"):
        Settings.from_env({"FLUX_REDIS_WAIT_TIMEOUT_MS": "0"})
    with pytest.raises(ConfigError, match="FLUX_REDIS_WAIT_REPLICAS='x': not a valid value"):
        Settings.from_env({"FLUX_REDIS_WAIT_REPLICAS": "x"})
