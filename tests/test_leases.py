"""Leases (docs/semantics.md, "Leases"): an entity published with a ``ttl`` and not
refreshed in time is deleted by the hub, on real hubs, a real Redis and real clients."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import websockets

from hub.app import Hub
from hub.config import Settings
from hub.core.lease import MAX_TTL_SECONDS, Leases
from hub.errors import LogUnavailable
from hub.store import EmbeddedRedis, Keys, Store
from hub.store.expiry import LeaseTable

from .conftest import make_settings, running_hub, timeout
from .native_client import MSGPACK_PROTOCOL, Native

#: Sweeps this often in these tests (the default is 1 s).
SWEEP = 0.05


@pytest.fixture
def settings(key_prefix: str) -> Settings:
    return make_settings(key_prefix, leases={"sweep_interval": SWEEP})


def event(entity: str, ttl: Any = None, **props: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "stream": "t",
        "source": "lease-test",
        "payload": {"entity_id": entity, "properties": props},
    }
    if ttl is not None:
        body["ttl"] = ttl
    return body


async def publish(http: httpx.AsyncClient, entity: str, ttl: Any = None, **props: Any) -> None:
    reply = await http.post("/api/events", json=event(entity, ttl, **props))
    assert reply.status_code == 200, reply.text


async def subscribe(url: str, protocol: str = "flux.v1", **frame: Any) -> Native:
    native = await Native.connect(url, protocol)
    request = {"type": "subscribe", "sub": "s", "filter": {"prefixes": ["crew/"]}, **frame}
    assert (await native.request(request, "subscribed"))["type"] == "subscribed"
    return native


async def expiry_of(native: Native, entity: str, wait: float = 5.0) -> dict[str, Any]:
    """The next ``deleted`` frame (deltas before it are skipped)."""
    while True:
        frame = await native.recv_type("deleted", wait)
        if frame["id"] == entity:
            return frame


async def gone(http: httpx.AsyncClient, entity: str, within: float = 5.0) -> float:
    """Wait until the entity is gone; returns when (time.monotonic())."""
    deadline = time.monotonic() + timeout(within)
    path = "/api/state/entities/" + entity.replace("/", "%2F")
    while (await http.get(path)).status_code == 200:
        assert time.monotonic() < deadline, f"{entity} still exists"
        await asyncio.sleep(0.02)
    return time.monotonic()


async def exists(http: httpx.AsyncClient, entity: str) -> bool:
    path = "/api/state/entities/" + entity.replace("/", "%2F")
    return (await http.get(path)).status_code == 200


# ---------------------------------------------------------------------- the whole path


async def test_expired_entity_is_deleted_with_reason_on_every_protocol_and_in_history(
    hub: Hub, http: httpx.AsyncClient, ws_url: str
) -> None:
    json_sub = await subscribe(ws_url, snapshot=True)
    msgpack_sub = await subscribe(ws_url, MSGPACK_PROTOCOL, snapshot=True)
    compat = await websockets.connect(ws_url)
    try:
        started = time.monotonic()
        await publish(http, "crew/agent-1", ttl=0.3, status="online")
        for native in (json_sub, msgpack_sub):
            frame = await expiry_of(native, "crew/agent-1")
            assert frame["reason"] == "expired"
            assert (frame["base"], frame["version"]) == (1, 2)
            assert set(frame) == {
                "sub", "type", "id", "base", "version", "reason", "lastUpdated", "position",
            }  # fmt: skip
        assert time.monotonic() - started >= 0.3
        # Flux's compat WebSocket: the same entity_deleted as any deletion.
        while True:
            message = json.loads(await asyncio.wait_for(compat.recv(), timeout(5)))
            if message["type"] == "entity_deleted" and message["entity_id"] == "crew/agent-1":
                break
        assert set(message) == {"type", "entity_id", "timestamp"}
    finally:
        await json_sub.close()
        await msgpack_sub.close()
        await compat.close()
    assert not await exists(http, "crew/agent-1")
    history = (await http.get("/api/events", params={"entity": "crew/agent-1"})).json()
    expiry, published = history
    assert expiry["stream"] == "flux.events.deletions"
    assert expiry["source"] == "flux-hub"
    assert expiry["key"] == "crew/agent-1"
    properties = expiry["payload"]["properties"]
    assert properties["__deleted__"] is True and properties["__reason__"] == "expired"
    assert properties["__deleted_at__"] == expiry["timestamp"]
    assert published["ttl"] == 0.3  # the publish's ttl is kept in its event
    metrics = (await http.get("/metrics")).text
    assert "flux_entities_expired_total 1.0" in metrics
    assert "flux_lease_backlog 0.0" in metrics


async def test_an_explicit_deletion_names_no_reason(
    hub: Hub, http: httpx.AsyncClient, ws_url: str
) -> None:
    native = await subscribe(ws_url)
    try:
        await publish(http, "crew/a", ttl=60, x=1)
        assert (await http.delete("/api/state/entities/crew%2Fa")).status_code == 200
        assert "reason" not in await expiry_of(native, "crew/a")
    finally:
        await native.close()


async def test_resume_from_a_cursor_delivers_the_expiry_missed(
    hub: Hub, http: httpx.AsyncClient, ws_url: str
) -> None:
    native = await subscribe(ws_url, snapshot=True)
    synced = await native.recv_type("synced")
    await native.close()
    await publish(http, "crew/b", ttl=0.1, x=1)
    await gone(http, "crew/b")
    native = await subscribe(ws_url, **{"from": synced["cursor"]})
    try:
        created = await native.recv_type("delta")
        assert created["id"] == "crew/b" and created.get("created")
        assert (await expiry_of(native, "crew/b"))["reason"] == "expired"
    finally:
        await native.close()


# ---------------------------------------------------------------------- the rules


async def test_refresh_extends_a_lease_and_publish_without_ttl_leaves_it(
    hub: Hub, http: httpx.AsyncClient
) -> None:
    leases = LeaseTable(hub.store)
    await publish(http, "crew/c", ttl=0.6, x=1)
    first = await leases.deadline("crew/c")
    await publish(http, "crew/c", x=2)  # no ttl: the deadline stays
    assert await leases.deadline("crew/c") == first
    await asyncio.sleep(0.3)
    await publish(http, "crew/c", ttl=0.6, x=2)  # a refresh (and no change): later
    second = await leases.deadline("crew/c")
    assert first is not None and second is not None and second >= first + 250
    await asyncio.sleep(0.45)  # past the first deadline, before the second
    assert await exists(http, "crew/c")
    ended = await gone(http, "crew/c")
    assert ended > 0


async def test_ttl_zero_removes_the_lease(hub: Hub, http: httpx.AsyncClient) -> None:
    await publish(http, "crew/d", ttl=0.2, x=1)
    await publish(http, "crew/d", ttl=0, x=1)
    assert await LeaseTable(hub.store).deadline("crew/d") is None
    await asyncio.sleep(0.4)
    assert await exists(http, "crew/d")


async def test_deletion_removes_the_lease_and_a_recreated_entity_has_none(
    hub: Hub, http: httpx.AsyncClient
) -> None:
    await publish(http, "crew/e", ttl=0.2, x=1)
    assert (await http.delete("/api/state/entities/crew%2Fe")).status_code == 200
    assert await LeaseTable(hub.store).deadline("crew/e") is None
    await publish(http, "crew/e", x=2)
    await asyncio.sleep(0.4)
    assert await exists(http, "crew/e")


async def test_empty_properties_with_ttl_refresh_a_live_entity_and_create_nothing(
    hub: Hub, http: httpx.AsyncClient
) -> None:
    leases = LeaseTable(hub.store)
    await publish(http, "crew/f", ttl=60)  # {} creates nothing: no lease
    assert await leases.deadline("crew/f") is None
    await publish(http, "crew/f", x=1)
    await publish(http, "crew/f", ttl=60)  # a live entity: leased, unchanged
    assert await leases.deadline("crew/f") is not None
    entity = (await http.get("/api/state/entities/crew%2Ff")).json()
    assert entity["properties"] == {"x": 1}


async def test_a_conflicting_or_repeated_publish_does_not_touch_the_lease(
    hub: Hub, http: httpx.AsyncClient
) -> None:
    leases = LeaseTable(hub.store)
    first = {**event("crew/g", 60, x=1), "eventId": "lease-g-1"}
    assert (await http.post("/api/events", json=first)).status_code == 200
    deadline = await leases.deadline("crew/g")
    conflict = {**event("crew/g", 0, x=2), "if_version": 7}
    assert (await http.post("/api/events", json=conflict)).status_code == 409
    await asyncio.sleep(0.01)
    assert (await http.post("/api/events", json=first)).status_code == 200  # a duplicate
    assert await leases.deadline("crew/g") == deadline


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize("ttl", [-1, "30", True, MAX_TTL_SECONDS + 1, [1]])
async def test_rest_publish_refuses_a_bad_ttl_naming_the_field(
    hub: Hub, http: httpx.AsyncClient, ttl: Any
) -> None:
    reply = await http.post("/api/events", json=event("crew/h", ttl, x=1))
    assert reply.status_code == 400
    assert reply.json()["error"].startswith("ttl must be a number of seconds from 0 to 2592000")
    assert not await exists(http, "crew/h")


async def test_batch_and_native_publish_refuse_a_bad_ttl_per_event(
    hub: Hub, http: httpx.AsyncClient, ws_url: str
) -> None:
    reply = await http.post(
        "/api/events/batch", json={"events": [event("crew/i", -5, x=1), event("crew/j", 5, x=1)]}
    )
    body = reply.json()
    assert (body["successful"], body["failed"]) == (1, 1)
    assert body["results"][0]["error"] == (
        "validation failed: ttl must be a number of seconds from 0 to 2592000 "
        "(0 removes the lease), got -5"
    )
    native = await Native.connect(ws_url)
    try:
        bad, good = await native.publish(event("crew/k", "soon", x=1), event("crew/l", 5, x=1))
        assert bad["error"]["code"] == "invalid"
        assert "ttl must be a number" in bad["error"]["message"]
        assert good["status"] == "ok"
    finally:
        await native.close()
    assert await LeaseTable(hub.store).deadline("crew/l") is not None


# ---------------------------------------------------------------------- bounded sweeps


async def test_a_sweep_expires_at_most_its_bound_and_the_backlog_drains_over_sweeps(
    redis_url: str, key_prefix: str
) -> None:
    # Sweeps only when the test asks (the interval is an hour).
    settings = make_settings(key_prefix, leases={"sweep_interval": 3600, "sweep_max": 5})
    keys = Keys(key_prefix)
    async with await Store.connect(redis_url, keys, settings.log) as store:
        async with running_hub(settings, store) as hub:
            base = f"http://127.0.0.1:{hub.port}"
            async with httpx.AsyncClient(base_url=base, timeout=timeout(10)) as http:
                batch = [event(f"crew/m{n:02}", 0.05, x=n) for n in range(12)]
                batch.append(event("crew/later", 60, x=1))
                reply = await http.post("/api/events/batch", json={"events": batch})
                assert reply.json()["failed"] == 0
                await asyncio.sleep(0.1)
                # One batch, one Redis time: equal deadlines, so by id (as Leases.due).
                model = Leases()
                for n in range(12):
                    model.after_event(f"crew/m{n:02}", 50, live=True, now_ms=0)
                model.after_event("crew/later", 60_000, live=True, now_ms=0)
                for swept in (5, 5, 2, 0):
                    assert await hub.expiry.sweep() == swept
                    model.sweep(1_000, 5)
                    listed = await http.get("/api/state/entities", params={"prefix": "crew/"})
                    assert [e["id"] for e in listed.json()] == sorted(model.deadlines)
                assert hub.metrics.expired == 12
                assert await LeaseTable(store).count() == 1


# ---------------------------------------------------------------------- several hubs


async def test_two_hubs_on_one_redis_expire_once_and_tell_both_hubs_subscribers(
    redis_url: str, key_prefix: str
) -> None:
    settings = make_settings(key_prefix, leases={"sweep_interval": 0.02})
    keys = Keys(key_prefix)
    async with (
        await Store.connect(redis_url, keys, settings.log) as store_a,
        await Store.connect(redis_url, keys, settings.log) as store_b,
        running_hub(settings, store_a) as hub_a,
        running_hub(settings, store_b) as hub_b,
    ):
        subscribers = [
            await subscribe(f"ws://127.0.0.1:{h.port}/api/ws") for h in (hub_a, hub_b, hub_b)
        ]
        base = f"http://127.0.0.1:{hub_a.port}"
        async with httpx.AsyncClient(base_url=base, timeout=timeout(10)) as http:
            for n in range(20):
                await publish(http, f"crew/n{n:02}", ttl=0.1, x=n)
            for native in subscribers:
                expired: set[str] = set()
                while len(expired) < 20:
                    frame = await native.recv_type("deleted")
                    assert frame["reason"] == "expired"
                    assert frame["id"] not in expired  # exactly one each
                    expired.add(frame["id"])
                with pytest.raises(TimeoutError):
                    await native.recv_type("deleted", wait=0.3)
                await native.close()
            for n in range(20):
                history = await http.get("/api/events", params={"entity": f"crew/n{n:02}"})
                assert [e["stream"] for e in history.json()] == ["flux.events.deletions", "t"]
        # Both hubs swept (20 ms apart); between them, each entity expired once.
        assert hub_a.metrics.expired + hub_b.metrics.expired == 20


# ---------------------------------------------------------------------- restarts


async def test_a_lease_survives_restarts_and_a_new_hub_sweeps_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "flux-data"
    settings = make_settings("restart", leases={"sweep_interval": 3600})
    keys = Keys("restart")
    with EmbeddedRedis(data_dir) as server:
        async with (
            await Store.connect(server.url, keys, settings.log) as store,
            running_hub(settings, store) as hub,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}") as http,
        ):
            await publish(http, "crew/o", ttl=0.5, x=1)
            await publish(http, "crew/p", ttl=600, x=1)
    # Hub and Redis stopped; the deadline passes while nothing runs.
    await asyncio.sleep(0.7)
    settings = make_settings("restart", leases={"sweep_interval": SWEEP})
    with EmbeddedRedis(data_dir) as server:
        async with (
            await Store.connect(server.url, keys, settings.log) as store,
            running_hub(settings, store) as hub,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}") as http,
        ):
            await gone(http, "crew/o")
            assert await exists(http, "crew/p")
            history = (await http.get("/api/events", params={"entity": "crew/o"})).json()
            assert history[0]["payload"]["properties"]["__reason__"] == "expired"


# ---------------------------------------------------------------------- partitions, replay


async def test_every_partition_is_swept(redis_url: str, key_prefix: str) -> None:
    settings = make_settings(key_prefix, redis={"partitions": 4}, leases={"sweep_interval": SWEEP})
    keys = Keys(key_prefix, 4)
    async with (
        await Store.connect(redis_url, keys, settings.log) as store,
        running_hub(settings, store) as hub,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}", timeout=timeout(10)) as http,
    ):
        ids = [f"crew/q{n}" for n in range(12)]
        assert len({keys.partition_of(i) for i in ids}) == 4
        batch = [event(i, 0.1, x=1) for i in ids]
        assert (await http.post("/api/events/batch", json={"events": batch})).json()["failed"] == 0
        for entity in ids:
            await gone(http, entity)
        assert hub.metrics.expired == 12


async def test_replay_of_a_log_with_expiries_agrees_with_the_state(
    hub: Hub, http: httpx.AsyncClient, redis_url: str, key_prefix: str
) -> None:
    from .test_replay import replay_json

    await publish(http, "crew/r1", ttl=0.1, x=1)
    await publish(http, "crew/r2", ttl=60, x=1)
    await gone(http, "crew/r1")
    status, report = await replay_json(redis_url, key_prefix)
    assert status == 0, report
    assert report["partitions"][0]["differences"] == []


async def test_an_event_stream_reader_hears_the_expiry_with_its_reason(
    hub: Hub, http: httpx.AsyncClient
) -> None:
    async with http.stream("GET", "/api/stream", params={"prefixes": "crew/"}) as stream:
        lines = stream.aiter_lines()
        async for line in lines:
            if line.startswith("event: synced"):
                break
        await publish(http, "crew/s1", ttl=0.1, x=1)
        async with asyncio.timeout(timeout(5)):
            async for line in lines:
                if line.startswith("data:") and '"type":"deleted"' in line:
                    frame = json.loads(line.removeprefix("data:"))
                    break
    assert (frame["id"], frame["reason"]) == ("crew/s1", "expired")


# ---------------------------------------------------------------------- Redis refusing writes


async def test_sweeps_refused_by_a_full_redis_are_retried_and_the_hub_lives_on(
    tmp_path: Path, key_prefix: str
) -> None:
    from .faults.scenarios import OwnedRedis

    owned = OwnedRedis(tmp_path / "redis", "everysec")
    owned.start()
    try:
        settings = make_settings(key_prefix, leases={"sweep_interval": SWEEP})
        async with (
            await Store.connect(owned.url, Keys(key_prefix), settings.log) as store,
            running_hub(settings, store) as hub,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}") as http,
        ):
            await publish(http, "crew/t1", ttl=0.3, x=1)
            with owned.client() as client:
                client.config_set("maxmemory", "1")  # OOM: every write refused
            await asyncio.sleep(0.6)  # sweeps refused, the deadline passed
            assert (await http.get("/readyz")).status_code == 200
            assert await exists(http, "crew/t1")
            with pytest.raises(LogUnavailable, match="refused the lease sweep: .*OOM"):
                await LeaseTable(store).sweep(0, ["x"])
            with owned.client() as client:
                client.config_set("maxmemory", "0")
            await gone(http, "crew/t1")  # the next sweep took it
    finally:
        owned.stop()


# ---------------------------------------------------------------------- Redis against the rules


async def test_the_leases_redis_keeps_are_those_of_the_pure_rules(store: Store) -> None:
    """Random events (ttl absent, null, 0 or positive; deletions; empty properties;
    compare-and-set; repeated eventIds) applied by the reduce script one by one: after
    each, the leased entities in Redis are those the pure model (hub/core/lease.py,
    fed by the pure reducer) says."""
    import random

    from hub.core.reducer import World
    from hub.wire.envelope import parse_event

    for seed in range(40):
        rng = random.Random(seed)
        world, model = World(), Leases()
        prefix = f"prop{seed}/"
        ids = [prefix + name for name in "abc"]
        for n in range(25):
            entity = rng.choice(ids)
            kind = rng.random()
            properties: dict[str, Any] = (
                {"__deleted__": True}
                if kind < 0.15
                else {}
                if kind < 0.25
                else {"v": rng.randint(0, 2)}
            )
            raw: dict[str, Any] = {
                "stream": "p",
                "source": "p",
                "eventId": f"{prefix}{rng.randint(0, 30)}",  # some repeat: duplicates
                "payload": {"entity_id": entity, "properties": properties},
            }
            ttl = rng.choice([None, "absent", 0, 30, 60])
            if ttl != "absent":
                raw["ttl"] = ttl
            if rng.random() < 0.2:
                raw["if_version"] = rng.randint(0, 3)
            envelope = parse_event(raw, now_ms=n, new_id=lambda: "unused")  # ids given
            (applied,) = await store.apply([envelope], n)
            outcome = world.apply(envelope.change, n)
            assert applied.status is outcome.status, (seed, n, raw)
            if outcome.status.value == "ok":
                live = entity in world.entities
                model.after_event(entity, envelope.change.ttl_ms, live, n)
            leased = cast("list[bytes]", await store.client.zrange(store.keys.leases(0), 0, -1))
            assert {i.decode() for i in leased if i.decode().startswith(prefix)} == set(
                model.deadlines
            ), (seed, n, raw)
