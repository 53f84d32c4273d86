"""The Flux-compatible WebSocket (no subprotocol), FLUX_COMPAT.md §2, with a real client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from hub.app import Hub
from hub.store import Store

from .conftest import make_settings, running_hub, timeout
from .native_client import rest_publish


async def _publish(http: httpx.AsyncClient, entity: str, props: dict[str, Any]) -> None:
    await rest_publish(http, entity, props, stream="t", source="ws-test")


def _hubs_own(message: dict[str, Any]) -> bool:
    """A message about the hub's own ``flux-core/…`` entities, which any hub on the
    Redis may write at any moment (the directory): a test of users' entities must not
    read one as the answer it waits for."""
    return str(message.get("entity_id", "")).startswith("flux-core/")


async def _next(ws: ClientConnection, kind: str = "state_update") -> dict[str, Any]:
    """The next message of a type, skipping metrics_update ticks and the hub's own."""
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout(5)))
        if _hubs_own(message):
            continue
        if message["type"] == kind or kind == "any" and message["type"] != "metrics_update":
            return message


async def _nothing_for(ws: ClientConnection, seconds: float = 0.3) -> None:
    """Assert that no update (other than metrics and the hub's own) arrives for a while."""
    try:
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), seconds))
            assert message["type"] == "metrics_update" or _hubs_own(message), message
    except TimeoutError:
        return


async def _sync(ws: ClientConnection) -> None:
    """Let the hub process frames sent so far (they are handled in order)."""
    await ws.ping()


@pytest.fixture
async def client(ws_url: str) -> AsyncIterator[ClientConnection]:
    async with websockets.connect(ws_url) as ws:
        yield ws


async def test_client_without_subscription_receives_every_update(
    client: ClientConnection, http: httpx.AsyncClient
) -> None:
    await _publish(http, "a/1", {"x": 1})
    message = await _next(client)
    assert set(message) == {"type", "entity_id", "property", "value", "timestamp"}
    assert (message["entity_id"], message["property"], message["value"]) == ("a/1", "x", 1)
    assert message["timestamp"].endswith("Z")


async def test_client_subscribed_to_an_id_receives_only_that_id(
    client: ClientConnection, http: httpx.AsyncClient
) -> None:
    await client.send(json.dumps({"type": "subscribe", "entity_id": "a/1"}))
    await _sync(client)
    await _publish(http, "a/2", {"x": 1})
    await _publish(http, "a/1", {"x": 2})
    message = await _next(client)
    assert message["entity_id"] == "a/1"
    await _nothing_for(client)


async def test_client_subscribed_to_star_receives_everything(
    client: ClientConnection, http: httpx.AsyncClient
) -> None:
    await client.send(json.dumps({"type": "subscribe", "entity_id": "a/1"}))
    await client.send(json.dumps({"type": "subscribe", "entity_id": "*"}))
    await _sync(client)
    await _publish(http, "zz", {"v": True})
    assert (await _next(client))["entity_id"] == "zz"


async def test_client_unsubscribing_its_last_id_receives_everything_again(
    client: ClientConnection, http: httpx.AsyncClient
) -> None:
    await client.send(json.dumps({"type": "subscribe", "entity_id": "a/1"}))
    await client.send(json.dumps({"type": "unsubscribe", "entity_id": "a/1"}))
    await _sync(client)
    await _publish(http, "other", {"v": 1})
    assert (await _next(client))["entity_id"] == "other"


async def test_prefix_pattern_is_a_literal_id_in_compat_mode(
    client: ClientConnection, http: httpx.AsyncClient
) -> None:
    await client.send(json.dumps({"type": "subscribe", "entity_id": "a/*"}))
    await _sync(client)
    await _publish(http, "a/1", {"x": 1})
    await _nothing_for(client)


async def test_event_gives_one_state_update_per_property_sorted_even_unchanged(
    client: ClientConnection, http: httpx.AsyncClient
) -> None:
    await _publish(http, "e", {"b": 1, "a": {"n": [1, 2]}})
    first = [await _next(client), await _next(client)]
    assert [(m["property"], m["value"]) for m in first] == [("a", {"n": [1, 2]}), ("b", 1)]
    await _publish(http, "e", {"b": 1, "c": None})  # b unchanged, c is null
    again = [await _next(client), await _next(client)]
    assert [(m["property"], m["value"]) for m in again] == [("b", 1), ("c", None)]
    assert again[0]["timestamp"] == again[1]["timestamp"]  # one lastUpdated per event


async def test_deletion_reaches_every_connection_whatever_it_subscribed(
    client: ClientConnection, http: httpx.AsyncClient
) -> None:
    await _publish(http, "doomed", {"x": 1})
    await client.send(json.dumps({"type": "subscribe", "entity_id": "something-else"}))
    await _sync(client)
    reply = await http.delete("/api/state/entities/doomed")
    assert reply.status_code == 200
    message = await _next(client, "entity_deleted")
    assert set(message) == {"type", "entity_id", "timestamp"}
    assert message["entity_id"] == "doomed"


