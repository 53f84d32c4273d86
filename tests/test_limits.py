"""Every configurable bound, at the bound (accepted) and just past it (refused clearly).

Bounds tested elsewhere: body sizes (test_rest_publish, test_rest_batch, test_http_edges),
total connections (test_http_edges), native subscriptions (test_native_protocol), batch
delete (test_rest_delete_history).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from hub.app import Hub
from hub.store import Store
from hub.transport.compat_ws import DEFAULT_MAX_IDS

from .conftest import make_settings, running_hub, timeout
from .native_client import Native, event

LIMITS = {
    "max_properties": 5,
    "max_value_bytes": 100,
    "max_nesting_depth": 3,
    "max_events_per_batch": 5,
    "max_connections_per_client": 6,
    "max_events_per_frame": 5,
    "max_frame_bytes": 2048,
}


@pytest.fixture
async def limited(store: Store, key_prefix: str) -> AsyncIterator[Hub]:
    async with running_hub(make_settings(key_prefix, gateway=LIMITS), store) as hub:
        yield hub


@pytest.fixture
async def client(limited: Hub) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{limited.port}", timeout=timeout(10)
    ) as http:
        yield http


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("props", "error"),
    [
        ({f"p{n}": n for n in range(5)}, None),
        ({f"p{n}": n for n in range(6)}, "too many properties: 6 (limit 5)"),
        ({"v": "x" * 98}, None),  # "xx…" is 100 bytes of JSON
        ({"v": "x" * 99}, "property 'v' is 101 bytes (limit 100)"),
        ({"v": _nested(3)}, None),
        ({"v": _nested(4)}, "property 'v' nests deeper than 3 levels"),
    ],
    ids=["properties-at", "properties-past", "value-at", "value-past", "depth-at", "depth-past"],
)
async def test_event_bounds_hold_on_every_write_path(
    limited: Hub, client: httpx.AsyncClient, props: dict[str, Any], error: str | None
) -> None:
    single = await client.post("/api/events", json=event("b/1", **props))
    batch = await client.post("/api/events/batch", json={"events": [event("b/2", **props)]})
    native = await Native.connect(f"ws://127.0.0.1:{limited.port}/api/ws")
    try:
        result = (await native.publish(event("b/3", **props)))[0]
    finally:
        await native.close()
    if error is None:
        assert single.status_code == 200
        assert batch.json()["results"][0]["error"] is None
        assert result["status"] == "ok"
    else:
        assert (single.status_code, single.json()) == (
            413,
            {"error": error, "code": "payload_too_large"},
        )
        assert batch.json()["results"][0]["error"] == f"validation failed: {error}"
        assert result["error"] == {"code": "too_large", "message": error}


async def test_batch_event_count_bound(client: httpx.AsyncClient) -> None:
    at = await client.post(
        "/api/events/batch", json={"events": [event(f"c/{n}", v=n) for n in range(5)]}
    )
    assert at.json()["successful"] == 5
    past = await client.post(
        "/api/events/batch", json={"events": [event(f"c/{n}", v=n) for n in range(6)]}
    )
    assert (past.status_code, past.json()) == (
        400,
        {"error": "Batch too large: 6 events, max is 5", "code": "bad_request"},
    )


async def test_native_frame_event_count_bound(limited: Hub) -> None:
    native = await Native.connect(f"ws://127.0.0.1:{limited.port}/api/ws")
    try:
        results = await native.publish(*[event(f"f/{n}", v=n) for n in range(5)])
        assert all(r["status"] == "ok" for r in results)
        past = await native.request({"type": "publish", "events": [event("f/x", v=1)] * 6}, "ack")
        assert past["code"] == "too_many_events"
    finally:
        await native.close()


async def test_native_frame_size_bound(limited: Hub) -> None:
    native = await Native.connect(f"ws://127.0.0.1:{limited.port}/api/ws")
    try:
        base = json.dumps({"type": "get", "ref": 1, "ids": ["x"], "pad": ""})
        at = base.replace('"pad": ""', '"pad": "' + "p" * (2048 - len(base)) + '"')
        assert len(at) == 2048
        await native.ws.send(at)
        assert (await native.recv_type("entities"))["ref"] == 1
        await native.ws.send(at.replace('"pad": "', '"pad": "p'))
        error = await native.recv_type("error")
        assert error["code"] == "too_large"
    finally:
        await native.close()


async def test_compat_frame_size_bound(limited: Hub) -> None:
    url = f"ws://127.0.0.1:{limited.port}/api/ws"
    async with websockets.connect(url) as ws:
        await ws.send("x" * 2048)  # ignored, like any invalid compat frame
        await ws.ping()
        await ws.send("x" * 2049)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), timeout(5))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_connections_per_client_bound(limited: Hub) -> None:
    held = [await asyncio.open_connection("127.0.0.1", limited.port) for _ in range(6)]
    try:
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", limited.port)
        reply = await asyncio.wait_for(reader.read(), timeout(5))
        writer.close()
        assert reply.startswith(b"HTTP/1.1 429")
        assert b"too many connections from your address" in reply
    finally:
        for _, w in held:
            w.close()
    await asyncio.sleep(0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nconnection: close\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), timeout(5))).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_compat_subscription_bound(ws_url: str, http: httpx.AsyncClient) -> None:
    async with websockets.connect(ws_url) as ws:
        for n in range(DEFAULT_MAX_IDS):
            await ws.send(json.dumps({"type": "subscribe", "entity_id": f"s/{n}"}))
        await ws.send(json.dumps({"type": "subscribe", "entity_id": "one-too-many"}))
        await ws.ping()
        await http.post("/api/events", json=event("one-too-many", v=1))
        await http.post("/api/events", json=event(f"s/{DEFAULT_MAX_IDS - 1}", v=1))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout(5)))
            if message["type"] == "state_update":
                break
    # The last id within the bound is served; the one past it was ignored.
    assert message["entity_id"] == f"s/{DEFAULT_MAX_IDS - 1}"
