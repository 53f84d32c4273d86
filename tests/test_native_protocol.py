"""The native protocol's frames, in both encodings, against a real hub."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest

from hub.app import Hub

from .conftest import timeout
from .native_client import JSON_PROTOCOL, MSGPACK_PROTOCOL, Native, event

ENCODINGS = [pytest.param(JSON_PROTOCOL, id="json"), pytest.param(MSGPACK_PROTOCOL, id="msgpack")]


@pytest.fixture(params=ENCODINGS)
async def client(request: pytest.FixtureRequest, ws_url: str) -> AsyncIterator[Native]:
    native = await Native.connect(ws_url, request.param)
    yield native
    await native.close()


async def _subscribe(client: Native, sub: str, **spec: object) -> dict[str, object]:
    frame = {"type": "subscribe", "sub": sub, **spec}
    reply = await client.request(frame, "subscribed")
    assert reply["type"] == "subscribed", reply
    return reply


async def test_client_gets_frames_in_the_encoding_it_negotiated(client: Native) -> None:
    await client.send({"type": "get", "ref": 1, "ids": ["x"]})
    data = await asyncio.wait_for(client.ws.recv(), timeout(5))
    assert isinstance(data, bytes) == client.binary


async def test_publisher_gets_one_result_per_event(client: Native) -> None:
    results = await client.publish(
        event("a/1", t=1),
        {**event("a/2", t=2), "eventId": "client-id-1"},
        {"stream": "BAD", "source": "s", "payload": {}},
        {"stream": "s", "source": "s", "payload": 5},
    )
    assert results[0]["status"] == "ok" and results[0]["version"] == 1
    assert len(results[0]["eventId"]) == 36 and results[0]["position"]
    assert results[1]["eventId"] == "client-id-1"
    assert results[2] == {
        "eventId": None,
        "error": {
            "code": "invalid",
            "message": "invalid stream format 'BAD': must be lowercase with optional dots",
        },
    }
    assert results[3]["error"] == {"code": "invalid", "message": "payload must be a JSON object"}


async def test_repeated_event_id_is_acknowledged_as_duplicate_and_applied_once(
    client: Native,
) -> None:
    first = await client.publish({**event("d", n=1), "eventId": "once"})
    again = await client.publish({**event("d", n=2), "eventId": "once"})
    assert first[0]["status"] == "ok"
    assert again[0] == {**first[0], "status": "duplicate"}
    reply = await client.request({"type": "get", "ids": ["d"]}, "entities")
    assert reply["entities"][0]["properties"] == {"n": 1}


async def test_if_version_applies_only_at_that_version(client: Native) -> None:
    created = await client.publish({**event("lock", owner="a"), "if_version": 0})
    assert created[0]["status"] == "ok" and created[0]["version"] == 1
    refused = await client.publish({**event("lock", owner="b"), "if_version": 0})
    assert refused[0]["error"] == {"code": "conflict", "message": "entity is at version 1"}
    assert refused[0]["version"] == 1
    taken = await client.publish({**event("lock", owner="c"), "if_version": 1})
    assert taken[0]["version"] == 2
    bad = await client.publish({**event("lock", owner="d"), "if_version": -1})
    assert bad[0]["error"]["code"] == "invalid"


async def test_publish_frame_over_the_event_limit_gets_an_error(client: Native) -> None:
    reply = await client.request({"type": "publish", "events": [event("x")] * 1001}, "ack")
    assert reply["type"] == "error" and reply["code"] == "too_many_events"


async def test_malformed_frames_get_errors_and_the_connection_survives(client: Native) -> None:
    await client.ws.send("not json")
    assert (await client.recv_type("error"))["code"] == "bad_frame"
    await client.ws.send(b"\xc1")  # never valid MessagePack
    assert (await client.recv_type("error"))["code"] == "bad_frame"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"type": "dance", "ref": 7}, "unknown frame type 'dance'"),
        ({"ref": 8}, "frame has no 'type'"),
        ({"type": "get", "ref": 9}, "ids: Field required"),
        (
            {"type": "subscribe", "ref": 10, "sub": "s", "filter": {}},
            "filter: filter matches nothing",
        ),
        (
            {
                "type": "subscribe",
                "ref": 11,
                "sub": "s",
                "filter": {"all": True},
                "snapshot": True,
                "from": "1-0",
            },
            "give either snapshot or from",
        ),
    ]
    for frame, message in cases:
        await client.send(frame)
        error = await client.recv_type("error")
        assert error["ref"] == frame["ref"]
        assert message in error["message"], error
    results = await client.publish(event("still", ok=True))
    assert results[0]["status"] == "ok"


async def test_frame_over_the_size_limit_gets_an_error_not_a_close(
    client: Native, hub: Hub
) -> None:
    limit = hub.settings.gateway.max_frame_bytes
    await client.send({"type": "publish", "ref": 1, "events": [event("big", v="x" * limit)]})
    error = await client.recv_type("error")
    assert error["code"] == "too_large"
    assert (await client.publish(event("small", v=1)))[0]["status"] == "ok"


async def test_msgpack_values_json_cannot_hold_are_refused_naming_the_field_and_ref(
    ws_url: str,
) -> None:
    client = await Native.connect(ws_url, MSGPACK_PROTOCOL)
    where = "events[0].payload.properties"
    try:
        for ref, properties, message in [
            (1, {"v": float("nan")}, f"{where}.v: NaN and infinity cannot be stored"),
            ("two", {"v": float("inf")}, f"{where}.v: NaN and infinity cannot be stored"),
            (3, {"v": [1, b"\x00"]}, f"{where}.v[1]: binary values cannot be stored"),
            (4, {1: "integer key"}, f"{where}: map keys must be strings, not int"),
        ]:
            bad = event("keeper")
            bad["payload"]["properties"] = properties
            frame = {"type": "publish", "ref": ref, "events": [bad]}
            await client.ws.send(msgpack.packb(frame, use_bin_type=True))
            error = await client.recv_type("error")
            assert error["ref"] == ref, error
            assert error["code"] == "bad_frame"
            assert error["message"].startswith(message), error
        assert (await client.publish(event("keeper", v=1)))[0]["status"] == "ok"
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"snapshot": "yes"}, "snapshot: Input should be a valid boolean"),
        ({"touches": 1}, "touches: Input should be a valid boolean"),
        ({"filter": {"all": "true"}}, "filter.all: Input should be a valid boolean"),
    ],
)
async def test_subscribe_fields_are_strictly_typed(
    client: Native, fields: dict[str, Any], message: str
) -> None:
    frame = {"type": "subscribe", "ref": 12, "sub": "s", "filter": {"all": True}, **fields}
    await client.send(frame)
    error = await client.recv_type("error")
    assert (error["ref"], error["code"], error["message"]) == (12, "bad_frame", message)


async def test_list_limit_given_as_text_is_refused(client: Native) -> None:
    await client.send({"type": "list", "ref": 13, "limit": "5"})
    error = await client.recv_type("error")
    assert (error["ref"], error["message"]) == (13, "limit: Input should be a valid integer")


async def test_text_frame_on_a_msgpack_connection_is_understood(ws_url: str) -> None:
    client = await Native.connect(ws_url, MSGPACK_PROTOCOL)
    try:
        await client.ws.send(json.dumps({"type": "get", "ref": 5, "ids": ["none"]}))
        reply = await client.recv_type("entities")
        assert reply["ref"] == 5 and reply["missing"] == ["none"]
    finally:
        await client.close()


async def test_live_subscription_gets_deltas_of_matching_entities_only(client: Native) -> None:
    reply = await _subscribe(
        client,
        "s",
        filter={"ids": ["x/1"], "prefixes": ["p/"], "namespaces": ["ns"], "globs": ["g/*/t"]},
    )
    assert reply["cursor"]
    for entity in ["x/1", "x/2", "p/a", "ns/b", "nsx/c", "g/1/t", "g/1/u"]:
        await client.publish(event(entity, v=1))
    got = []
    for _ in range(4):
        frame = await client.recv_type("delta")
        assert frame["sub"] == "s"
        got.append(frame["id"])
    assert sorted(got) == ["g/1/t", "ns/b", "p/a", "x/1"]


async def test_delta_frame_carries_versions_changes_and_position(client: Native) -> None:
    await _subscribe(client, "s", filter={"all": True})
    await client.publish(event("e", a=1, b=[1, {"c": None}]))
    created = await client.recv_type("delta")
    assert created["base"] == 0 and created["version"] == 1 and created["created"] is True
    assert created["set"] == {"a": 1, "b": [1, {"c": None}]}
    assert created["lastUpdated"].endswith("Z") and created["position"]
    await client.publish(event("e", a=1, b=2))
    update = await client.recv_type("delta")
    assert (update["base"], update["version"], update["set"]) == (1, 2, {"b": 2})
    assert "created" not in update
    await client.publish(event("e", a=1))  # changes nothing: no delta
    await client.publish(event("e", __deleted__=True))
    deleted = await client.recv_type("deleted")
    assert (deleted["id"], deleted["base"], deleted["version"]) == ("e", 2, 3)
    assert deleted["position"] > update["position"]


async def test_property_list_sends_only_deltas_touching_those_properties(client: Native) -> None:
    await _subscribe(client, "s", filter={"all": True}, properties=["temp"])
    await client.publish(event("r", temp=20, noise=1))
    first = await client.recv_type("delta")
    assert first["set"] == {"temp": 20}
    await client.publish(event("r", noise=2))
    await client.publish(event("r", temp=21, noise=3))
    second = await client.recv_type("delta")
    assert second["set"] == {"temp": 21} and second["version"] == 3


async def test_touches_subscription_hears_of_events_that_changed_nothing(client: Native) -> None:
    await client.publish(event("t", v=1))
    await _subscribe(client, "s", filter={"ids": ["t"]}, touches=True)
    await client.publish(event("t", v=1))
    frame = await client.recv_type("delta")
    assert frame["base"] == frame["version"] == 1
    assert frame["set"] == {} and frame["touched"] == ["v"]


async def test_a_live_subscription_starts_after_the_connections_own_acked_writes(
    client: Native,
) -> None:
    # The acks come as Redis applies the events; the fan-out reads them from the log
    # a moment later. A subscribe sent after the acks must not hear of them.
    for round_no in range(10):
        await client.publish(*[event(f"own{round_no}/{i}", v=1) for i in range(500)])
        await _subscribe(client, f"s{round_no}", filter={"prefixes": [f"own{round_no}/"]})
        await client.publish(event(f"own{round_no}/last", v=1))
        frame = await client.recv_type("delta")
        assert frame["id"] == f"own{round_no}/last"


async def test_each_matching_subscription_gets_its_own_frame(client: Native) -> None:
    await _subscribe(client, "one", filter={"prefixes": ["a/"]})
    await _subscribe(client, "two", filter={"ids": ["a/1"]})
    await client.publish(event("a/1", v=1))
    subs = {(await client.recv_type("delta"))["sub"], (await client.recv_type("delta"))["sub"]}
    assert subs == {"one", "two"}


async def test_unsubscribe_stops_deltas_and_unknown_ids_are_errors(client: Native) -> None:
    await _subscribe(client, "s", filter={"all": True})
    reply = await client.request({"type": "unsubscribe", "sub": "s"}, "unsubscribed")
    assert reply["type"] == "unsubscribed"
    again = await client.request({"type": "unsubscribe", "sub": "s"}, "unsubscribed")
    assert again["code"] == "unknown_subscription"
    await client.publish(event("quiet", v=1))
    with pytest.raises(TimeoutError):
        await client.recv_type("delta", wait=0.3)


async def test_subscription_ids_are_unique_and_bounded(client: Native, hub: Hub) -> None:
    await _subscribe(client, "s", filter={"all": True})
    duplicate = await client.request(
        {"type": "subscribe", "sub": "s", "filter": {"all": True}}, "subscribed"
    )
    assert duplicate["code"] == "duplicate_subscription"
    for n in range(hub.settings.gateway.max_subscriptions - 1):
        await _subscribe(client, f"s{n}", filter={"ids": [str(n)]})
    over = await client.request(
        {"type": "subscribe", "sub": "last", "filter": {"all": True}}, "subscribed"
    )
    assert over["code"] == "too_many_subscriptions"


async def test_get_and_list_read_entities(client: Native) -> None:
    await client.publish(event("l/1", v=1), event("l/2", v=2), event("l/3", v=3), event("m/1", v=4))
    got = await client.request({"type": "get", "ids": ["l/2", "nope"]}, "entities")
    assert [e["id"] for e in got["entities"]] == ["l/2"] and got["missing"] == ["nope"]
    assert got["entities"][0]["properties"] == {"v": 2} and got["entities"][0]["version"] == 1
    page = await client.request({"type": "list", "prefix": "l/", "limit": 2}, "entities")
    assert [e["id"] for e in page["entities"]] == ["l/1", "l/2"] and page["next"] == "l/2"
    rest = await client.request(
        {"type": "list", "prefix": "l/", "limit": 2, "cursor": page["next"]}, "entities"
    )
    assert [e["id"] for e in rest["entities"]] == ["l/3"] and rest["next"] is None
    ns = await client.request({"type": "list", "namespace": "m"}, "entities")
    assert [e["id"] for e in ns["entities"]] == ["m/1"]


async def test_snapshot_sends_current_state_then_live_deltas(client: Native) -> None:
    await client.publish(event("s/1", v=1), event("s/2", v=2), event("other", v=3))
    await client.send(
        {"type": "subscribe", "sub": "s", "filter": {"prefixes": ["s/"]}, "snapshot": True}
    )
    assert (await client.recv_type("subscribed"))["sub"] == "s"
    chunk = await client.recv_type("snapshot")
    assert sorted(e["id"] for e in chunk["entities"]) == ["s/1", "s/2"]
    done = await client.recv_type("snapshot")
    assert done["done"] is True
    synced = await client.recv_type("synced")
    assert synced["cursor"]  # the first exact resume point
    await client.publish(event("s/1", v=10))
    delta = await client.recv_type("delta")
    assert (delta["id"], delta["base"], delta["set"]) == ("s/1", 1, {"v": 10})


async def test_snapshot_in_many_chunks_covers_every_entity(client: Native, hub: Hub) -> None:
    page = hub.settings.fanout.snapshot_page
    count = page * 2 + 7
    for start in range(0, count, 500):
        await client.publish(
            *[event(f"c/{n:05d}", n=n) for n in range(start, min(start + 500, count))]
        )
    await client.send(
        {
            "type": "subscribe",
            "sub": "s",
            "filter": {"namespaces": ["c"]},
            "snapshot": True,
            "properties": ["n"],
        }
    )
    seen: list[str] = []
    while True:
        frame = await client.recv_type("snapshot")
        seen += [e["id"] for e in frame["entities"]]
        if frame["done"]:
            break
    assert seen == [f"c/{n:05d}" for n in range(count)]


async def test_pipelined_publish_frames_are_acked_in_order_and_applied_in_order(
    client: Native,
) -> None:
    # Sent without waiting: the hub folds queued frames into one Redis call, but each
    # frame still gets its own ack, in order, and the events apply in order.
    for n in range(50):
        events = [event("pipe/e", n=n)] if n != 25 else [event("pipe/e", n=n)] * 1001
        await client.send({"type": "publish", "ref": n, "events": events})
    replies: list[dict[str, Any]] = []
    while len(replies) < 50:
        frame = await client.recv()
        if frame["type"] in ("ack", "error"):
            replies.append(frame)
    assert [r["ref"] for r in replies] == list(range(50))
    assert replies[25]["code"] == "too_many_events"
    versions = [r["results"][0]["version"] for n, r in enumerate(replies) if n != 25]
    assert versions == list(range(1, 50))
    got = await client.request({"type": "get", "ids": ["pipe/e"]}, "entities")
    assert got["entities"][0]["properties"] == {"n": 49}


async def test_a_get_behind_pipelined_publishes_sees_them_all(client: Native) -> None:
    # Publishes are applied while the next frames are parsed; a get sent right
    # behind them, without waiting for acks, still answers after all of them.
    for n in range(30):
        batch = [event(f"rw/{i}", n=n) for i in range(100)]
        await client.send({"type": "publish", "ref": n, "events": batch})
    await client.send({"type": "get", "ref": "get", "ids": ["rw/0", "rw/99"]})
    order: list[Any] = []
    while True:
        frame = await client.recv()
        order.append(frame["ref"])
        if frame["type"] == "entities":
            break
    assert order == [*range(30), "get"]
    assert [e["properties"] for e in frame["entities"]] == [{"n": 29}, {"n": 29}]


async def test_a_flood_past_the_read_ahead_bound_is_read_to_the_end(client: Native) -> None:
    # More frames than max_pending_requests (64) arrive before the hub answers any:
    # it stops reading the socket for a while (backpressure), and must start again
    # once it has worked through them, however it took them off its queue.
    count = 3000
    frames = [
        {"type": "publish", "ref": n, "events": [event(f"flood/{n % 7}", n=n)]}
        for n in range(count)
    ]
    await asyncio.gather(*(client.send(f) for f in frames))
    acked = 0
    while acked < count:
        frame = await client.recv(wait=20)
        if frame["type"] == "ack":
            assert frame["ref"] == acked
            acked += 1
