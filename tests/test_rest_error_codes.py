"""Error bodies: Flux's ``error`` message, exactly, plus a machine-readable ``code``.

Also the answers schemathesis (tests/test_openapi_live.py) and the OpenAPI work
turned up as 500s, each now the documented 4xx:

- a query integer in other Unicode digits (``limit=²``: ``str.isdigit`` is true,
  ``int`` refuses it) or with thousands of digits (``int`` refuses those too);
- an event nested deeper than the JSON encoder recurses (254 levels), in a property
  or elsewhere in the payload, single or in a batch.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest

EVENT: dict[str, Any] = {
    "stream": "sensors",
    "source": "agent-01",
    "payload": {"entity_id": "codes/1", "properties": {"temperature": 22.5}},
}


def _deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def _error(reply: httpx.Response, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    body: dict[str, Any] = reply.json()
    return body


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "expected"),
    [
        (
            "POST",
            "/api/events",
            {**EVENT, "stream": ""},
            400,
            {"error": "stream is required", "code": "invalid_event"},
        ),
        (
            "GET",
            "/api/events",
            None,
            400,
            {"error": "entity parameter is required", "code": "bad_request"},
        ),
        (
            "GET",
            "/api/state/entities/nobody%2Fhere",
            None,
            404,
            {"error": "Entity not found", "code": "not_found"},
        ),
        (
            "GET",
            "/nowhere",
            None,
            404,
            {"error": "no such endpoint: /nowhere", "code": "not_found"},
        ),
        (
            "PATCH",
            "/api/events",
            None,
            405,
            {
                "error": "method PATCH not allowed on /api/events (allowed: GET, POST)",
                "code": "method_not_allowed",
            },
        ),
        (
            "PUT",
            "/api/admin/config",
            {"rate_limit_per_namespace_per_minute": 0},
            422,
            {
                "error": "rate_limit_per_namespace_per_minute must be between 1 and "
                "1000000000, got 0",
                "code": "unprocessable",
            },
        ),
    ],
    ids=["invalid-event", "bad-request", "entity", "endpoint", "method", "unprocessable"],
)
async def test_error_body_has_flux_message_and_a_code(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    body: Any,
    status: int,
    expected: dict[str, Any],
) -> None:
    reply = await http.request(method, path, json=body)
    assert await _error(reply, status) == expected


async def test_malformed_json_event_is_an_invalid_event(http: httpx.AsyncClient) -> None:
    reply = await http.post("/api/events", content=b"{")
    error = await _error(reply, 400)
    assert error["code"] == "invalid_event"
    assert error["error"] == "unexpected end of data at line 1 column 2"


async def test_conflict_keeps_its_version_beside_the_code(http: httpx.AsyncClient) -> None:
    reply = await http.post("/api/events", json={**EVENT, "if_version": 5})
    assert await _error(reply, 409) == {
        "error": "conflict: entity is at version 0",
        "code": "conflict",
        "version": 0,
    }


async def test_body_over_the_limit_has_the_payload_too_large_code(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.post("/api/events", content=b"x" * (1024 * 1024 + 1))
    assert await _error(reply, 413) == {"error": "payload too large", "code": "payload_too_large"}


# ---------------------------------------------------------------------- query integers


@pytest.mark.parametrize(
    "path", ["/api/events?entity=codes%2F1&limit=", "/api/state/entities?limit="]
)
@pytest.mark.parametrize("value", ["²", "٣", "1²"])
async def test_query_integer_in_other_unicode_digits_is_a_400(
    http: httpx.AsyncClient, path: str, value: str
) -> None:
    reply = await http.get(path + quote(value))
    assert await _error(reply, 400) == {
        "error": "Failed to deserialize query string: limit: invalid digit found in string",
        "code": "bad_request",
    }


async def test_query_integer_too_large_for_64_bits_is_a_400(http: httpx.AsyncClient) -> None:
    for digits in ("9" * 5000, str(2**64)):
        reply = await http.get("/api/events", params={"entity": "codes/1", "limit": digits})
        assert await _error(reply, 400) == {
            "error": "Failed to deserialize query string: limit: number too large to fit in "
            "target type",
            "code": "bad_request",
        }


async def test_query_integer_with_leading_zeros_is_read(http: httpx.AsyncClient) -> None:
    for n in range(3):
        reply = await http.post("/api/events", json={**EVENT, "timestamp": n + 1})
        assert reply.status_code == 200, reply.text
    reply = await http.get("/api/events", params={"entity": "codes/1", "limit": "0" * 40 + "2"})
    assert reply.status_code == 200, reply.text
    assert [e["timestamp"] for e in reply.json()] == [3, 2]


# ---------------------------------------------------------------------- deep events


async def test_property_too_deep_to_encode_is_refused_by_the_depth_limit(
    http: httpx.AsyncClient,
) -> None:
    event = {**EVENT, "payload": {"entity_id": "codes/deep", "properties": {"v": _deep(300)}}}
    reply = await http.post("/api/events", json=event)
    assert await _error(reply, 413) == {
        "error": "property 'v' nests deeper than 32 levels",
        "code": "payload_too_large",
    }


async def test_payload_too_deep_to_encode_is_a_400_single_and_batch(
    http: httpx.AsyncClient,
) -> None:
    payload = {"entity_id": "codes/deep", "properties": {}, "extra": _deep(300)}
    event = {**EVENT, "payload": payload}
    expected = {"error": "recursion limit exceeded", "code": "invalid_event"}
    assert await _error(await http.post("/api/events", json=event), 400) == expected
    batch = await http.post("/api/events/batch", json={"events": [EVENT, event]})
    assert await _error(batch, 400) == expected
