"""The Python SDK's value filters: ``subscribe(where=...)``, ``EntityCache``,
``list_entities(where=...)``, against a real hub (both encodings)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, Literal

import pytest

from flux_client import EntityCache, FluxClient, Update

from .conftest import timeout

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

WHERE = {"status": "open", "load": {"lt": 5}}


@pytest.fixture(params=["msgpack", "json"])
async def flux(request: pytest.FixtureRequest, base_url: str) -> AsyncIterator[FluxClient]:
    encoding: Literal["msgpack", "json"] = request.param
    async with FluxClient(base_url, encoding=encoding, request_timeout=timeout(10)) as client:
        yield client


async def next_update(updates: AsyncIterator[Update], kind: str) -> Update:
    async with asyncio.timeout(timeout(5)):
        async for update in updates:
            if update.kind == kind and not update.entity_id.startswith("flux-core/"):
                return update
    raise AssertionError("the subscription ended")


async def test_sdk_subscription_with_where_gets_entries_and_lefts(flux: FluxClient) -> None:
    await flux.publish("crew/a", {"status": "open", "load": 1})
    await flux.publish("crew/b", {"status": "done", "load": 1})
    async with await flux.subscribe(namespaces=["crew"], where=WHERE) as sub:
        first = await next_update(sub, "snapshot")
        assert (first.entity_id, first.changes) == ("crew/a", {"status": "open", "load": 1})
        await next_update(sub, "synced")
        await flux.publish("crew/b", {"status": "open"})
        entry = await next_update(sub, "delta")
        assert (entry.entity_id, entry.created) == ("crew/b", True)
        assert entry.changes == {"status": "open", "load": 1}
        await flux.publish("crew/a", {"load": 8})
        left = await next_update(sub, "left")
        assert (left.entity_id, left.version) == ("crew/a", 2)


async def test_sdk_entity_cache_with_where_is_the_query(
    flux: FluxClient, http: httpx.AsyncClient
) -> None:
    async with EntityCache(flux, prefixes=["q/"], where=WHERE) as cache:
        await flux.publish("q/1", {"status": "open", "load": 2})
        await flux.publish("q/2", {"status": "open", "load": 9})
        await cache.wait_until(lambda entities: "q/1" in entities)
        await flux.publish("q/1", {"load": 6})
        await flux.publish("q/2", {"load": 3})
        await cache.wait_until(lambda entities: set(entities) == {"q/2"})
        reply = await http.get(
            "/api/state/entities", params={"prefix": "q/", "where": json.dumps(WHERE)}
        )
        expected: dict[str, Any] = {e["id"]: e["properties"] for e in reply.json()}
        assert {i: e.properties for i, e in cache.entities.items()} == expected
        assert cache.gaps == 0


async def test_sdk_list_entities_with_where(flux: FluxClient) -> None:
    for n in range(4):
        await flux.publish(f"l/{n}", {"n": n})
    page, cursor = await flux.list_entities("l/", where={"n": {"gte": 1}}, limit=2)
    assert [e.id for e in page] == ["l/1", "l/2"]
    page, cursor = await flux.list_entities("l/", where={"n": {"gte": 1}}, cursor=cursor)
    assert ([e.id for e in page], cursor) == (["l/3"], None)