async def test_deleting_a_missing_entity_sends_nothing(
    client: ClientConnection, http: httpx.AsyncClient
) -> None:
    await http.delete("/api/state/entities/never-was")
    await _nothing_for(client)


async def test_invalid_frames_are_ignored_and_the_connection_survives(
    client: ClientConnection, http: httpx.AsyncClient
) -> None:
    for junk in [
        "not json",
        "[1, 2]",
        json.dumps({"type": "dance", "entity_id": "a"}),
        json.dumps({"type": "subscribe"}),
        json.dumps({"type": "subscribe", "entity_id": 5}),
        json.dumps({"type": "subscribe", "entityId": "a/1"}),
    ]:
        await client.send(junk)
    await client.send(b"\x00\x01binary")
    await client.send(json.dumps({"type": "subscribe", "entity_id": "kept", "extra": 1}))
    await _sync(client)
    await _publish(http, "not-kept", {"x": 1})
    await _publish(http, "kept", {"x": 1})
    assert (await _next(client))["entity_id"] == "kept"


async def test_metrics_update_arrives_within_two_seconds_with_real_figures(
    client: ClientConnection, http: httpx.AsyncClient
) -> None:
    await _publish(http, "m/1", {"x": 1})
    await _publish(http, "m/2", {"x": 1})
    # What REST shows: our two entities and the hub's own flux-core/directory.
    listed = len((await http.get("/api/state/entities")).json())
    deadline = asyncio.get_running_loop().time() + timeout(3)
    while True:
        message = json.loads(await asyncio.wait_for(client.recv(), timeout(3)))
        if message["type"] == "metrics_update" and message["entities"]["total"] == listed:
            break
        assert asyncio.get_running_loop().time() < deadline, "no metrics_update in time"
    assert set(message) == {"type", "timestamp", "entities", "events", "websocket", "publishers"}
    assert message["events"]["total"] >= 2  # ours, and the directory's writes
    assert isinstance(message["events"]["rate_per_second"], float)
    assert message["websocket"]["connections"] == 1
    assert message["publishers"]["active"] >= 1


async def test_ping_is_answered(client: ClientConnection) -> None:
    latency = await asyncio.wait_for(await client.ping(), timeout(5))
    assert 0 <= latency < timeout(5)


async def test_message_over_the_frame_limit_closes_with_1009(ws_url: str) -> None:
    async with websockets.connect(ws_url, max_size=None) as ws:
        await ws.send("x" * (1024 * 1024 + 1))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), timeout(5))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_ws_on_another_path_is_refused_with_404(base_url: str) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(base_url.replace("http", "ws") + "/ws"):
            pass
    assert refused.value.response.status_code == 404


async def test_subscriber_on_one_hub_receives_a_publish_made_on_another(
    store: Store, key_prefix: str, client: ClientConnection
) -> None:
    # Two hub processes on one Redis: nothing is pushed that is not in the delta log.
    async with running_hub(make_settings(key_prefix), store) as other:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{other.port}") as http2:
            await _publish(http2, "shared", {"from": "other hub"})
    message = await _next(client)
    assert (message["entity_id"], message["value"]) == ("shared", "other hub")


async def test_slow_consumer_is_closed_with_1013_and_others_keep_receiving(
    store: Store, key_prefix: str
) -> None:
    settings = make_settings(key_prefix, fanout={"max_send_buffer_bytes": 64 * 1024})
    async with running_hub(settings, store) as hub:
        url = f"ws://127.0.0.1:{hub.port}/api/ws"
        base = f"http://127.0.0.1:{hub.port}"
        # max_queue=1: once one message waits, the client stops reading its socket.
        async with (
            websockets.connect(url, max_queue=1) as slow,
            websockets.connect(url) as fast,
            httpx.AsyncClient(base_url=base, timeout=timeout(30)) as http,
        ):
            received = asyncio.create_task(_count_until(fast, "bulk/99"))
            big = "v" * 10_000
            for n in range(100):
                events = [
                    {
                        "stream": "t",
                        "source": "s",
                        "payload": {"entity_id": f"bulk/{n}", "properties": {f"p{i}": big}},
                    }
                    for i in range(100)
                ]
                reply = await http.post("/api/events/batch", json={"events": events})
                assert reply.json()["failed"] == 0
            assert await asyncio.wait_for(received, timeout(30)) >= 10_000
            code, reason = await _drain_until_closed(slow, hub)
    assert code == 1013
    assert "slow consumer" in reason


async def _count_until(ws: ClientConnection, last_entity: str) -> int:
    count = 0
    while True:
        message = json.loads(await ws.recv())
        if message["type"] == "state_update":
            count += 1
            if message["entity_id"] == last_entity and message["property"] == "p99":
                return count


async def _drain_until_closed(ws: ClientConnection, hub: Hub) -> tuple[int, str]:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout(10))
    except websockets.ConnectionClosed as closed:
        assert closed.rcvd is not None
        return closed.rcvd.code, closed.rcvd.reason
