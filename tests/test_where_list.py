"""Value filters on listings: REST ``GET /api/state/entities?where=`` and native ``list``.

Real hub, real Redis, real clients (httpx, websockets).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from hub.engine import listing

from .native_client import Native, event

if TYPE_CHECKING:
    import httpx

TASKS = {
    "crew/t1": {"status": "open", "load": 1, "zone": "a"},
    "crew/t2": {"status": "open", "load": 7, "zone": "b"},
    "crew/t3": {"status": "done", "load": 2, "zone": "a"},
    "crew/t4": {"status": "open", "load": 4, "zone": "c", "owner": "w1"},
    "ops/t5": {"status": "open", "load": 0, "zone": "a"},
}


async def publish_tasks(http: httpx.AsyncClient) -> None:
    events = [
        {"stream": "t", "source": "test", "payload": {"entity_id": i, "properties": p}}
        for i, p in TASKS.items()
    ]
    reply = await http.post("/api/events/batch", json={"events": events})
    assert reply.status_code == 200, reply.text


async def rest_ids(http: httpx.AsyncClient, where: Any, **params: Any) -> list[str]:
    reply = await http.get("/api/state/entities", params={"where": json.dumps(where), **params})
    assert reply.status_code == 200, reply.text
    return [e["id"] for e in reply.json() if not e["id"].startswith("flux-core/")]


async def test_rest_list_filters_by_value(http: httpx.AsyncClient) -> None:
    await publish_tasks(http)
    assert await rest_ids(http, {"status": "open"}, namespace="crew") == [
        "crew/t1",
        "crew/t2",
        "crew/t4",
    ]
    assert await rest_ids(http, {"status": "open", "load": {"lt": 5}}) == [
        "crew/t1",
        "crew/t4",
        "ops/t5",
    ]
    assert await rest_ids(http, {"zone": {"in": ["b", "c"]}}) == ["crew/t2", "crew/t4"]
    assert await rest_ids(http, {"owner": {"exists": True}}) == ["crew/t4"]
    assert await rest_ids(http, {"owner": {"exists": False}}, prefix="crew/") == [
        "crew/t1",
        "crew/t2",
        "crew/t3",
    ]
    # Paged: `limit` matching entities per page, and the cursor goes on from there.
    page = await http.get(
        "/api/state/entities", params={"where": '{"zone": "a"}', "limit": "1", "prefix": "crew/"}
    )
    assert [e["id"] for e in page.json()] == ["crew/t1"]
    cursor = page.headers["x-next-cursor"]
    page = await http.get(
        "/api/state/entities",
        params={"where": '{"zone": "a"}', "limit": "1", "prefix": "crew/", "cursor": cursor},
    )
    assert [e["id"] for e in page.json()] == ["crew/t3"]
    page = await http.get(
        "/api/state/entities",
        params={
            "where": '{"zone": "a"}',
            "limit": "1",
            "prefix": "crew/",
            "cursor": page.headers["x-next-cursor"],
        },
    )
    assert page.json() == []
    assert "x-next-cursor" not in page.headers


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("status=open", "where: not JSON ("),
        ("[1]", "where: must be an object of property name -> condition"),
        ('{"load": {"lt": "5", "lt2": 1}}', "where.load: unknown operator 'lt2'"),
        ('{"load": {"lt": null}}', "where.load.lt: 'lt' needs a number or a string"),
    ],
)
async def test_rest_list_refuses_a_bad_where_with_400(
    http: httpx.AsyncClient, where: str, message: str
) -> None:
    for params in ({"where": where}, {"where": where, "limit": "5"}):
        reply = await http.get("/api/state/entities", params=params)
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"].startswith(message)


async def test_rest_list_scan_is_bounded_and_pages_on(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A page reads at most SCAN_LIMIT entities, then answers with what it found and
    # a cursor; reading on finds the rest.
    monkeypatch.setattr(listing, "SCAN_LIMIT", 3)
    monkeypatch.setattr(listing, "READ_CHUNK", 2)
    await publish_tasks(http)
    params = {"where": '{"zone": "a"}', "limit": "10", "prefix": "crew/"}
    first = await http.get("/api/state/entities", params=params)
    assert [e["id"] for e in first.json()] == ["crew/t1", "crew/t3"]  # 3 read: t1 t2 t3
    cursor = first.headers["x-next-cursor"]
    second = await http.get("/api/state/entities", params={**params, "cursor": cursor})
    assert [e["id"] for e in second.json()] == []
    assert "x-next-cursor" not in second.headers
    # Streamed (no limit): every match, read chunk by chunk.
    assert await rest_ids(http, {"zone": "a"}) == ["crew/t1", "crew/t3", "ops/t5"]


async def test_native_list_filters_by_value(ws_url: str) -> None:
    client = await Native.connect(ws_url)
    try:
        await client.publish(*(event(i, **p) for i, p in TASKS.items()))
        reply = await client.request(
            {"type": "list", "namespace": "crew", "where": {"load": {"gte": 2}}, "limit": 1},
            "entities",
        )
        assert [e["id"] for e in reply["entities"]] == ["crew/t2"]
        assert reply["next"] == "crew/t2"
        reply = await client.request(
            {
                "type": "list",
                "namespace": "crew",
                "where": {"load": {"gte": 2}},
                "cursor": "crew/t2",
            },
            "entities",
        )
        assert [e["id"] for e in reply["entities"]] == ["crew/t3", "crew/t4"]
        assert reply["next"] is None
        bad = await client.request({"type": "list", "where": {"load": {"lt": []}}}, "entities")
        assert bad["type"] == "error"
        assert bad["code"] == "bad_frame"
        assert bad["message"] == "where.load.lt: 'lt' needs a number or a string"
        bad = await client.request({"type": "list", "where": "load<5"}, "entities")
        assert bad["code"] == "bad_frame"
        assert bad["message"].startswith("where:")
    finally:
        await client.close()
