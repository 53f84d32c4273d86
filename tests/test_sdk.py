"""The Python SDK (clients/python/flux_client) against real hubs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Literal

import pytest

from flux_client import (
    ConflictError,
    EntityCache,
    FluxClient,
    PublishError,
    SyncFluxClient,
    make_event,
)

from .conftest import timeout
from .native_client import rest_state
from .processes import HubProcess, free_port

ENCODINGS: list[Literal["msgpack", "json"]] = ["msgpack", "json"]


@pytest.fixture(params=ENCODINGS)
async def flux(request: pytest.FixtureRequest, base_url: str) -> AsyncIterator[FluxClient]:
    async with FluxClient(base_url, encoding=request.param, request_timeout=timeout(10)) as client:
        yield client


async def test_publish_is_acknowledged_and_a_retry_is_a_duplicate(flux: FluxClient) -> None:
    ack = await flux.publish("sdk/a", {"v": 1}, event_id="evt-1")
    assert (ack.event_id, ack.version, ack.duplicate) == ("evt-1", 1, False)
    again = await flux.publish("sdk/a", {"v": 2}, event_id="evt-1")
    assert again.duplicate and again.version == 1
    assert (await flux.get("sdk/a"))["sdk/a"].properties == {"v": 1}


async def test_if_version_conflict_raises_with_the_current_version(flux: FluxClient) -> None:
    await flux.publish("sdk/lock", {"owner": "a"}, if_version=0)
    with pytest.raises(ConflictError) as conflict:
        await flux.publish("sdk/lock", {"owner": "b"}, if_version=0)
    assert conflict.value.current == 1


async def test_publish_many_returns_one_result_per_event(flux: FluxClient) -> None:
    results = await flux.publish_many(
        [make_event("sdk/m1", {"v": 1}), {"stream": "BAD", "source": "s", "payload": {}}]
    )
    assert results[0].version == 1  # type: ignore[union-attr]
    assert isinstance(results[1], PublishError) and results[1].code == "invalid"


async def test_reads_list_history_and_delete(flux: FluxClient) -> None:
    for n in range(3):
        await flux.publish(f"sdk/l{n}", {"n": n})
    page, cursor = await flux.list_entities("sdk/l", limit=2)
    assert [e.id for e in page] == ["sdk/l0", "sdk/l1"] and cursor == "sdk/l1"
    rest, cursor = await flux.list_entities("sdk/l", limit=2, cursor=cursor)
    assert [e.id for e in rest] == ["sdk/l2"] and cursor is None
    await flux.publish("sdk/l0", {"n": 10})
    history = await flux.history("sdk/l0")
    assert [e["payload"]["properties"]["n"] for e in history] == [10, 0]
    await flux.delete("sdk/l0")
    assert await flux.get("sdk/l0") == {}


async def test_subscription_yields_snapshot_then_live_updates(flux: FluxClient) -> None:
    await flux.publish("sdk/s1", {"v": 1})
    async with await flux.subscribe(prefixes=["sdk/s"]) as updates:
        first = await anext(updates)
        assert first.kind == "snapshot" and first.entity is not None
        assert first.entity.properties == {"v": 1}
        assert (await anext(updates)).kind == "synced"
        await flux.publish("sdk/s1", {"v": 2})
        delta = await anext(updates)
        assert (delta.kind, delta.base, delta.version, delta.changes) == ("delta", 1, 2, {"v": 2})


async def test_entity_cache_follows_concurrent_publishers(flux: FluxClient, base_url: str) -> None:
    async with EntityCache(flux, prefixes=["sdk/c/"]) as cache:

        async def writer(n: int) -> None:
            async with FluxClient(base_url) as other:
                for k in range(100):
                    await other.publish(f"sdk/c/{k % 7}", {"w": n, "k": k})

        await asyncio.gather(*(writer(n) for n in range(3)))
        expected = await rest_state(base_url, "sdk/c/")
        await cache.wait_until(lambda _: cache.snapshot() == expected, within=timeout(10))
        assert cache.gaps == 0


async def test_sync_client_works_from_a_thread(base_url: str) -> None:
    def script() -> tuple[int, dict[str, object]]:
        with SyncFluxClient(base_url) as flux:
            ack = flux.publish("sdk/sync", {"ok": True})
            return ack.version, flux.get("sdk/sync")["sdk/sync"].properties

    version, properties = await asyncio.to_thread(script)
    assert version == 1 and properties == {"ok": True}


# ---------------------------------------------------------------------- a hub that dies


@pytest.fixture
async def hub_process(redis_url: str, key_prefix: str) -> AsyncIterator[HubProcess]:
    process = HubProcess(redis_url, key_prefix, free_port())
    yield process
    await process.stop()


@pytest.mark.slow
async def test_cache_and_publisher_come_through_a_hub_crash_exactly(
    hub_process: HubProcess,
) -> None:
    await hub_process.start()
    url = f"http://127.0.0.1:{hub_process.port}"
    total = 300
    async with (
        FluxClient(url, request_timeout=timeout(30), backoff=(0.05, 0.5)) as subscriber,
        FluxClient(url, request_timeout=timeout(30), backoff=(0.05, 0.5)) as publisher,
    ):
        async with EntityCache(subscriber, prefixes=["crash/"]) as cache:
            sent: list[str] = []
            a_third_sent = asyncio.Event()

            async def publish() -> None:
                for k in range(total):
                    event = make_event(f"crash/{k % 5}", {"k": k})
                    sent.append(event["eventId"])
                    if len(sent) == total // 3:
                        a_third_sent.set()
                    results = await publisher.publish_many([event], raise_on_error=True)
                    assert results[0].event_id == event["eventId"]

            publishing = asyncio.create_task(publish())
            await a_third_sent.wait()
            await hub_process.kill()  # mid-stream, without warning
            await asyncio.sleep(0.5)
            await hub_process.start()
            await asyncio.wait_for(publishing, timeout(60))

            expected = await rest_state(url, "crash/")
            await cache.wait_until(lambda _: cache.snapshot() == expected, within=timeout(20))
            assert cache.gaps == 0
            assert publisher.generation >= 2 and subscriber.generation >= 2

        # Every event applied exactly once: the event log holds each id once.
        ids: list[str] = []
        for n in range(5):
            ids += [e["eventId"] for e in await publisher.history(f"crash/{n}", limit=500)]
        assert sorted(ids) == sorted(sent)
        versions = {entity_id: version for entity_id, (version, _) in expected.items()}
        assert versions == {f"crash/{n}": total // 5 for n in range(5)}


async def test_client_that_cannot_connect_says_why_and_stops_trying() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = FluxClient(url, request_timeout=0.3)
    with pytest.raises(TimeoutError, match=r"within 0\.3 s \(last attempt: .*Connect call failed"):
        async with client:
            pass
    # The failed `async with` closed the client: no runner left reconnecting in the loop.
    assert client.closed


def test_sync_client_that_cannot_connect_says_why_and_stops_its_thread() -> None:
    def threads() -> int:
        return sum(t.name == "flux-sync" and t.is_alive() for t in threading.enumerate())

    before = threads()
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(TimeoutError, match=r"within 0\.3 s \(last attempt: "):
        SyncFluxClient(url, request_timeout=0.3)
    assert threads() == before
