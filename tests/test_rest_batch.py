"""``POST /api/events/batch`` as a Flux client sees it (FLUX_COMPAT.md §1.4)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


def _event(
    entity_id: str = "dev/1", properties: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    """An event as the skill's own batch example writes it: no ``timestamp``."""
    event: dict[str, Any] = {
        "stream": "sensors",
        "source": "agent-01",
        "payload": {
            "entity_id": entity_id,
            "properties": {"on": True} if properties is None else properties,
        },
    }
    event.update(fields)
    return event


def _without(event: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != name}


async def _batch(http: httpx.AsyncClient, events: list[Any]) -> dict[str, Any]:
    reply = await http.post("/api/events/batch", json={"events": events})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    body: dict[str, Any] = reply.json()
    assert set(body) == {"successful", "failed", "results"}
    for result in body["results"]:
        assert set(result) == {"eventId", "stream", "error"}
    return body


async def _exists(http: httpx.AsyncClient, entity_id: str) -> bool:
    reply = await http.get("/api/state/entities/" + entity_id.replace("/", "%2F"))
    assert reply.status_code in (200, 404)
    return reply.status_code == 200


def _batch_body_of_size(size: int) -> bytes:
    """A one-event batch whose JSON body is exactly ``size`` bytes."""
    empty = (
        b'{"events":[{"stream":"s","source":"s","payload":'
        b'{"entity_id":"big/1","properties":{"blob":""}}}]}'
    )
    assert size >= len(empty)
    return empty.replace(b'"blob":""', b'"blob":"' + b"a" * (size - len(empty)) + b'"')


async def test_batcher_gets_one_result_per_event_with_all_three_keys(
    http: httpx.AsyncClient,
) -> None:
    events = [_event("dev/1"), _event("dev/2", eventId="mine-2"), _event("dev/3", stream="a.b")]
    body = await _batch(http, events)
    assert body["successful"] == 3
    assert body["failed"] == 0
    first, second, third = body["results"]
    assert len(first["eventId"]) == 36 and first["stream"] == "sensors"
    assert first["error"] is None
    assert second == {"eventId": "mine-2", "stream": "sensors", "error": None}
    assert third["stream"] == "a.b" and third["error"] is None
    for entity_id in ("dev/1", "dev/2", "dev/3"):
        assert await _exists(http, entity_id)


async def test_batcher_gets_200_with_per_event_validation_failures(
    http: httpx.AsyncClient,
) -> None:
    events = [
        _event("ok/1"),
        _event("bad/1", stream="Bad-Stream", eventId="client-id"),
        _event("bad/2", source=""),
        _event("bad/3", stream=""),
        _event("bad/4", timestamp=0),
        _event("bad/5", payload=None),
        {"stream": "sensors", "source": "s", "payload": [1]},
        _event("ok/2"),
    ]
    body = await _batch(http, events)
    assert body["successful"] == 2
    assert body["failed"] == 6
    assert body["results"][1:7] == [
        {
            "eventId": None,
            "stream": "Bad-Stream",
            "error": "validation failed: invalid stream format 'Bad-Stream': must be lowercase with optional dots",
        },
        {"eventId": None, "stream": "sensors", "error": "validation failed: source is required"},
        {"eventId": None, "stream": "", "error": "validation failed: stream is required"},
        {
            "eventId": None,
            "stream": "sensors",
            "error": "validation failed: timestamp must be positive, got 0",
        },
        {"eventId": None, "stream": "sensors", "error": "validation failed: payload is required"},
        {
            "eventId": None,
            "stream": "sensors",
            "error": "validation failed: payload must be a JSON object",
        },
    ]
    for ok in (body["results"][0], body["results"][7]):
        assert ok["error"] is None and len(ok["eventId"]) == 36
    assert await _exists(http, "ok/1") and await _exists(http, "ok/2")
    for n in range(1, 5):
        assert not await _exists(http, f"bad/{n}")


async def test_batcher_where_every_event_fails_still_gets_200(http: httpx.AsyncClient) -> None:
    body = await _batch(http, [_event(source=""), _event(stream="UP")])
    assert body["successful"] == 0
    assert body["failed"] == 2


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        pytest.param(
            _event("x/2", stream=5), "invalid type: integer `5`, expected a string", id="stream-int"
        ),
        pytest.param(
            _without(_event("x/2"), "payload"), "missing field `payload`", id="no-payload"
        ),
        pytest.param(_without(_event("x/2"), "source"), "missing field `source`", id="no-source"),
        pytest.param(
            _event("x/2", timestamp="now"), 'invalid type: string "now", expected i64', id="ts-str"
        ),
        pytest.param(
            _event("x/2", timestamp=1.5),
            "invalid type: floating point `1.5`, expected i64",
            id="ts-float",
        ),
        pytest.param(
            _event("x/2", key=1), "invalid type: integer `1`, expected a string", id="key-int"
        ),
        pytest.param(5, "invalid type: integer `5`", id="not-an-object"),
    ],
)
async def test_batcher_with_one_malformed_event_gets_400_and_nothing_published(
    http: httpx.AsyncClient, bad: Any, message: str
) -> None:
    events = [_event("x/1"), bad, _event("x/3")]
    reply = await http.post("/api/events/batch", json={"events": events})
    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()
    assert set(error) == {"error", "code"}
    assert error["error"].startswith(message), error["error"]
    for entity_id in ("x/1", "x/2", "x/3"):
        assert not await _exists(http, entity_id)
    history = await http.get("/api/events", params={"entity": "x/1"})
    assert history.json() == []


