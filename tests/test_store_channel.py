"""Reduce-script calls pipelined on one connection (hub/store/ordered.py), on real Redis.

Calls are written before earlier ones are answered; these tests hold the channel to
its promises: Redis applies them in the order sent, a flushed script cache costs no
call and no order, and a Redis that stops answering fails the calls in flight with a
reason instead of hanging them, after which the channel works again.
"""

from __future__ import annotations

import anyio
import pytest

from hub.core import Change
from hub.errors import LogUnavailable
from hub.store import Store
from hub.store.ordered import ScriptChannel
from hub.store.store import _REDUCE_SOURCE, CHANNEL_NAME, TAIL_NAME
from hub.wire.jsonutil import canonical

NOW = 1_800_000_000_000


class Item:
    """A submission: one update of ``entity_id`` setting ``n``."""

    def __init__(self, entity_id: str, n: int) -> None:
        self.change = Change.from_parts(entity_id, {"n": canonical(n)}, source="test")
        self.stored = b'{"stream":"s"}'


async def send_many(store: Store, entity_id: str, count: int, first: int = 0) -> list[int]:
    """Send ``count`` calls without waiting (setting ``n`` to ``first``, ``first`` + 1,
    …), then the version each one produced."""
    pending = [
        await store.send_apply([Item(entity_id, n)], NOW) for n in range(first, first + count)
    ]
    return [(await p.result())[0].version for p in pending]


async def test_calls_sent_ahead_of_their_replies_apply_in_order(store: Store) -> None:
    assert await send_many(store, "ch/1", 50) == list(range(1, 51))
    entity = await store.get("ch/1")
    assert entity is not None and entity.properties == {"n": b"49"}


async def test_a_flushed_script_is_loaded_again_and_no_call_is_lost_or_reordered(
    store: Store,
) -> None:
    assert await send_many(store, "ch/2", 1) == [1]
    await store.client.script_flush()
    assert await send_many(store, "ch/2", 20, first=1) == list(range(2, 22))
    entity = await store.get("ch/2")
    assert entity is not None and entity.properties == {"n": b"20"}


async def test_calls_in_flight_fail_with_a_reason_when_redis_stops_answering(
    store: Store,
) -> None:
    pool = store.client.connection_pool
    connection = pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})
    sha = await store.client.script_load(_REDUCE_SOURCE)
    channel = ScriptChannel(connection, _REDUCE_SOURCE, str(sha), read_timeout=0.3)
    try:
        await channel.open()
        await store.client.client_pause(1000, all=True)
        call = await channel.send(["ch:k"], [0])
        with pytest.raises(LogUnavailable, match="did not answer in 0.3 s"):
            await channel.reply(call)
        await anyio.sleep(1)
        # Connected again, script loaded first: the next call works.
        call = await channel.send(["ch:k"], [0])
        with pytest.raises(LogUnavailable, match="refused the reduce script"):
            await channel.reply(call)  # an argument list the script rejects: a reply
    finally:
        await channel.aclose()


async def test_a_connection_closed_while_idle_is_made_again_on_the_next_call(
    store: Store,
) -> None:
    assert await send_many(store, "ch/3", 1) == [1]
    # This store's reduce connection: the newest of that name (each store has one).
    channels = [
        int(c["id"]) for c in await store.client.client_list() if c.get("name") == CHANNEL_NAME
    ]
    assert await store.client.client_kill_filter(_id=str(max(channels))) == 1
    await anyio.sleep(0.1)  # the close reaches the hub's side
    assert await send_many(store, "ch/3", 3, first=1) == [2, 3, 4]


async def test_the_delta_log_reader_fails_with_a_reason_then_connects_again(
    store: Store,
) -> None:
    p = store.keys.partition_of("ch/4")
    head = (await store.delta_log_head(p)).position

    async def kill_the_reader() -> None:
        await anyio.sleep(0.2)  # it is blocked in XREAD by then
        readers = [
            int(c["id"])
            for c in await store.client.client_list()
            if c.get("name") == f"{TAIL_NAME}-{p}"
        ]
        assert await store.client.client_kill_filter(_id=str(max(readers))) == 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(kill_the_reader)
        with pytest.raises(LogUnavailable, match="tailing the delta log"):
            await store.read_entries(p, head, 10, 5_000)
    # The next read connects again and sees what was written meanwhile.
    assert await send_many(store, "ch/4", 2) == [1, 2]
    batch = await store.read_entries(p, head, 10, 1_000)
    assert [d.version for d in batch.deltas()] == [1, 2]
