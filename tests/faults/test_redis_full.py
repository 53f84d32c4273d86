"""Redis out of memory (``maxmemory`` below what it holds, ``noeviction``): as a full
disk would, it refuses writes. Publishes get 503 ``unavailable`` naming the reason
(REST; a batch answers 200 with each event failed and the reason, as Flux's batch
does) or an ``unavailable`` result (native), never a 500; reads are still served;
once the limit is lifted, writes work again, and nothing refused was applied.
Reads here: REST entity, listing and history, native ``get`` and a snapshot
subscription, and ``/readyz`` (200: Redis answers).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from ..conftest import timeout
from ..native_client import Native
from .scenarios import ANSWER_BOUND, owned_hub


def _event(event_id: str, entity: str) -> dict[str, object]:
    return {
        "eventId": event_id,
        "stream": "faults",
        "source": "faults",
        "payload": {"entity_id": entity, "properties": {"n": 1}},
    }


async def test_full_redis_refuses_writes_clearly_and_serves_reads(
    tmp_path: Path, key_prefix: str
) -> None:
    async with owned_hub(tmp_path / "redis", key_prefix) as (hub, owned):
        base_url = f"http://127.0.0.1:{hub.port}"
        async with httpx.AsyncClient(base_url=base_url, timeout=timeout(30)) as http:
            assert (await http.post("/api/events", json=_event("a", "f/a"))).status_code == 200
            with owned.client() as client:
                client.config_set("maxmemory", "1")
            native = await Native.connect(f"ws://127.0.0.1:{hub.port}/api/ws")
            try:
                started = time.monotonic()
                refused = await http.post("/api/events", json=_event("b", "f/b"))
                assert time.monotonic() - started < ANSWER_BOUND
                assert refused.status_code == 503, refused.text
                assert refused.json()["code"] == "unavailable"
                assert "OOM" in refused.json()["error"], refused.text
                assert refused.headers["retry-after"]
                batch = await http.post("/api/events/batch", json={"events": [_event("c", "f/c")]})
                # A batch answers per event (Flux's shape): 200, the event failed.
                assert batch.status_code == 200, batch.text
                assert batch.json()["failed"] == 1, batch.text
                assert "OOM" in batch.json()["results"][0]["error"], batch.text
                ack = await native.request(
                    {"type": "publish", "events": [_event("d", "f/d")]}, "ack"
                )
                assert ack["results"][0]["error"]["code"] == "unavailable", ack

                # Reads are served.
                got = await http.get("/api/state/entities/f%2Fa")
                assert got.status_code == 200, got.text
                listed = await http.get("/api/state/entities", params={"prefix": "f/"})
                assert [e["id"] for e in listed.json()] == ["f/a"]
                history = await http.get("/api/events", params={"entity": "f/a"})
                assert history.status_code == 200, history.text
                reply = await native.request({"type": "get", "ids": ["f/a"]}, "entities")
                assert [e["id"] for e in reply["entities"]] == ["f/a"], reply
                await native.send(
                    {
                        "type": "subscribe",
                        "sub": "s",
                        "filter": {"prefixes": ["f/"]},
                        "snapshot": True,
                    }
                )
                snapshot = await native.recv_type("snapshot")
                assert [e["id"] for e in snapshot["entities"]] == ["f/a"], snapshot
                await native.recv_type("synced")
                assert (await http.get("/readyz")).status_code == 200

                with owned.client() as client:
                    client.config_set("maxmemory", "0")
                for event_id in "bcd":
                    again = await http.post("/api/events", json=_event(event_id, f"f/{event_id}"))
                    assert again.status_code == 200, again.text
                    assert again.json()["eventId"] == event_id
                ack = await native.request(
                    {"type": "publish", "events": [_event("d", "f/d")]}, "ack"
                )
                assert ack["results"][0]["status"] == "duplicate", ack
            finally:
                await native.close()
            listed = await http.get("/api/state/entities", params={"prefix": "f/"})
            assert {e["id"]: e["version"] for e in listed.json()} == {
                "f/a": 1,
                "f/b": 1,
                "f/c": 1,
                "f/d": 1,
            }
