"""Deletion and history over HTTP (FLUX_COMPAT.md §1.5, §1.7), Internal mode."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from hub.app import Hub
from hub.store import Store

from .conftest import make_settings, running_hub, timeout


def _event(entity_id: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "stream": "sensors",
        "source": "agent-01",
        "timestamp": 1_771_000_000_000,
        "payload": {"entity_id": entity_id, "properties": properties},
    }


async def _publish_many(
    http: httpx.AsyncClient, ids: list[str], properties: dict[str, Any] | None = None
) -> None:
    events = [_event(i, properties or {"n": n}) for n, i in enumerate(ids)]
    reply = await http.post("/api/events/batch", json={"events": events})
    assert reply.status_code == 200
    assert reply.json()["failed"] == 0


async def _ids(http: httpx.AsyncClient) -> list[str]:
    reply = await http.get("/api/state/entities")
    assert reply.status_code == 200
    return [e["id"] for e in reply.json() if not e["id"].startswith("flux-core/")]


async def _history(http: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    reply = await http.get("/api/events", params=params)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    events: list[dict[str, Any]] = reply.json()
    return events


def _is_uuid7(text: str) -> bool:
    parsed = uuid.UUID(text)
    return len(text) == 36 and parsed.version == 7


def _rfc3339(seconds: float, tz: timezone = UTC) -> str:
    return datetime.fromtimestamp(seconds, tz).isoformat()


# ---------------------------------------------------------------------- single delete


@pytest.mark.parametrize(
    "path", ["matt%2Fsensor-01", "matt%2fsensor-01", "matt/sensor-01"], ids=str
)
async def test_deleter_removes_entity_and_gets_entity_id_and_event_id(
    http: httpx.AsyncClient, path: str
) -> None:
    await _publish_many(http, ["matt/sensor-01", "matt/sensor-02"])
    reply = await http.delete("/api/state/entities/" + path)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert set(body) == {"entity_id", "eventId"}
    assert body["entity_id"] == "matt/sensor-01"
    assert _is_uuid7(body["eventId"])
    gone = await http.get("/api/state/entities/matt%2Fsensor-01")
    assert gone.status_code == 404
    assert gone.json() == {"error": "Entity not found", "code": "not_found"}
    assert await _ids(http) == ["matt/sensor-02"]


async def test_deleter_of_missing_entity_still_gets_200(http: httpx.AsyncClient) -> None:
    reply = await http.delete("/api/state/entities/never%2Fthere")
    assert reply.status_code == 200
    assert reply.json()["entity_id"] == "never/there"
    assert _is_uuid7(reply.json()["eventId"])
    assert (await http.get("/api/state/entities/never%2Fthere")).status_code == 404
    # The tombstone is published anyway.
    [tombstone] = await _history(http, entity="never/there")
    assert tombstone["eventId"] == reply.json()["eventId"]


async def test_deleter_tombstone_appears_in_history_in_flux_shape(
    http: httpx.AsyncClient,
) -> None:
    await _publish_many(http, ["t/1"])
    before = math.floor(time.time() * 1000)
    reply = await http.delete("/api/state/entities/t%2F1")
    after = math.ceil(time.time() * 1000)
    tombstone, created = await _history(http, entity="t/1")
    assert created["stream"] == "sensors"
    assert set(tombstone) == {"eventId", "stream", "source", "timestamp", "key", "payload"}
    assert tombstone["eventId"] == reply.json()["eventId"]
    assert tombstone["stream"] == "flux.events.deletions"
    assert tombstone["source"] == "api"
    assert tombstone["key"] == "t/1"
    assert before <= tombstone["timestamp"] <= after
    payload = tombstone["payload"]
    assert set(payload) == {"entity_id", "properties"}
    assert payload["entity_id"] == "t/1"
    assert set(payload["properties"]) == {"__deleted__", "__deleted_at__"}
    assert payload["properties"]["__deleted__"] is True
    assert isinstance(payload["properties"]["__deleted_at__"], int)
    assert before <= payload["properties"]["__deleted_at__"] <= after


async def test_deleter_then_publisher_recreates_a_fresh_entity(http: httpx.AsyncClient) -> None:
    await _publish_many(http, ["r/1"], {"old": 1})
    assert (await http.delete("/api/state/entities/r%2F1")).status_code == 200
    await _publish_many(http, ["r/1"], {"new": 2})
    entity = (await http.get("/api/state/entities/r%2F1")).json()
    assert entity["properties"] == {"new": 2}
    assert [e["stream"] for e in await _history(http, entity="r/1")] == [
        "sensors",
        "flux.events.deletions",
        "sensors",
    ]


# ---------------------------------------------------------------------- batch delete

POPULATION = ["ns/1", "ns/2", "ns/sub/3", "nsx/1", "ns", "other/ns/1", "p-1", "p-2"]


async def _batch_delete(http: httpx.AsyncClient, body: Any) -> dict[str, Any]:
    reply = await http.post("/api/state/entities/delete", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    result: dict[str, Any] = reply.json()
    assert set(result) == {"deleted", "failed", "errors"}
    return result


@pytest.mark.parametrize(
    ("body", "gone"),
    [
        pytest.param({"namespace": "ns"}, ["ns/1", "ns/2", "ns/sub/3"], id="namespace"),
        pytest.param({"namespace": "nothing"}, [], id="namespace-empty"),
        pytest.param({"prefix": "p-"}, ["p-1", "p-2"], id="prefix"),
        pytest.param(
            {"prefix": "ns"}, ["ns/1", "ns/2", "ns/sub/3", "nsx/1", "ns"], id="prefix-wide"
        ),
        pytest.param({"entity_ids": ["ns", "other/ns/1"]}, ["ns", "other/ns/1"], id="ids"),
        pytest.param({"entity_ids": []}, [], id="ids-empty"),
        pytest.param(
            {"entity_ids": ["p-9"], "prefix": "nsx", "namespace": "ns"},
            ["ns/1", "ns/2", "ns/sub/3"],
            id="namespace-wins",
        ),
        pytest.param({"entity_ids": ["p-1"], "prefix": "nsx"}, ["nsx/1"], id="prefix-beats-ids"),
        pytest.param(
            {"namespace": "ns", "colour": "red"}, ["ns/1", "ns/2", "ns/sub/3"], id="extra-key"
        ),
        # serde's untagged enum: a key whose value has the wrong type does not match
        # its variant, so the next variant is tried.
        pytest.param({"namespace": None, "prefix": "p-"}, ["p-1", "p-2"], id="null-namespace"),
        pytest.param({"prefix": None, "entity_ids": ["ns"]}, ["ns"], id="null-prefix"),
    ],
)
async def test_deleter_batch_deletes_what_the_filter_selects(
    http: httpx.AsyncClient, body: dict[str, Any], gone: list[str]
) -> None:
    await _publish_many(http, POPULATION)
    result = await _batch_delete(http, body)
    assert result == {"deleted": len(gone), "failed": 0, "errors": []}
    assert await _ids(http) == sorted(set(POPULATION) - set(gone))


async def test_deleter_batch_counts_only_entities_that_existed(
    http: httpx.AsyncClient,
) -> None:
    await _publish_many(http, ["e/1", "e/2"])
    result = await _batch_delete(http, {"entity_ids": ["e/1", "ghost/1", "e/2", "e/1"]})
    assert result == {"deleted": 2, "failed": 0, "errors": []}
    assert await _ids(http) == []
    # Every named id still gets its tombstone.
    [tombstone] = await _history(http, entity="ghost/1")
    assert tombstone["stream"] == "flux.events.deletions"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([], id="array"),
        pytest.param("ns", id="string"),
        pytest.param(5, id="number"),
        pytest.param(None, id="null"),
        pytest.param({}, id="empty-object"),
        pytest.param({"names": ["a"]}, id="unknown-key"),
        pytest.param({"namespace": 5}, id="namespace-int"),
        pytest.param({"prefix": ["a"]}, id="prefix-list"),
        pytest.param({"entity_ids": "a"}, id="ids-string"),
        pytest.param({"entity_ids": [1, 2]}, id="ids-ints"),
    ],
)
async def test_deleter_batch_without_a_usable_filter_gets_422_json(
    http: httpx.AsyncClient, body: Any
) -> None:
    await _publish_many(http, ["keep/1"])
    content = json.dumps(body).encode()  # json=None would send no body at all
    reply = await http.post("/api/state/entities/delete", content=content)
    assert reply.status_code == 422
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()
    assert set(error) == {"error", "code"}
    assert error["error"].startswith("Failed to deserialize the JSON body into the target type")
    assert await _ids(http) == ["keep/1"]


async def test_deleter_batch_with_invalid_json_gets_400_json(http: httpx.AsyncClient) -> None:
    reply = await http.post("/api/state/entities/delete", content=b'{"prefix": ')
    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["error"].startswith("Failed to parse the request body as JSON")


async def test_deleter_batch_over_max_batch_delete_gets_400(store: Store, key_prefix: str) -> None:
    settings = make_settings(key_prefix, gateway={"max_batch_delete": 3})
    async with (
        running_hub(settings, store) as hub,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}", timeout=timeout(10)) as http,
    ):
        await _publish_many(http, ["big/1", "big/2", "big/3", "big/4", "big/5", "small/1"])
        cases: list[tuple[dict[str, Any], int]] = [
            ({"entity_ids": ["a", "b", "c", "d"]}, 4),
            ({"entity_ids": ["small/1"] * 4}, 4),
            ({"prefix": "big/"}, 5),
            ({"namespace": "big"}, 5),
            ({"prefix": ""}, 6),
        ]
        for body, requested in cases:
            reply = await http.post("/api/state/entities/delete", json=body)
            assert reply.status_code == 400, body
            assert reply.json() == {
                "error": f"Batch too large: {requested} entities requested, max is 3",
                "code": "bad_request",
            }
        assert len(await _ids(http)) == 6
        result = await _batch_delete(http, {"entity_ids": ["big/1", "big/2", "big/3"]})
        assert result == {"deleted": 3, "failed": 0, "errors": []}
        result = await _batch_delete(http, {"prefix": "big/"})
        assert result == {"deleted": 2, "failed": 0, "errors": []}
        assert await _ids(http) == ["small/1"]


# ---------------------------------------------------------------------- history


@pytest.mark.parametrize("query", [{}, {"limit": "5"}, {"Entity": "a/1"}])
async def test_historian_without_entity_gets_400(
    http: httpx.AsyncClient, query: dict[str, str]
) -> None:
    reply = await http.get("/api/events", params=query)
    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"error": "entity parameter is required", "code": "bad_request"}


async def test_historian_gets_newest_events_first_up_to_limit(http: httpx.AsyncClient) -> None:
    for n in range(10):
        event = _event("h/1", {"n": n})
        assert (await http.post("/api/events", json=event)).status_code == 200
    newest = await _history(http, entity="h/1", limit="3")
    assert [e["payload"]["properties"]["n"] for e in newest] == [9, 8, 7]
    everything = await _history(http, entity="h/1")
    assert [e["payload"]["properties"]["n"] for e in everything] == list(range(9, -1, -1))


async def test_historian_limit_defaults_to_100_and_is_clamped_to_1_500(
    http: httpx.AsyncClient,
) -> None:
    events = [_event("h/many", {"n": n}) for n in range(600)]
    reply = await http.post("/api/events/batch", json={"events": events})
    assert reply.status_code == 200

    async def ns(**params: str) -> list[int]:
        return [e["payload"]["properties"]["n"] for e in await _history(http, **params)]

    assert await ns(entity="h/many") == list(range(599, 499, -1))
    assert await ns(entity="h/many", limit="0") == [599]
    assert await ns(entity="h/many", limit="1") == [599]
    assert await ns(entity="h/many", limit="500") == list(range(599, 99, -1))
    assert await ns(entity="h/many", limit="1000") == list(range(599, 99, -1))


@pytest.mark.parametrize("limit", ["abc", "-1", "1.5", ""])
async def test_historian_with_non_integer_limit_gets_400_json(
    http: httpx.AsyncClient, limit: str
) -> None:
    reply = await http.get("/api/events", params={"entity": "h/1", "limit": limit})
    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    assert error.startswith("Failed to deserialize query string: limit: ")
    if limit == "abc":
        assert error.endswith("invalid digit found in string")


async def test_historian_matches_the_entity_exactly(http: httpx.AsyncClient) -> None:
    await _publish_many(http, ["x/1", "x/10", "x/1/a", "x", "X/1", "x/1 "])
    [only] = await _history(http, entity="x/1")
    assert only["payload"]["entity_id"] == "x/1"
    assert await _history(http, entity="x/") == []
    assert await _history(http, entity="nobody") == []


async def test_historian_since_keeps_events_stored_from_that_time(
    http: httpx.AsyncClient,
) -> None:
    assert (await http.post("/api/events", json=_event("s/1", {"n": 1}))).status_code == 200
    # A whole-second boundary between the two events: the same answer whether
    # `since` is compared to the millisecond (hub) or truncated to seconds (Flux).
    boundary = math.floor(time.time()) + 1
    await asyncio.sleep(boundary - time.time() + 0.05)
    assert (await http.post("/api/events", json=_event("s/1", {"n": 2}))).status_code == 200
    forms = [
        datetime.fromtimestamp(boundary, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        _rfc3339(boundary),
        datetime.fromtimestamp(boundary, UTC).strftime("%Y-%m-%dT%H:%M:%S.000000000+00:00"),
        _rfc3339(boundary, timezone(timedelta(hours=2))),
        _rfc3339(boundary, timezone(timedelta(hours=-5, minutes=-30))),
    ]
    for since in forms:
        events = await _history(http, entity="s/1", since=since)
        assert [e["payload"]["properties"]["n"] for e in events] == [2], since
    assert len(await _history(http, entity="s/1", since="2000-01-01T00:00:00Z")) == 2
    assert await _history(http, entity="s/1", since="2999-01-01T00:00:00Z") == []


@pytest.mark.parametrize(
    "since", ["yesterday", "", "1771000000000", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z"]
)
async def test_historian_with_invalid_since_gets_400(http: httpx.AsyncClient, since: str) -> None:
    reply = await http.get("/api/events", params={"entity": "s/1", "since": since})
    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {
        "error": "invalid `since` timestamp (expected ISO 8601)",
        "code": "bad_request",
    }


async def test_historian_default_window_is_the_last_24_hours(
    http: httpx.AsyncClient, store: Store, key_prefix: str
) -> None:
    # The event is stored now; hubs whose clocks run 23 h and 25 h ahead see it
    # 23 h and 25 h old.
    assert (await http.post("/api/events", json=_event("w/1", {"n": 1}))).status_code == 200
    expected = {23: 1, 25: 0}
    for hours, count in expected.items():
        ahead = hours * 3600

        def clock(ahead: int = ahead) -> float:
            return time.time() + ahead

        async with (
            Hub(make_settings(key_prefix), store, clock=clock) as skewed,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{skewed.port}") as client,
        ):
            assert len(await _history(client, entity="w/1")) == count, f"{hours} h"
            old = await _history(client, entity="w/1", since="2000-01-01T00:00:00Z")
            assert len(old) == 1


async def test_historian_sees_tombstones_between_updates(http: httpx.AsyncClient) -> None:
    await _publish_many(http, ["d/1"], {"a": 1})
    deleted = await http.delete("/api/state/entities/d%2F1")
    await _publish_many(http, ["d/1"], {"a": 2})
    newest, tombstone, oldest = await _history(http, entity="d/1")
    assert newest["payload"]["properties"] == {"a": 2}
    assert tombstone["eventId"] == deleted.json()["eventId"]
    assert tombstone["payload"]["properties"]["__deleted__"] is True
    assert oldest["payload"]["properties"] == {"a": 1}
