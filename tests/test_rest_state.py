"""State queries and merge rules over HTTP (FLUX_COMPAT.md §1.6, §3).

Listings are compared after dropping ``flux-core/…`` ids: the hub keeps
``flux-core/directory`` as a real entity (Decisions), which a full listing includes.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


def _event(entity_id: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "stream": "sensors",
        "source": "agent-01",
        "timestamp": 1_771_000_000_000,
        "payload": {"entity_id": entity_id, "properties": properties},
    }


async def _publish(http: httpx.AsyncClient, entity_id: str, properties: dict[str, Any]) -> None:
    reply = await http.post("/api/events", json=_event(entity_id, properties))
    assert reply.status_code == 200, reply.text


async def _publish_many(http: httpx.AsyncClient, ids: list[str]) -> None:
    events = [_event(i, {"n": n}) for n, i in enumerate(ids)]
    reply = await http.post("/api/events/batch", json={"events": events})
    assert reply.status_code == 200
    assert reply.json()["failed"] == 0


def _ours(entities: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in entities if not e["id"].startswith("flux-core/")]


async def _list(http: httpx.AsyncClient, **params: str) -> list[str]:
    reply = await http.get("/api/state/entities", params=params)
    assert reply.status_code == 200, reply.text
    return _ours(reply.json())


async def _get(http: httpx.AsyncClient, entity_id: str) -> dict[str, Any] | None:
    reply = await http.get("/api/state/entities/" + entity_id.replace("/", "%2F"))
    if reply.status_code == 404:
        assert reply.json() == {"error": "Entity not found", "code": "not_found"}
        return None
    assert reply.status_code == 200
    entity: dict[str, Any] = reply.json()
    return entity


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


# ---------------------------------------------------------------------- shape and order


async def test_reader_gets_entities_in_flux_shape_with_utc_last_updated(
    http: httpx.AsyncClient,
) -> None:
    before = time.time()
    await _publish(http, "shape/1", {"temperature": 22.5, "unit": "C", "tags": ["a"]})
    after = time.time()
    listed = [e for e in (await http.get("/api/state/entities")).json() if e["id"] == "shape/1"]
    single = await _get(http, "shape/1")
    for entity in (listed[0], single):
        assert entity is not None
        assert set(entity) == {"id", "properties", "lastUpdated", "version"}
        assert entity["id"] == "shape/1"
        assert entity["properties"] == {"temperature": 22.5, "unit": "C", "tags": ["a"]}
        assert entity["version"] == 1
        assert RFC3339_UTC.match(entity["lastUpdated"]), entity["lastUpdated"]
        # lastUpdated is processing time, not the event's timestamp.
        assert before - 1 <= _parse_time(entity["lastUpdated"]) <= after + 1
    assert listed[0] == single


async def test_reader_gets_entities_in_lexicographic_order(http: httpx.AsyncClient) -> None:
    ids = ["b", "a/2", "a/10", "A", "a", "a/1/x", "\u00e9t\u00e9", "~", "0", "a b", "Z/9"]
    for entity_id in ids:
        await _publish(http, entity_id, {"x": 1})
    assert await _list(http) == sorted(ids)


ALL = ["a/1", "a/2/x", "ab/1", "a", "b/1", "/lead", "a-b/1"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({}, ALL, id="all"),
        pytest.param({"prefix": ""}, ALL, id="empty-prefix"),
        pytest.param({"prefix": "a"}, ["a/1", "a/2/x", "ab/1", "a", "a-b/1"], id="prefix-a"),
        pytest.param({"prefix": "a/"}, ["a/1", "a/2/x"], id="prefix-a-slash"),
        pytest.param({"prefix": "zz"}, [], id="prefix-none"),
        pytest.param({"namespace": "a"}, ["a/1", "a/2/x"], id="ns-a"),
        pytest.param({"namespace": "ab"}, ["ab/1"], id="ns-ab"),
        pytest.param({"namespace": "a-b"}, ["a-b/1"], id="ns-dash"),
        pytest.param({"namespace": "zz"}, [], id="ns-none"),
        pytest.param({"namespace": ""}, ["/lead"], id="ns-empty"),
        pytest.param({"namespace": "a/2"}, [], id="ns-with-slash"),
        pytest.param({"namespace": "a", "prefix": "a/2"}, ["a/2/x"], id="ns-and-prefix"),
        pytest.param({"namespace": "a", "prefix": "a"}, ["a/1", "a/2/x"], id="ns-and-short-prefix"),
        pytest.param({"namespace": "a", "prefix": "b"}, [], id="ns-and-other-prefix"),
        pytest.param({"namespace": "a", "prefix": "ab"}, [], id="ns-and-longer-prefix"),
        pytest.param({"foo": "bar", "Prefix": "zz"}, ALL, id="unknown-params"),
    ],
)
async def test_reader_filters_listing_by_prefix_and_namespace(
    http: httpx.AsyncClient, params: dict[str, str], expected: list[str]
) -> None:
    await _publish_many(http, ALL)
    assert await _list(http, **params) == sorted(expected)


async def test_reader_gets_every_entity_of_a_large_listing_as_valid_json(
    http: httpx.AsyncClient,
) -> None:
    ids = [f"bulk/{n:05d}" for n in range(2500)]
    await _publish_many(http, ids[::-1])
    reply = await http.get("/api/state/entities")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    entities = reply.json()
    assert _ours(entities) == ids
    by_id = {e["id"]: e for e in entities}
    assert by_id["bulk/00000"]["properties"] == {"n": 2499}
    assert all(set(e) == {"id", "properties", "lastUpdated", "version"} for e in entities)
    assert await _list(http, prefix="bulk/0") == ids
    assert await _list(http, namespace="bulk") == ids


# ---------------------------------------------------------------------- pagination


async def _walk(
    http: httpx.AsyncClient, limit: int, max_pages: int = 100, **params: str
) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while len(pages) < max_pages:
        query = {"limit": str(limit), **params}
        if cursor is not None:
            query["cursor"] = cursor
        reply = await http.get("/api/state/entities", params=query)
        assert reply.status_code == 200, reply.text
        page = [e["id"] for e in reply.json()]
        assert len(page) <= limit
        pages.append(page)
        cursor = reply.headers.get("x-next-cursor")
        if cursor is None:
            return pages
    raise AssertionError(f"pagination does not end; first pages: {pages[:8]}")


async def test_reader_walks_all_pages_with_limit_and_cursor(http: httpx.AsyncClient) -> None:
    ids = [f"page/{n:05d}" for n in range(2500)]
    await _publish_many(http, ids)
    pages = await _walk(http, 1000, prefix="page/")
    assert [len(p) for p in pages[:3]] == [1000, 1000, 500]
    assert [i for p in pages for i in p] == ids
    assert _ours([{"id": i} for p in await _walk(http, 999) for i in p]) == ids


async def test_reader_walks_pages_of_ids_with_unusual_characters(
    http: httpx.AsyncClient,
) -> None:
    # The cursor is opaque: the client sends back the header value as the `cursor`
    # query parameter, URL-encoded like any other value.
    ids = sorted(
        [
            "u/a b",
            "u/a!",
            "u/a#1",
            "u/a%20b",
            "u/a%",
            "u/a&b=c",
            "u/a+b",
            "u/a?x",
            "u/a/b/c",
            "u/\u00e9t\u00e9",
            "u/\u65e5\u672c",
            "u/a\u00a0b",
            "u/z",
            "u/\U0001f600",
        ]
    )
    await _publish_many(http, ids)
    for limit in (1, 2, 3):
        pages = await _walk(http, limit, max_pages=2 * len(ids) + 2, prefix="u/")
        walked = [i for p in pages for i in p]
        assert walked == ids, f"limit={limit}"


@pytest.mark.parametrize("limit", ["abc", "-1", "1.5", "10x"])
async def test_reader_listing_with_bad_limit_gets_400(http: httpx.AsyncClient, limit: str) -> None:
    reply = await http.get("/api/state/entities", params={"limit": limit})
    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {
        "error": "Failed to deserialize query string: limit: invalid digit found in string",
        "code": "bad_request",
    }


# ---------------------------------------------------------------------- single entity


@pytest.mark.parametrize(
    ("entity_id", "path"),
    [
        pytest.param("matt/sensor-01", "matt%2Fsensor-01", id="encoded-slash"),
        pytest.param("matt/sensor-01", "matt%2fsensor-01", id="encoded-slash-lower"),
        pytest.param("matt/sensor-01", "matt/sensor-01", id="raw-slash"),
        pytest.param("github/repo/owner/name", "github%2Frepo%2Fowner%2Fname", id="encoded-deep"),
        pytest.param("github/repo/owner/name", "github/repo/owner/name", id="raw-deep"),
        pytest.param("github/repo/owner/name", "github/repo%2Fowner/name", id="mixed"),
        pytest.param("plain-id", "plain-id", id="no-namespace"),
        pytest.param("room 101", "room%20101", id="space"),
        pytest.param("caf\u00e9/1", "caf%C3%A9%2F1", id="utf8"),
        pytest.param("a+b", "a+b", id="plus-stays-plus"),
    ],
)
async def test_reader_gets_one_entity_by_encoded_or_raw_id(
    http: httpx.AsyncClient, entity_id: str, path: str
) -> None:
    await _publish(http, entity_id, {"ok": True})
    reply = await http.get("/api/state/entities/" + path)
    assert reply.status_code == 200, reply.text
    assert reply.json()["id"] == entity_id
    assert reply.json()["properties"] == {"ok": True}


async def test_publisher_any_string_is_an_entity_id_in_internal_mode(
    http: httpx.AsyncClient,
) -> None:
    # §1.11: in Internal mode entity ids are not validated at all.
    ids = ["", "a/b/c/d", "UPPER/Case", " spaced ", "a//b", "/", "\U0001f600"]
    await _publish_many(http, ids)
    assert await _list(http) == sorted(ids)
    for entity_id in ids[1:]:
        entity = await _get(http, entity_id)
        assert entity is not None and entity["id"] == entity_id


async def test_reader_asking_for_missing_entity_gets_404(http: httpx.AsyncClient) -> None:
    for path in ("nobody", "ghost%2F1", "ghost/1"):
        reply = await http.get("/api/state/entities/" + path)
        assert reply.status_code == 404
        assert reply.headers["content-type"] == "application/json"
        assert reply.json() == {"error": "Entity not found", "code": "not_found"}


# ---------------------------------------------------------------------- merge rules (§3)


async def test_publisher_properties_merge_at_top_level(http: httpx.AsyncClient) -> None:
    await _publish(http, "m/1", {"a": 1, "b": 1})
    await _publish(http, "m/1", {"b": 2, "c": 3})
    entity = await _get(http, "m/1")
    assert entity is not None
    assert entity["properties"] == {"a": 1, "b": 2, "c": 3}
    assert entity["version"] == 2


async def test_publisher_nested_objects_and_arrays_are_replaced_whole(
    http: httpx.AsyncClient,
) -> None:
    await _publish(http, "m/1", {"cfg": {"x": 1, "y": {"z": 1}}, "list": [1, 2, 3]})
    await _publish(http, "m/1", {"cfg": {"y": {"w": 2}}, "list": [4]})
    entity = await _get(http, "m/1")
    assert entity is not None
    assert entity["properties"] == {"cfg": {"y": {"w": 2}}, "list": [4]}


async def test_publisher_null_value_is_stored_not_removed(http: httpx.AsyncClient) -> None:
    await _publish(http, "m/1", {"a": 1, "b": 2})
    await _publish(http, "m/1", {"a": None})
    entity = await _get(http, "m/1")
    assert entity is not None
    assert entity["properties"] == {"a": None, "b": 2}
    await _publish(http, "m/2", {"only": None})
    created = await _get(http, "m/2")
    assert created is not None and created["properties"] == {"only": None}


async def test_publisher_empty_properties_create_nothing(http: httpx.AsyncClient) -> None:
    await _publish(http, "m/empty", {})
    assert await _get(http, "m/empty") is None
    assert await _list(http, prefix="m/") == []
    await _publish(http, "m/1", {"a": 1})
    await _publish(http, "m/1", {})
    entity = await _get(http, "m/1")
    assert entity is not None
    assert entity["properties"] == {"a": 1} and entity["version"] == 1


async def test_publisher_values_keep_their_json_types(http: httpx.AsyncClient) -> None:
    values = {
        "int": 1,
        "float": 1.5,
        "whole_float": 2.0,
        "big": 2**62,
        "neg": -7,
        "bool": True,
        "str": "true",
        "unicode": "\u65e5\u672c \U0001f600",
        "empty_obj": {},
        "empty_list": [],
        "nested": {"b": [1, {"c": None}], "a": 0},
    }
    await _publish(http, "types/1", values)
    entity = await _get(http, "types/1")
    assert entity is not None
    assert entity["properties"] == values
    assert isinstance(entity["properties"]["whole_float"], float)
    assert entity["properties"]["bool"] is True


async def test_publisher_deleted_true_removes_the_entity(http: httpx.AsyncClient) -> None:
    await _publish(http, "m/1", {"a": 1, "b": 2})
    await _publish(http, "m/1", {"__deleted__": True, "a": 5})
    assert await _get(http, "m/1") is None
    assert await _list(http, prefix="m/") == []
    # Re-created later: a fresh entity with none of the old properties.
    await _publish(http, "m/1", {"c": 3})
    entity = await _get(http, "m/1")
    assert entity is not None and entity["properties"] == {"c": 3}


async def test_publisher_deleted_true_on_missing_entity_is_a_no_op(
    http: httpx.AsyncClient,
) -> None:
    await _publish(http, "m/ghost", {"__deleted__": True})
    assert await _get(http, "m/ghost") is None


@pytest.mark.parametrize("marker", ["true", False, 1, None, {"x": True}])
async def test_publisher_deleted_other_than_true_is_an_ordinary_property(
    http: httpx.AsyncClient, marker: Any
) -> None:
    await _publish(http, "m/1", {"a": 1})
    await _publish(http, "m/1", {"__deleted__": marker})
    entity = await _get(http, "m/1")
    assert entity is not None
    assert entity["properties"] == {"a": 1, "__deleted__": marker}


async def test_publisher_unchanged_value_keeps_version_and_moves_last_updated(
    http: httpx.AsyncClient,
) -> None:
    await _publish(http, "v/1", {"a": 1})
    first = await _get(http, "v/1")
    await asyncio.sleep(0.01)  # lastUpdated has millisecond precision
    await _publish(http, "v/1", {"a": 1})
    second = await _get(http, "v/1")
    assert first is not None and second is not None
    assert second["version"] == first["version"] == 1
    assert second["lastUpdated"] > first["lastUpdated"]
    await _publish(http, "v/1", {"a": 2})
    third = await _get(http, "v/1")
    assert third is not None and third["version"] == 2
