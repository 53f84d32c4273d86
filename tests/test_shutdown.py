"""Graceful shutdown of a real ``flux serve`` process (docs/scaling.md, "Shutting down").

On SIGTERM: ``/readyz`` answers 503 for ``FLUX_SHUTDOWN_DRAIN_SECONDS`` while
everything else is still served; then the listener closes, what is in flight is
finished and acknowledged, WebSockets close with 1001; the SDK resumes on the next hub
with nothing missed, and its unacknowledged publishes land exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets

from flux_client import EntityCache, FluxClient, make_event
from hub.config import Settings
from hub.errors import ConfigError
from hub.store import Store

from .conftest import running_hub, timeout
from .faults.scenarios import OwnedRedis
from .native_client import Native, event, rest_state
from .processes import HubProcess, free_port


async def _ready(url: str) -> int:
    async with httpx.AsyncClient(timeout=timeout(5)) as http:
        return (await http.get(f"{url}/readyz")).status_code


@pytest.mark.slow
async def test_sigterm_drains_finishes_in_flight_work_and_the_sdk_resumes_on_the_next_hub(
    redis_url: str, key_prefix: str
) -> None:
    port = free_port()
    env = {"FLUX_SHUTDOWN_DRAIN_SECONDS": "1.5"}
    first, second = (HubProcess(redis_url, key_prefix, port, env) for _ in range(2))
    url = f"http://127.0.0.1:{port}"
    await first.start()
    try:
        await _run_the_stream(first, second, url)
    finally:
        await first.stop()
        await second.stop()


async def _run_the_stream(first: HubProcess, second: HubProcess, url: str) -> None:
    sdk_acked: dict[int, float] = {}  # event number -> when its ack came
    rest_acked: dict[int, float] = {}
    duplicates: list[int] = []
    stop = asyncio.Event()
    client_options = {"request_timeout": timeout(60), "backoff": (0.05, 0.3)}
    async with (
        FluxClient(url, **client_options) as subscriber,  # type: ignore[arg-type]
        FluxClient(url, **client_options) as publisher,  # type: ignore[arg-type]
        EntityCache(subscriber, prefixes=["drain/"]) as cache,
        websockets.connect(url.replace("http", "ws") + "/api/ws") as raw,
        httpx.AsyncClient(base_url=url, timeout=timeout(10)) as http,
    ):

        async def sdk_lane(lane: int) -> None:
            n = lane
            while not stop.is_set():
                ack = await publisher.publish(f"drain/sdk{n}", {"n": n})
                sdk_acked[n] = time.monotonic()
                if ack.duplicate:  # sent again after a reconnect: its ack was lost
                    duplicates.append(n)
                n += 8

        async def rest_lane() -> None:
            n = 0
            while not stop.is_set():
                event = make_event(f"drain/rest{n}", {"n": n})
                try:
                    reply = await http.post("/api/events", json=event)
                except httpx.TransportError:
                    await asyncio.sleep(0.05)  # no hub listens for a moment
                else:
                    if reply.status_code == 200:
                        rest_acked[n] = time.monotonic()
                n += 1

        lanes = [asyncio.create_task(sdk_lane(k)) for k in range(8)]
        rest = asyncio.create_task(rest_lane())
        while len(sdk_acked) < 100:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

        assert first.process is not None
        first.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # The drain: /readyz says 503 once the signal is handled (a moment: the hub's
        # loop may be busy), then throughout; everything else is still served.
        while await _ready(url) == 200:
            assert time.monotonic() - signalled < timeout(1), "no 503 after SIGTERM"
            await asyncio.sleep(0.005)
        statuses = []
        while time.monotonic() - signalled < 1.0:
            statuses.append(await _ready(url))
            await asyncio.sleep(0.05)
        assert set(statuses) <= {503}, statuses
        during = len(sdk_acked)
        await asyncio.sleep(0.2)
        assert len(sdk_acked) > during, "publishes are still served during the drain"

        await asyncio.wait_for(first.process.wait(), timeout(20))
        assert first.process.returncode == 0
        stopped = time.monotonic()
        # A WebSocket is closed with 1001 (going away), after the drain.
        with pytest.raises(websockets.ConnectionClosed):
            while True:  # metrics_update frames, then the close
                await asyncio.wait_for(raw.recv(), timeout(5))
        assert raw.close_code == 1001
        assert stopped - signalled >= 1.5

        await second.start()  # the next hub, on the same port and the same Redis
        while len(sdk_acked) < during + 300:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*lanes, rest), timeout(60))
        assert publisher.generation >= 2
        # Every acknowledged publish is in Redis exactly once (version 1: a retry of
        # one that was applied but not acknowledged is a duplicate, not a second write).
        expected = await rest_state(url, "drain/")
        landed = {entity_id: version for entity_id, (version, _) in expected.items()}
        for n in sdk_acked:
            assert landed.get(f"drain/sdk{n}") == 1, n
        for n in rest_acked:
            assert landed.get(f"drain/rest{n}") == 1, n
        assert set(landed.values()) == {1}
        # Publishes in flight at the close were acknowledged before it: none was
        # applied and then sent again (which the SDK would see as a duplicate).
        assert duplicates == []
        before_close = [n for n, t in sdk_acked.items() if t < stopped]
        assert len(before_close) >= 100
        # The subscriber resumed on the second hub and missed nothing.
        await cache.wait_until(lambda _: cache.snapshot() == expected, within=timeout(20))
        assert cache.gaps == 0
        assert subscriber.generation >= 2


@pytest.mark.slow
async def test_publishes_waiting_on_a_stalled_redis_at_sigterm_are_acknowledged_before_1001(
    tmp_path: Path, key_prefix: str
) -> None:
    # Redis can hold writes for seconds (an append-only file's fsync behind on a busy
    # disk); publishes read before the SIGTERM are still answered before the close, or
    # a client would send them again to the next hub and see them as duplicates.
    owned = OwnedRedis(tmp_path / "redis")
    owned.start()
    port = free_port()
    hub = HubProcess(owned.url, key_prefix, port, {})
    try:
        await hub.start()
        client = await Native.connect(f"ws://127.0.0.1:{port}/api/ws")
        assert (await client.publish(event("stall/warm", n=0)))[0]["status"] == "ok"
        owned.pause()
        refs = list(range(1, 5))
        for ref in refs:
            await client.send({"type": "publish", "ref": ref, "events": [event(f"stall/{ref}")]})
        await asyncio.sleep(0.3)  # read by the hub, waiting on Redis
        assert hub.process is not None
        hub.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(3.0)  # longer than the close's own grace (SHUTDOWN_GRACE)
        owned.resume()
        acked = []
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                frame = await client.recv(wait=20)
                if frame["type"] == "ack":
                    assert [r["status"] for r in frame["results"]] == ["ok"], frame
                    acked.append(frame["ref"])
        assert acked == refs
        assert client.ws.close_code == 1001
        assert await asyncio.wait_for(hub.process.wait(), timeout(20)) == 0
    finally:
        await hub.stop()
        owned.stop()


def test_the_drain_setting_is_checked() -> None:
    assert Settings.from_env({}).gateway.shutdown_drain_seconds == 0
    drain = Settings.from_env({"FLUX_SHUTDOWN_DRAIN_SECONDS": "2.5"}).gateway
    assert drain.shutdown_drain_seconds == 2.5
    for bad in ("-1", "soon", "3601"):
        with pytest.raises(ConfigError, match="FLUX_SHUTDOWN_DRAIN_SECONDS"):
            Settings.from_env({"FLUX_SHUTDOWN_DRAIN_SECONDS": bad})


async def test_sigint_and_a_second_signal_skip_the_drain(redis_url: str, key_prefix: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    hub = HubProcess(redis_url, key_prefix, port, {"FLUX_SHUTDOWN_DRAIN_SECONDS": "60"})
    await hub.start()
    assert hub.process is not None
    try:
        assert await _ready(url) == 200
        hub.process.send_signal(signal.SIGTERM)
        while await _ready(url) != 503:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        began = time.monotonic()
        hub.process.send_signal(signal.SIGTERM)  # again: stop now, not in 60 s
        await asyncio.wait_for(hub.process.wait(), timeout(20))
        assert time.monotonic() - began < 20

        await hub.start()
        assert await _ready(url) == 200
        began = time.monotonic()
        hub.process.send_signal(signal.SIGINT)  # Ctrl-C: no drain
        await asyncio.wait_for(hub.process.wait(), timeout(20))
        assert hub.process.returncode == 0
        assert time.monotonic() - began < 20
    finally:
        await hub.stop()


async def test_a_lone_hub_stops_its_embedded_redis_last(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "serve.log"
    args = [sys.executable, "-m", "hub.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--data-dir", str(tmp_path / "data"), "--log-level", "info"]
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(*args, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + timeout(60)
        while True:
            with contextlib.suppress(httpx.TransportError):
                if await _ready(f"http://127.0.0.1:{port}") == 200:
                    break
            assert time.monotonic() < deadline and process.returncode is None, "no start"
            await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout(30)) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = log_path.read_text()
    redis_pid = int(re.findall(r"embedded Redis started: pid (\d+)", text)[0])
    order = ["SIGTERM received: shutting down", "hub.gateway: stopped", "embedded Redis stopped"]
    places = [text.index(line) for line in order]
    assert places == sorted(places), text
    with pytest.raises(ProcessLookupError):
        os.kill(redis_pid, 0)


async def test_a_request_being_handled_at_shutdown_is_answered_then_closed(
    settings: Settings, store: Store
) -> None:
    events = [make_event(f"inflight/{n}", {"n": n}) for n in range(5000)]
    async with running_hub(settings, store) as hub:
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}", timeout=timeout(30))
        request = asyncio.create_task(http.post("/api/events/batch", json={"events": events}))
        while not any(conn._busy for conn in hub.gateway.connections):
            assert not request.done(), f"answered before the shutdown: {request.result()}"
            await asyncio.sleep(0.001)
        # Leaving the block shuts the hub down while the batch is being handled.
    try:
        reply = await request
    finally:
        await http.aclose()
    assert reply.status_code == 200
    assert reply.headers["connection"] == "close"
    assert (reply.json()["successful"], reply.json()["failed"]) == (5000, 0)
    assert await store.get("inflight/4999") is not None
