"""A lease's deadline on every read (``expiresAt``), on a real hub, a real Redis and
real clients: REST reads and listings, the native ``get``/``list``, snapshots and
live deltas (the news of a ``ttl``: a new deadline, or null when removed), resumes,
Server-Sent Events, the Python SDK's reads and replica; and the Flux-compatible
WebSocket left exactly as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, Literal

import httpx
import pytest
import websockets

from flux_client import EntityCache, FluxClient
from hub.app import Hub
from hub.config import Settings
from hub.core import format_ms, parse_rfc3339_ms
from hub.store import Keys, Store
from hub.store.expiry import LeaseTable

from .conftest import make_settings, running_hub, timeout
from .native_client import MSGPACK_PROTOCOL, Native
from .test_leases import SWEEP, event, gone, publish

#: The fields of an entity without a lease: Flux's, and ``version``.
PLAIN = {"id", "properties", "lastUpdated", "version"}


@pytest.fixture
def settings(key_prefix: str) -> Settings:
    return make_settings(key_prefix, leases={"sweep_interval": SWEEP})


async def read(http: httpx.AsyncClient, entity: str) -> dict[str, Any]:
    reply = await http.get("/api/state/entities/" + entity.replace("/", "%2F"))
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def deadline_text(hub: Hub, entity: str) -> str | None:
    """The deadline Redis keeps, as ``expiresAt`` shows it (None: no lease)."""
    deadline = await LeaseTable(hub.store).deadline(entity)
    return None if deadline is None else format_ms(deadline)


# ---------------------------------------------------------------------- REST


async def test_rest_read_shows_the_deadline_while_leased_and_moves_it_on_a_beat(
    hub: Hub, http: httpx.AsyncClient
) -> None:
    await publish(http, "crew/plain", x=1)
    assert set(await read(http, "crew/plain")) == PLAIN  # what Flux clients saw
    before = time.time() * 1000
    await publish(http, "crew/a", ttl=30, x=1)
    entity = await read(http, "crew/a")
    assert set(entity) == PLAIN | {"expiresAt"}
    assert list(entity)[-1] == "expiresAt"
    assert entity["expiresAt"] == await deadline_text(hub, "crew/a")
    assert entity["expiresAt"].endswith("Z")
    expires = parse_rfc3339_ms(entity["expiresAt"])
    assert before + 29_000 <= expires <= time.time() * 1000 + 31_000
    await asyncio.sleep(0.02)
    await publish(http, "crew/a", ttl=60, x=1)  # a beat: no value changes
    beat = await read(http, "crew/a")
    assert beat["version"] == 1
    assert parse_rfc3339_ms(beat["expiresAt"]) >= expires + 30_000
    await publish(http, "crew/a", x=2)  # no ttl: the lease stays as it is
    assert (await read(http, "crew/a"))["expiresAt"] == beat["expiresAt"]
    await publish(http, "crew/a", ttl=0, x=2)  # removed
    assert set(await read(http, "crew/a")) == PLAIN


async def test_rest_read_loses_the_deadline_with_the_entity(
    hub: Hub, http: httpx.AsyncClient
) -> None:
    await publish(http, "crew/b", ttl=0.3, x=1)
    assert "expiresAt" in await read(http, "crew/b")
    await gone(http, "crew/b")  # expired: 404
    await publish(http, "crew/b", x=2)  # re-created: no lease until an event gives one
    assert set(await read(http, "crew/b")) == PLAIN
    await publish(http, "crew/b", ttl=30)  # empty properties refresh a live entity
    assert (await read(http, "crew/b"))["expiresAt"] == await deadline_text(hub, "crew/b")
    assert (await http.delete("/api/state/entities/crew%2Fb")).status_code == 200
    await publish(http, "crew/b", x=3)
    assert set(await read(http, "crew/b")) == PLAIN


async def test_listings_show_each_deadline_streamed_paged_and_filtered(
    redis_url: str, key_prefix: str
) -> None:
    # Four partitions: a page reads every partition's leases with its entities.
    settings = make_settings(key_prefix, redis={"partitions": 4})
    keys = Keys(key_prefix, 4)
    async with (
        await Store.connect(redis_url, keys, settings.log) as store,
        running_hub(settings, store) as hub,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}", timeout=timeout(10)) as http,
    ):
        ids = [f"crew/l{n:02}" for n in range(12)]
        assert len({keys.partition_of(i) for i in ids}) == 4
        batch = [event(i, 30 + n if n % 2 else None, n=n) for n, i in enumerate(ids)]
        assert (await http.post("/api/events/batch", json={"events": batch})).json()["failed"] == 0
        expected = {i: await deadline_text(hub, i) for i in ids}
        assert sum(1 for d in expected.values() if d is not None) == 6

        def check(listed: list[dict[str, Any]]) -> None:
            for entity in listed:
                assert entity.get("expiresAt") == expected[entity["id"]], entity
                assert set(entity) == PLAIN | ({"expiresAt"} if expected[entity["id"]] else set())

        streamed = (await http.get("/api/state/entities", params={"prefix": "crew/"})).json()
        assert [e["id"] for e in streamed] == ids
        check(streamed)
        paged: list[dict[str, Any]] = []
        params: dict[str, Any] = {"prefix": "crew/", "limit": 5}
        while True:
            reply = await http.get("/api/state/entities", params=params)
            paged += reply.json()
            check(reply.json())
            if "x-next-cursor" not in reply.headers:
                break
            params["cursor"] = reply.headers["x-next-cursor"]
        assert [e["id"] for e in paged] == ids
        where = json.dumps({"n": {"gte": 6}})
        filtered = await http.get("/api/state/entities", params={"prefix": "crew/", "where": where})
        assert [e["id"] for e in filtered.json()] == ids[6:]
        check(filtered.json())


async def test_a_reader_never_sees_the_deadline_of_another_state(
    hub: Hub, http: httpx.AsyncClient, ws_url: str
) -> None:
    """A writer takes and drops a lease as fast as it can, saying so in the state;
    readers (REST, listing, native get) read all along: each state comes with its own
    lease or none, never the other's (state and deadline are read in one atomic
    step)."""
    writer = await Native.connect(ws_url)
    reader = await Native.connect(ws_url)
    stop = asyncio.Event()

    async def write() -> None:
        try:
            for n in range(300):
                leased = n % 2 == 0
                ttl = 60 if leased else 0
                (result,) = await writer.publish(event("crew/flip", ttl, leased=leased, n=n))
                assert result["status"] == "ok", result
        finally:
            stop.set()

    def agree(entity: dict[str, Any]) -> None:
        assert ("expiresAt" in entity) == entity["properties"]["leased"], entity

    reads = 0
    task = asyncio.create_task(write())
    try:
        await publish(http, "crew/flip", leased=False, n=-1)
        while not stop.is_set():
            agree(await read(http, "crew/flip"))
            listed = await http.get("/api/state/entities", params={"prefix": "crew/flip"})
            for entity in listed.json():
                agree(entity)
            got = await reader.request({"type": "get", "ids": ["crew/flip"]}, "entities")
            for entity in got["entities"]:
                agree(entity)
            reads += 3
        await task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await writer.close()
        await reader.close()
    assert reads >= 30


# ---------------------------------------------------------------------- native


@pytest.mark.parametrize("protocol", ["flux.v1", MSGPACK_PROTOCOL])
async def test_native_reads_and_snapshots_carry_the_deadline(
    hub: Hub, http: httpx.AsyncClient, ws_url: str, protocol: str
) -> None:
    await publish(http, "crew/n1", ttl=30, x=1)
    await publish(http, "crew/n2", x=2)
    deadline = await deadline_text(hub, "crew/n1")
    native = await Native.connect(ws_url, protocol)
    try:
        got = await native.request({"type": "get", "ids": ["crew/n1", "crew/n2"]}, "entities")
        listed = await native.request({"type": "list", "prefix": "crew/"}, "entities")
        for entities in (got["entities"], listed["entities"]):
            by_id = {e["id"]: e for e in entities}
            assert by_id["crew/n1"]["expiresAt"] == deadline
            assert set(by_id["crew/n2"]) == PLAIN
        frame = {"type": "subscribe", "sub": "s", "filter": {"prefixes": ["crew/"]}}
        await native.request({**frame, "snapshot": True, "properties": ["zz"]}, "subscribed")
        by_id = {}
        while not (snapshot := await native.recv_type("snapshot"))["done"]:  # (per partition)
            by_id.update({e["id"]: e for e in snapshot["entities"]})
        assert by_id["crew/n1"] == {
            "id": "crew/n1",
            "properties": {},  # (the projection)
            "version": 1,
            "lastUpdated": by_id["crew/n1"]["lastUpdated"],
            "expiresAt": deadline,
        }
        assert "expiresAt" not in by_id["crew/n2"]
    finally:
        await native.close()


@pytest.mark.parametrize("protocol", ["flux.v1", MSGPACK_PROTOCOL])
async def test_native_subscriber_hears_every_move_of_the_deadline_live_and_on_resume(
    hub: Hub, http: httpx.AsyncClient, ws_url: str, protocol: str
) -> None:
    native = await Native.connect(ws_url, protocol)
    frame = {"type": "subscribe", "sub": "s", "filter": {"prefixes": ["crew/"]}}
    await native.request({**frame, "snapshot": True}, "subscribed")
    cursor = (await native.recv_type("synced"))["cursor"]
    # A subscription that projects a property the events never carry hears the
    # deadline anyway: it predicts a deletion.
    await native.request({**frame, "sub": "p", "properties": ["zz"]}, "subscribed")

    async def next_deltas(subs: int = 2) -> dict[str, dict[str, Any]]:
        """The next delta of each subscription (of "s" alone: ``subs=1``)."""
        out: dict[str, dict[str, Any]] = {}
        while len(out) < subs:
            delta = await native.recv_type("delta")
            out[delta["sub"]] = delta
        assert len({d["position"] for d in out.values()}) == 1
        return out

    frames: list[dict[str, Any]] = []
    try:
        await publish(http, "crew/d", ttl=30, x=1)
        created = await next_deltas()
        assert created["s"]["created"] and created["s"]["set"] == {"x": 1}
        assert created["s"]["expiresAt"] == await deadline_text(hub, "crew/d")
        frames.append(created["s"])
        await publish(http, "crew/d", ttl=60, x=1)  # a beat: only the deadline moves
        beat = (await next_deltas())["s"]
        assert (beat["base"], beat["version"], beat["set"]) == (1, 1, {})
        assert beat["expiresAt"] == await deadline_text(hub, "crew/d")
        assert beat["expiresAt"] > created["s"]["expiresAt"]
        frames.append(beat)
        await publish(http, "crew/d", ttl=60)  # empty properties: the news alone
        empty = (await next_deltas())["s"]
        assert (empty["set"], empty["lastUpdated"]) == ({}, beat["lastUpdated"])
        frames.append(empty)
        await publish(http, "crew/d", x=2)  # no ttl: nothing said of the lease
        plain = (await next_deltas(subs=1))["s"]  # (nothing "p" shows changed)
        assert plain["set"] == {"x": 2} and "expiresAt" not in plain
        frames.append(plain)
        await publish(http, "crew/d", ttl=0, x=2)  # removed
        removed = (await next_deltas())["s"]
        assert "expiresAt" in removed and removed["expiresAt"] is None
        frames.append(removed)
        assert await deadline_text(hub, "crew/d") is None
    finally:
        await native.close()
    # A resume delivers the same records: the deadline's moves are in the delta log.
    native = await Native.connect(ws_url, protocol)
    try:
        await native.request({**frame, "from": cursor}, "subscribed")
        resumed = [await native.recv_type("delta") for _ in frames]
        assert resumed == frames
    finally:
        await native.close()


async def test_an_expiry_reaches_a_subscriber_holding_the_deadline(
    hub: Hub, http: httpx.AsyncClient, ws_url: str
) -> None:
    native = await Native.connect(ws_url)
    frame = {"type": "subscribe", "sub": "s", "filter": {"prefixes": ["crew/"]}}
    try:
        await native.request(frame, "subscribed")
        started = time.time() * 1000
        await publish(http, "crew/e", ttl=0.3, x=1)
        created = await native.recv_type("delta")
        deleted = await native.recv_type("deleted")
        assert deleted["reason"] == "expired" and "expiresAt" not in deleted
        # Deleted at or after the deadline it was told, within a few sweeps.
        expires = parse_rfc3339_ms(created["expiresAt"])
        assert started + 300 <= expires <= parse_rfc3339_ms(deleted["lastUpdated"])
    finally:
        await native.close()


# ---------------------------------------------------------------------- compat, SSE


async def test_flux_compatible_frames_do_not_change_with_a_lease(
    hub: Hub, http: httpx.AsyncClient, ws_url: str
) -> None:
    compat = await websockets.connect(ws_url)
    try:
        await compat.send(json.dumps({"type": "subscribe", "entity_id": "crew/c"}))
        await asyncio.sleep(0.05)
        await publish(http, "crew/c", ttl=30, x=1)
        await publish(http, "crew/c", ttl=30)  # a beat of empty properties: nothing
        await publish(http, "crew/c", ttl=0, x=1)
        await publish(http, "crew/c", last=True)
        updates: list[dict[str, Any]] = []
        while not updates or updates[-1].get("property") != "last":
            message = json.loads(await asyncio.wait_for(compat.recv(), timeout(5)))
            if message["type"] == "state_update":
                updates.append(message)
        assert [(u["property"], u["value"]) for u in updates] == [
            ("x", 1),
            ("x", 1),
            ("last", True),
        ]
        for message in updates:
            assert set(message) == {"type", "entity_id", "property", "value", "timestamp"}
    finally:
        await compat.close()


async def test_an_event_stream_shows_the_deadline_in_its_snapshot_and_deltas(
    hub: Hub, http: httpx.AsyncClient
) -> None:
    await publish(http, "crew/s", ttl=30, x=1)
    frames: list[dict[str, Any]] = []
    params = {"prefixes": "crew/", "snapshot": "true"}
    async with http.stream("GET", "/api/stream", params=params) as stream:
        lines = stream.aiter_lines()
        async with asyncio.timeout(timeout(5)):
            async for line in lines:
                if line.startswith("data:"):
                    frames.append(json.loads(line.removeprefix("data:")))
                if line.startswith("event: synced"):
                    break
            await publish(http, "crew/s", ttl=60, x=1)
            async for line in lines:
                if line.startswith("data:") and '"type":"delta"' in line:
                    frames.append(json.loads(line.removeprefix("data:")))
                    break
    (snapshot,) = [f for f in frames if f["type"] == "snapshot" and f["entities"]]
    delta = frames[-1]
    assert snapshot["entities"][0]["expiresAt"] < delta["expiresAt"]
    assert delta["expiresAt"] == await deadline_text(hub, "crew/s")


# ---------------------------------------------------------------------- the Python SDK


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_sdk_reads_and_replica_keep_the_deadline(
    hub: Hub, base_url: str, encoding: Literal["json", "msgpack"]
) -> None:
    async with FluxClient(base_url, encoding=encoding, request_timeout=timeout(10)) as flux:
        await flux.publish("crew/k", {"x": 1}, ttl=30)
        await flux.publish("crew/plain", {"x": 1})
        deadline = await deadline_text(hub, "crew/k")
        got = await flux.get("crew/k", "crew/plain")
        assert (got["crew/k"].expires_at, got["crew/plain"].expires_at) == (deadline, None)
        listed, _ = await flux.list_entities(prefix="crew/")
        assert [e.expires_at for e in listed] == [deadline, None]
        async with EntityCache(flux, prefixes=["crew/"]) as cache:
            await cache.wait_until(lambda e: e["crew/k"].expires_at == deadline)  # snapshot

            async def held_deadline_is(expected: str | None) -> None:
                await cache.wait_until(lambda e: e["crew/k"].expires_at == expected)

            await flux.publish("crew/k", {"x": 1}, ttl=60)  # a beat
            beat = await deadline_text(hub, "crew/k")
            assert beat is not None and beat > (deadline or "")
            await held_deadline_is(beat)
            await flux.publish("crew/k", {"x": 2})  # no ttl: stays
            await cache.wait_until(lambda e: e["crew/k"].properties["x"] == 2)
            assert cache.entities["crew/k"].expires_at == beat
            await flux.publish("crew/k", {"x": 2}, ttl=0)  # removed
            await held_deadline_is(None)
            await flux.delete("crew/k")
            await flux.publish("crew/k", {"x": 3}, ttl=30)  # re-created with a lease
            await cache.wait_until(lambda e: "crew/k" in e and e["crew/k"].properties["x"] == 3)
            assert cache.entities["crew/k"].expires_at == await deadline_text(hub, "crew/k")
            assert cache.entities["crew/plain"].expires_at is None
            assert cache.gaps == 0
