from __future__ import annotations

import httpx


async def test_publish_then_get_sees_the_new_state(http: httpx.AsyncClient) -> None:
    event = {
        "stream": "sensors",
        "source": "t",
        "payload": {"entity_id": "a/1", "properties": {"x": 1}},
    }
    reply = await http.post("/api/events", json=event)
    assert reply.status_code == 200
    got = await http.get("/api/state/entities/a%2F1")
    assert got.json()["properties"] == {"x": 1}