async def test_batcher_sending_empty_events_gets_400(http: httpx.AsyncClient) -> None:
    reply = await http.post("/api/events/batch", json={"events": []})
    assert reply.status_code == 400
    assert reply.json() == {
        "error": "Batch request must contain at least one event",
        "code": "invalid_event",
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({}, "missing field `events`", id="no-events"),
        pytest.param({"event": [_event()]}, "missing field `events`", id="misspelled"),
        pytest.param({"events": None}, "invalid type: null, expected a sequence", id="null"),
        pytest.param({"events": {}}, "invalid type: map, expected a sequence", id="object"),
        pytest.param([_event()], "invalid type: sequence", id="bare-array"),
    ],
)
async def test_batcher_without_an_events_array_gets_400(
    http: httpx.AsyncClient, body: Any, message: str
) -> None:
    reply = await http.post("/api/events/batch", json=body)
    assert reply.status_code == 400
    error = reply.json()
    assert set(error) == {"error", "code"}
    assert error["error"].startswith(message), error["error"]
    assert not await _exists(http, "dev/1")


async def test_batcher_sending_invalid_json_gets_400_json_error(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.post("/api/events/batch", content=b'{"events": [')
    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/json"
    assert isinstance(reply.json()["error"], str)


async def test_batcher_events_without_timestamp_are_accepted(http: httpx.AsyncClient) -> None:
    # The skill's own example (SKILL.md "batch"): no timestamp on any event.
    events = [
        {
            "stream": "sensors",
            "source": "agent-01",
            "payload": {"entity_id": "s/1", "properties": {"t": 20}},
        },
        {
            "stream": "sensors",
            "source": "agent-01",
            "payload": {"entity_id": "s/2", "properties": {"t": 21}},
        },
    ]
    body = await _batch(http, events)
    assert body["successful"] == 2 and body["failed"] == 0
    got = await http.get("/api/state/entities/s%2F2")
    assert got.json()["properties"] == {"t": 21}


async def test_batcher_events_are_applied_in_array_order(http: httpx.AsyncClient) -> None:
    events = [_event("ord/1", {"n": n, f"k{n % 3}": n}) for n in range(50)]
    body = await _batch(http, events)
    assert body["successful"] == 50
    entity = (await http.get("/api/state/entities/ord%2F1")).json()
    assert entity["properties"] == {"n": 49, "k0": 48, "k1": 49, "k2": 47}
    assert entity["version"] == 50
    history = await http.get("/api/events", params={"entity": "ord/1", "limit": "50"})
    ns = [e["payload"]["properties"]["n"] for e in history.json()]
    assert ns == list(range(49, -1, -1))
    ids = [r["eventId"] for r in body["results"]]
    assert [e["eventId"] for e in history.json()] == ids[::-1]


async def test_batcher_body_over_batch_limit_gets_413(http: httpx.AsyncClient) -> None:
    put = await http.put("/api/admin/config", json={"body_size_limit_batch_bytes": 4096})
    assert put.status_code == 200
    at_limit = await http.post("/api/events/batch", content=_batch_body_of_size(4096))
    assert at_limit.status_code == 200
    assert at_limit.json()["successful"] == 1
    over = await http.post("/api/events/batch", content=_batch_body_of_size(4097))
    assert over.status_code == 413
    assert over.headers["content-type"] == "application/json"
    assert over.json() == {"error": "payload too large", "code": "payload_too_large"}


async def test_batcher_body_above_flux_2mib_cap_is_accepted_by_default(
    http: httpx.AsyncClient,
) -> None:
    # Decision: the documented 10 MiB batch limit holds (Flux's framework cut at 2 MiB),
    # and the 1 MiB single-event limit does not apply to a batch.
    blob = "x" * (700 * 1024)
    events = [_event(f"large/{n}", {"blob": blob}) for n in range(5)]
    content = httpx.Request("POST", "/", json={"events": events}).content
    assert len(content) > 3 * 1024 * 1024
    reply = await http.post("/api/events/batch", content=content)
    assert reply.status_code == 200
    assert reply.json()["successful"] == 5


async def test_batcher_body_over_default_batch_limit_gets_413(http: httpx.AsyncClient) -> None:
    reply = await http.post("/api/events/batch", content=_batch_body_of_size(10_485_761))
    assert reply.status_code == 413
    assert reply.json() == {"error": "payload too large", "code": "payload_too_large"}
