"""Compare-and-set over REST (an extension: Flux clients never send ``if_version``)."""

from __future__ import annotations

import httpx

from .test_cli_client import flux


def _event(entity: str, if_version: object = None, **props: object) -> dict[str, object]:
    event: dict[str, object] = {
        "stream": "s",
        "source": "t",
        "payload": {"entity_id": entity, "properties": props},
    }
    if if_version is not None:
        event["if_version"] = if_version
    return event


async def test_publish_with_if_version_applies_only_at_that_version(
    http: httpx.AsyncClient,
) -> None:
    assert (await http.post("/api/events", json=_event("cas/1", 0, owner="a"))).status_code == 200
    refused = await http.post("/api/events", json=_event("cas/1", 0, owner="b"))
    assert (refused.status_code, refused.json()) == (
        409,
        {"error": "conflict: entity is at version 1", "code": "conflict", "version": 1},
    )
    assert (await http.post("/api/events", json=_event("cas/1", 1, owner="c"))).status_code == 200
    entity = (await http.get("/api/state/entities/cas%2F1")).json()
    assert (entity["version"], entity["properties"]) == (2, {"owner": "c"})


async def test_malformed_if_version_is_a_validation_error(http: httpx.AsyncClient) -> None:
    reply = await http.post("/api/events", json=_event("cas/2", -1, owner="a"))
    assert (reply.status_code, reply.json()) == (
        400,
        {"error": "if_version must be a non-negative integer, got -1", "code": "invalid_event"},
    )
    reply = await http.post("/api/events", json=_event("cas/2", "3", owner="a"))
    assert reply.json() == {
        "error": 'if_version must be a non-negative integer, got "3"',
        "code": "invalid_event",
    }


async def test_batch_reports_a_conflict_per_event(http: httpx.AsyncClient) -> None:
    events = [_event("cas/3", 0, v=1), _event("cas/3", 0, v=2), _event("cas/3", 1, v=3)]
    results = (await http.post("/api/events/batch", json={"events": events})).json()["results"]
    assert [r["error"] for r in results] == [None, "conflict: entity is at version 1", None]


async def test_cli_publish_if_version_exits_1_on_conflict(base_url: str) -> None:
    status, _, _ = await flux(
        base_url, "publish", "s", "cli", "cas/cli", '{"v": 1}', "--if-version", "0"
    )
    assert status == 0
    status, _, err = await flux(
        base_url, "publish", "s", "cli", "cas/cli", '{"v": 2}', "--if-version", "0"
    )
    assert status == 1 and "409: conflict: entity is at version 1" in err
