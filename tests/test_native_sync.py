"""Snapshot, resume and compare-and-set under concurrent writes: no gap, no duplicate.

Every subscriber here keeps a :class:`Replica`, which asserts for every delta that its
``base`` equals the version held (or that it creates an entity not held); at the end
each replica must equal what the REST API shows, versions included.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import websockets

from hub.app import Hub

from .conftest import hub_on_own_store, make_settings, timeout
from .native_client import MSGPACK_PROTOCOL, Native, Replica, event, rest_state

ENTITIES = [f"w/{n}" for n in range(50)]
PROPS = ["a", "b", "c", "d"]


def _random_event(rng: random.Random, entities: list[str]) -> dict[str, Any]:
    entity = rng.choice(entities)
    roll = rng.random()
    if roll < 0.12:
        return event(entity, __deleted__=True)
    props: dict[str, Any] = {p: rng.randint(0, 4) for p in rng.sample(PROPS, rng.randint(1, 3))}
    if roll < 0.2:
        props["nested"] = {"x": [rng.randint(0, 2)], "y": None}
    return event(entity, **props)


async def _publish_randomly(
    url: str,
    rng: random.Random,
    total: int,
    per_frame: int,
    entities: list[str],
    stop: asyncio.Event | None = None,
) -> None:
    """Publish ``total`` random events, or fewer if ``stop`` is set first."""
    publisher = await Native.connect(url, MSGPACK_PROTOCOL)
    try:
        for _ in range(total // per_frame):
            if stop is not None and stop.is_set():
                break
            results = await publisher.publish(
                *[_random_event(rng, entities) for _ in range(per_frame)]
            )
            assert all("error" not in r for r in results), results
    finally:
        await publisher.close()


async def _until_equal(client: Native, replica: Replica, base_url: str, prefix: str) -> None:
    """Read frames until the replica equals the REST state (which no longer moves)."""
    expected = await rest_state(base_url, prefix)
    deadline = asyncio.get_running_loop().time() + timeout(30)

    def mine() -> dict[str, tuple[int, dict[str, Any]]]:
        # A "*" subscriber also holds the hub's own flux-core/directory.
        return {i: v for i, v in replica.state().items() if i.startswith(prefix)}

    while mine() != expected:
        assert asyncio.get_running_loop().time() < deadline, "replica never caught up"
        try:
            replica.apply(await client.recv(wait=1))
        except TimeoutError:
            continue


@pytest.mark.slow
async def test_subscriber_resuming_at_20_random_points_misses_nothing(
    hub: Hub, ws_url: str, base_url: str
) -> None:
    rng = random.Random(20261130)
    total = 10_000
    publishing = asyncio.create_task(_publish_randomly(ws_url, rng, total, 20, ENTITIES))
    # Disconnect after these numbers of deltas received (deltas < events: some change nothing).
    cuts = sorted(rng.sample(range(50, 6000), 20))
    replica = Replica()
    received = 0
    subscribe: dict[str, Any] = {
        "type": "subscribe",
        "sub": "all",
        "filter": {"all": True},
        "snapshot": True,
    }
    for cut in [*cuts, None]:
        client = await Native.connect(ws_url)
        await client.send(subscribe)
        if cut is None:
            await publishing
            await _until_equal(client, replica, base_url, "w/")
            await client.close()
            break
        # Deltas may come before the first ``synced`` (those held while the snapshot
        # was read); a client cut off before it has no cursor yet and is rightly reset.
        while received < cut or not replica.synced:
            frame = await client.recv(wait=10)
            replica.apply(frame)
            received += frame["type"] in ("delta", "deleted")
        # An abrupt loss of the connection: whatever was in flight is gone.
        client.ws.transport.abort()
        await asyncio.sleep(rng.random() * 0.05)
        subscribe = {
            "type": "subscribe",
            "sub": "all",
            "filter": {"all": True},
            "from": replica.cursor_text(),
        }
    assert replica.resets == 0
    assert replica.deltas >= received


@pytest.mark.slow
async def test_snapshot_taken_during_writes_hands_over_exactly(
    hub: Hub, ws_url: str, base_url: str
) -> None:
    rng = random.Random(7)
    entities = ENTITIES[:20]
    # Writers first, and until every subscriber has had live deltas after its
    # snapshot (however fast the hub is), so that every snapshot races with them.
    stop = asyncio.Event()
    writers = [
        asyncio.create_task(
            _publish_randomly(ws_url, random.Random(n), 200_000, 10, entities, stop)
        )
        for n in range(2)
    ]
    replicas: list[tuple[Native, Replica]] = []
    for _ in range(5):
        await asyncio.sleep(rng.random() * 0.3)
        client = await Native.connect(ws_url)
        await client.send(
            {"type": "subscribe", "sub": "w", "filter": {"prefixes": ["w/"]}, "snapshot": True}
        )
        replicas.append((client, Replica()))

    async def follow(client: Native, replica: Replica) -> None:
        while not all(w.done() for w in writers):
            try:
                replica.apply(await client.recv(wait=0.5))
            except TimeoutError:
                continue
            if all(r.deltas >= 20 for _, r in replicas):
                stop.set()

    await asyncio.gather(*writers, *(follow(c, r) for c, r in replicas))
    assert stop.is_set(), "the writers ended before every subscriber was live"
    for client, replica in replicas:
        await _until_equal(client, replica, base_url, "w/")
        assert replica.deltas > 0
        await client.close()


async def test_of_20_agents_claiming_one_entity_exactly_one_wins(
    ws_url: str, base_url: str
) -> None:
    agents = [await Native.connect(ws_url) for _ in range(20)]
    try:
        claims = [
            a.publish({**event("task/42", owner=f"agent-{n}"), "if_version": 0})
            for n, a in enumerate(agents)
        ]
        results = [r[0] for r in await asyncio.gather(*claims)]
    finally:
        for a in agents:
            await a.close()
    winners = [n for n, r in enumerate(results) if r.get("status") == "ok"]
    assert len(winners) == 1
    losers = [r for r in results if "error" in r]
    assert len(losers) == 19
    assert all(r["error"]["code"] == "conflict" and r["version"] == 1 for r in losers)
    state = await rest_state(base_url, "task/")
    assert state["task/42"] == (1, {"owner": f"agent-{winners[0]}"})


async def test_resume_beyond_the_log_gets_a_reset_and_a_fresh_snapshot(
    redis_url: str, key_prefix: str
) -> None:
    settings = make_settings(key_prefix, log={"delta_log_maxlen": 1000})
    # Log retention is the store's: build one with these settings.
    async with hub_on_own_store(redis_url, settings) as hub:
        url = f"ws://127.0.0.1:{hub.port}/api/ws"
        base = f"http://127.0.0.1:{hub.port}"
        client = await Native.connect(url)
        replica = Replica()
        await client.send(
            {"type": "subscribe", "sub": "s", "filter": {"all": True}, "snapshot": True}
        )
        await client.publish(event("old", v=0))
        # "old" may come in the snapshot (before the cursor) or as a delta after it.
        while "old" not in replica.entities or not replica.cursor:
            replica.apply(await client.recv())
        stale = replica.cursor_text()
        await client.close()

        publisher = await Native.connect(url, MSGPACK_PROTOCOL)
        for n in range(30):
            await publisher.publish(*[event(f"x/{n}", v=i) for i in range(100)])
        await publisher.close()

        client = await Native.connect(url)
        await client.send({"type": "subscribe", "sub": "s", "filter": {"all": True}, "from": stale})
        reset = await client.recv_type("reset")
        assert "no longer reaches back" in reset["reason"]
        replica.apply(reset)
        await _until_equal(client, replica, base, "")
        await client.close()


async def test_resume_with_a_malformed_cursor_is_refused(ws_url: str) -> None:
    client = await Native.connect(ws_url)
    try:
        reply = await client.request(
            {"type": "subscribe", "sub": "s", "filter": {"all": True}, "from": "yesterday"},
            "subscribed",
        )
        assert reply["type"] == "error" and reply["code"] == "bad_cursor"
    finally:
        await client.close()


async def test_resume_catches_up_from_the_cursor_of_a_live_subscription(
    ws_url: str, base_url: str
) -> None:
    client = await Native.connect(ws_url)
    replica = Replica()
    subscribed = await client.request(
        {"type": "subscribe", "sub": "s", "filter": {"prefixes": ["r/"]}}, "subscribed"
    )
    replica.set_cursor(subscribed["cursor"])
    await client.close()
    other = await Native.connect(ws_url)
    await other.publish(*[event(f"r/{n}", v=n) for n in range(10)], event("elsewhere", v=1))
    await other.close()
    client = await Native.connect(ws_url)
    await client.send(
        {
            "type": "subscribe",
            "sub": "s",
            "filter": {"prefixes": ["r/"]},
            "from": replica.cursor_text(),
        }
    )
    await _until_equal(client, replica, base_url, "r/")
    assert replica.deltas == 10
    synced = await client.recv_type("synced")
    assert synced["cursor"]
    await client.close()


async def test_hub_that_falls_behind_the_log_resets_subscribers_instead_of_skipping(
    redis_url: str, key_prefix: str
) -> None:
    # One script call appends 3,000 deltas to a log kept at ~1,000: the hub's own
    # reader cannot see them all before they are trimmed.
    settings = make_settings(
        key_prefix,
        log={"delta_log_maxlen": 1000},
        ingest={"max_batch": 5000},
        gateway={"max_events_per_frame": 5000},
    )
    async with hub_on_own_store(redis_url, settings) as hub:
        url = f"ws://127.0.0.1:{hub.port}/api/ws"
        base = f"http://127.0.0.1:{hub.port}"
        native = await Native.connect(url)
        subscribed = await native.request(
            {"type": "subscribe", "sub": "s", "filter": {"all": True}}, "subscribed"
        )
        replica = Replica()
        replica.set_cursor(subscribed["cursor"])
        compat = await websockets.connect(url)
        publisher = await Native.connect(url, MSGPACK_PROTOCOL)
        await publisher.publish(*[event(f"g/{n % 40}", n=n) for n in range(3000)])
        await publisher.close()

        reset = await native.recv_type("reset")
        assert "fell behind" in reset["reason"]
        replica.apply(reset)
        await _until_equal(native, replica, base, "")
        await native.close()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(compat.recv(), timeout(5))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        assert hub.fanout.gaps >= 1
