"""``POST /api/events`` as a Flux client sees it (FLUX_COMPAT.md §1.2, §1.3).

Internal mode (auth disabled). Every rejection is checked by status and by the exact
``{"error": …}`` body; serde-shape errors are checked by their leading text, because
serde appends `` at line L column C`` and no client depends on the position.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

SINGLE_LIMIT = 1_048_576  # FLUX_COMPAT.md §1.9 default of body_size_limit_single_bytes

ENTITY = "room/1"


def _event(
    entity_id: str = ENTITY, properties: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    """A valid Flux event; ``fields`` override or add top-level fields."""
    event: dict[str, Any] = {
        "stream": "sensors",
        "source": "agent-01",
        "timestamp": 1_771_000_000_000,
        "payload": {
            "entity_id": entity_id,
            "properties": {"temperature": 22.5} if properties is None else properties,
        },
    }
    event.update(fields)
    return event


def _without(event: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != name}


def _is_uuid7(text: str) -> bool:
    parsed = uuid.UUID(text)
    return len(text) == 36 and parsed.version == 7 and parsed.variant == uuid.RFC_4122


def _body_of_size(size: int) -> bytes:
    """A valid event whose JSON body is exactly ``size`` bytes."""
    empty = b'{"stream":"sensors","source":"s","payload":{"entity_id":"big/1","properties":{"blob":""}}}'
    assert size >= len(empty)
    return empty.replace(b'"blob":""', b'"blob":"' + b"a" * (size - len(empty)) + b'"')


async def _history(http: httpx.AsyncClient, entity_id: str) -> list[dict[str, Any]]:
    reply = await http.get("/api/events", params={"entity": entity_id})
    assert reply.status_code == 200
    events: list[dict[str, Any]] = reply.json()
    return events


async def _assert_rejected(
    http: httpx.AsyncClient, body: Any, status: int, message: str, *, exact: bool = True
) -> None:
    reply = await http.post("/api/events", json=body)
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()
    assert set(error) == {"error", "code"}
    if exact:
        assert error["error"] == message
    else:
        assert error["error"].startswith(message), error["error"]


# ---------------------------------------------------------------------- success


@pytest.mark.parametrize(
    "event_id",
    [pytest.param(..., id="missing"), pytest.param(None, id="null"), pytest.param("", id="empty")],
)
async def test_publisher_gets_generated_uuid7_without_event_id(
    http: httpx.AsyncClient, event_id: Any
) -> None:
    event = _event() if event_id is ... else _event(eventId=event_id)
    reply = await http.post("/api/events", json=event)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert set(body) == {"eventId", "stream"}
    assert body["stream"] == "sensors"
    assert _is_uuid7(body["eventId"])
    # The id the client was given is the id stored in the log.
    [stored] = await _history(http, ENTITY)
    assert stored["eventId"] == body["eventId"]


async def test_publisher_keeps_its_own_event_id_unchanged(http: httpx.AsyncClient) -> None:
    reply = await http.post("/api/events", json=_event(eventId="not-a-uuid:42"))
    assert reply.status_code == 200
    assert reply.json() == {"eventId": "not-a-uuid:42", "stream": "sensors"}
    [stored] = await _history(http, ENTITY)
    assert stored["eventId"] == "not-a-uuid:42"


async def test_publisher_reads_its_write_right_after_the_reply(http: httpx.AsyncClient) -> None:
    for n in range(20):
        reply = await http.post("/api/events", json=_event(properties={"n": n}))
        assert reply.status_code == 200
        got = await http.get("/api/state/entities/room%2F1")
        assert got.status_code == 200
        assert got.json()["properties"] == {"n": n}


async def test_publisher_omits_timestamp_and_server_time_is_used(
    http: httpx.AsyncClient,
) -> None:
    before = int(time.time() * 1000)
    reply = await http.post("/api/events", json=_without(_event(), "timestamp"))
    after = int(time.time() * 1000)
    assert reply.status_code == 200
    assert (await http.get("/api/state/entities/room%2F1")).status_code == 200
    [stored] = await _history(http, ENTITY)
    assert isinstance(stored["timestamp"], int)
    assert before <= stored["timestamp"] <= after


async def test_publisher_timestamp_in_seconds_is_accepted_as_is(
    http: httpx.AsyncClient,
) -> None:
    # Flux does not check plausibility: seconds instead of milliseconds pass.
    reply = await http.post("/api/events", json=_event(timestamp=1_771_000_000))
    assert reply.status_code == 200
    [stored] = await _history(http, ENTITY)
    assert stored["timestamp"] == 1_771_000_000


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({}, id="empty-payload"),
        pytest.param({"properties": {"a": 1}}, id="no-entity-id"),
        pytest.param({"entity_id": "room/2"}, id="no-properties"),
        pytest.param({"entity_id": "room/2", "properties": [1, 2]}, id="properties-not-object"),
        pytest.param({"entity_id": 7, "properties": {"a": 1}}, id="entity-id-not-string"),
    ],
)
async def test_publisher_payload_without_entity_fields_is_accepted(
    http: httpx.AsyncClient, payload: dict[str, Any]
) -> None:
    # §1.2: entity_id and properties are not required at ingestion (Internal mode);
    # such events are stored and change no state (§3 rules 2 and 3).
    event = {"stream": "sensors", "source": "s", "timestamp": 1, "payload": payload}
    reply = await http.post("/api/events", json=event)
    assert reply.status_code == 200
    assert (await http.get("/api/state/entities/room%2F2")).status_code == 404


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param(None, id="none"),
        pytest.param("application/json", id="json"),
        pytest.param("text/plain", id="text"),
        pytest.param("application/x-www-form-urlencoded", id="form"),
        pytest.param("application/octet-stream", id="octet-stream"),
    ],
)
async def test_publisher_any_content_type_is_accepted(
    http: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    body = httpx.Request("POST", "/", json=_event()).content
    reply = await http.post("/api/events", content=body, headers=headers)
    assert reply.status_code == 200, reply.text
    batch = httpx.Request("POST", "/", json={"events": [_event()]}).content
    reply = await http.post("/api/events/batch", content=batch, headers=headers)
    assert reply.status_code == 200, reply.text


# ---------------------------------------------------------------------- §1.2 rules


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"stream": ""}, "stream is required", id="empty-stream"),
        pytest.param({"source": ""}, "source is required", id="empty-source"),
        pytest.param({"payload": None}, "payload is required", id="null-payload"),
        *(
            pytest.param(
                {"stream": s},
                f"invalid stream format '{s}': must be lowercase with optional dots",
                id=f"stream-{s}",
            )
            for s in [
                "Sensors",
                "SENSORS",
                "sensor-data",
                "sensor_data",
                "a/b",
                ".a",
                "a.",
                "a..b",
                "a b",
                " a",
                "a\n",
                "capteur\u00e9",
                "*",
            ]
        ),
        pytest.param({"timestamp": 0}, "timestamp must be positive, got 0", id="timestamp-0"),
        pytest.param({"timestamp": -5}, "timestamp must be positive, got -5", id="timestamp-neg"),
        pytest.param({"payload": 5}, "payload must be a JSON object", id="payload-int"),
        pytest.param({"payload": "x"}, "payload must be a JSON object", id="payload-str"),
        pytest.param({"payload": [1]}, "payload must be a JSON object", id="payload-list"),
        pytest.param({"payload": True}, "payload must be a JSON object", id="payload-bool"),
    ],
)
async def test_publisher_breaking_an_envelope_rule_gets_400_with_flux_message(
    http: httpx.AsyncClient, fields: dict[str, Any], message: str
) -> None:
    await _assert_rejected(http, _event(**fields), 400, message)
    assert await _history(http, ENTITY) == []
    assert (await http.get("/api/state/entities/room%2F1")).status_code == 404


@pytest.mark.parametrize(
    "stream", ["sensors", "a.b.c", "flux.events.deletions", "0", "a1.2b", "x" * 200]
)
async def test_publisher_valid_stream_names_are_accepted(
    http: httpx.AsyncClient, stream: str
) -> None:
    reply = await http.post("/api/events", json=_event(stream=stream))
    assert reply.status_code == 200
    assert reply.json()["stream"] == stream


@pytest.mark.parametrize(
    ("event", "message"),
    [
        pytest.param(_without(_event(), "stream"), "missing field `stream`", id="no-stream"),
        pytest.param(_without(_event(), "source"), "missing field `source`", id="no-source"),
        pytest.param(_without(_event(), "payload"), "missing field `payload`", id="no-payload"),
        pytest.param(
            _event(stream=5), "invalid type: integer `5`, expected a string", id="stream-int"
        ),
        pytest.param(
            _event(stream=None), "invalid type: null, expected a string", id="stream-null"
        ),
        pytest.param(
            _event(source=["a"]), "invalid type: sequence, expected a string", id="source-list"
        ),
        pytest.param(
            _event(timestamp=1.5),
            "invalid type: floating point `1.5`, expected i64",
            id="timestamp-float",
        ),
        pytest.param(
            _event(timestamp="1771000000000"),
            'invalid type: string "1771000000000", expected i64',
            id="timestamp-string",
        ),
        pytest.param(
            _event(timestamp=True), "invalid type: boolean `true`, expected i64", id="ts-bool"
        ),
        pytest.param(_event(key=5), "invalid type: integer `5`, expected a string", id="key-int"),
        pytest.param(_event(schema={}), "invalid type: map, expected a string", id="schema-object"),
        pytest.param(
            _event(eventId=123), "invalid type: integer `123`, expected a string", id="id-int"
        ),
    ],
)
async def test_publisher_sending_wrong_shape_gets_400_serde_error(
    http: httpx.AsyncClient, event: dict[str, Any], message: str
) -> None:
    await _assert_rejected(http, event, 400, message, exact=False)
    assert await _history(http, ENTITY) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param(
            {"stream": "", "source": "", "payload": None, "timestamp": -1},
            "stream is required",
            id="stream-first",
        ),
        pytest.param(
            {"stream": "BAD", "source": "", "payload": None, "timestamp": -1},
            "source is required",
            id="source-before-format",
        ),
        pytest.param(
            {"stream": "BAD", "source": "s", "payload": None, "timestamp": -1},
            "payload is required",
            id="null-payload-before-format",
        ),
        pytest.param(
            {"stream": "BAD", "source": "s", "payload": 5, "timestamp": -1},
            "invalid stream format 'BAD': must be lowercase with optional dots",
            id="format-before-timestamp",
        ),
        pytest.param(
            {"stream": "ok", "source": "s", "payload": 5, "timestamp": -1},
            "timestamp must be positive, got -1",
            id="timestamp-before-payload-type",
        ),
    ],
)
async def test_publisher_breaking_several_rules_gets_the_first_in_flux_order(
    http: httpx.AsyncClient, fields: dict[str, Any], message: str
) -> None:
    await _assert_rejected(http, _event(**fields), 400, message)


async def test_publisher_type_error_is_reported_before_any_rule(
    http: httpx.AsyncClient,
) -> None:
    event = _event(stream="", source="", payload=None, timestamp="soon")
    await _assert_rejected(
        http, event, 400, 'invalid type: string "soon", expected i64', exact=False
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{", id="truncated"),
        pytest.param(b"not json", id="text"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"stream": "s",}', id="trailing-comma"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
    ],
)
async def test_publisher_sending_invalid_json_gets_400_json_error(
    http: httpx.AsyncClient, body: bytes
) -> None:
    reply = await http.post("/api/events", content=body)
    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()
    assert set(error) == {"error", "code"}
    assert isinstance(error["error"], str) and error["error"]
    # Flux's message has no "Validation error:" prefix [docs differ].
    assert not error["error"].startswith("Validation error")


# ---------------------------------------------------------------------- body limit


async def test_publisher_body_exactly_at_single_limit_is_accepted(
    http: httpx.AsyncClient,
) -> None:
    body = _body_of_size(SINGLE_LIMIT)
    assert len(body) == SINGLE_LIMIT
    reply = await http.post("/api/events", content=body)
    assert reply.status_code == 200, reply.text
    got = await http.get("/api/state/entities/big%2F1")
    assert len(got.json()["properties"]["blob"]) > SINGLE_LIMIT - 100


async def test_publisher_body_one_byte_over_single_limit_gets_413(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.post("/api/events", content=_body_of_size(SINGLE_LIMIT + 1))
    assert reply.status_code == 413
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"error": "payload too large", "code": "payload_too_large"}
    assert (await http.get("/api/state/entities/big%2F1")).status_code == 404


async def test_publisher_chunked_body_over_single_limit_gets_413(
    http: httpx.AsyncClient,
) -> None:
    body = _body_of_size(SINGLE_LIMIT + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    # No Content-Length: the limit must hold while the body streams in.
    reply = await http.post("/api/events", content=chunks())
    assert reply.status_code == 413
    assert reply.json() == {"error": "payload too large", "code": "payload_too_large"}


async def test_publisher_body_limit_follows_admin_config(http: httpx.AsyncClient) -> None:
    put = await http.put("/api/admin/config", json={"body_size_limit_single_bytes": 2048})
    assert put.status_code == 200
    assert (await http.post("/api/events", content=_body_of_size(2048))).status_code == 200
    over = await http.post("/api/events", content=_body_of_size(2049))
    assert over.status_code == 413
    assert over.json() == {"error": "payload too large", "code": "payload_too_large"}


# ---------------------------------------------------------------------- dedup, storage


async def test_publisher_repeating_event_id_gets_200_and_is_applied_once(
    http: httpx.AsyncClient,
) -> None:
    first = await http.post("/api/events", json=_event(properties={"n": 1}, eventId="evt-1"))
    again = await http.post("/api/events", json=_event(properties={"n": 1}, eventId="evt-1"))
    other = await http.post("/api/events", json=_event(properties={"n": 2}, eventId="evt-1"))
    for reply in (first, again, other):
        assert reply.status_code == 200
        assert reply.json() == {"eventId": "evt-1", "stream": "sensors"}
    entity = (await http.get("/api/state/entities/room%2F1")).json()
    assert entity["properties"] == {"n": 1}
    assert entity["version"] == 1
    history = await _history(http, ENTITY)
    assert [e["eventId"] for e in history] == ["evt-1"]


async def test_publisher_repeating_event_id_in_a_batch_is_applied_once(
    http: httpx.AsyncClient,
) -> None:
    events = [_event(properties={"n": 1}, eventId="evt-b"), _event(properties={"n": 2})]
    events.append(_event(properties={"n": 3}, eventId="evt-b"))
    reply = await http.post("/api/events/batch", json={"events": events})
    assert reply.status_code == 200
    assert reply.json()["failed"] == 0
    entity = (await http.get("/api/state/entities/room%2F1")).json()
    assert entity["properties"] == {"n": 2}
    assert len(await _history(http, ENTITY)) == 2


async def test_publisher_unknown_top_level_fields_are_dropped_from_history(
    http: httpx.AsyncClient,
) -> None:
    event = _event(eventId="e-1", extra=1, metadata={"a": 1}, Stream="X")
    assert (await http.post("/api/events", json=event)).status_code == 200
    [stored] = await _history(http, ENTITY)
    assert stored == {
        "eventId": "e-1",
        "stream": "sensors",
        "source": "agent-01",
        "timestamp": 1_771_000_000_000,
        "payload": {"entity_id": ENTITY, "properties": {"temperature": 22.5}},
    }


async def test_publisher_key_and_schema_are_stored_only_when_set(
    http: httpx.AsyncClient,
) -> None:
    with_both = _event(eventId="e-1", key="k-1", schema="temp.v1")
    with_nulls = _event(eventId="e-2", key=None, schema=None)
    with_nulls["payload"]["unit"] = "C"
    assert (await http.post("/api/events", json=with_both)).status_code == 200
    assert (await http.post("/api/events", json=with_nulls)).status_code == 200
    newest, oldest = await _history(http, ENTITY)
    assert oldest["key"] == "k-1" and oldest["schema"] == "temp.v1"
    assert "key" not in newest and "schema" not in newest
    # Unknown payload fields are part of the payload and stay.
    assert newest["payload"] == {
        "entity_id": ENTITY,
        "properties": {"temperature": 22.5},
        "unit": "C",
    }
