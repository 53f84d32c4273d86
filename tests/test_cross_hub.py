"""Hubs as separate ``flux serve`` processes on one Redis (docs/scaling.md, "Many hubs").

Publish on hub A, the live delta arrives on hub B; a subscriber on B, behind a
fail-over TCP balancer (what nginx's ``proxy_next_upstream`` does), resumes on hub C
when B is killed with ``-9``, from its cursor, missing nothing and reading no
snapshot again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import pytest

from flux_client import EntityCache, FluxClient

from .conftest import timeout
from .native_client import rest_state
from .processes import HubProcess, free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from flux_client.model import Update


class FailoverBalancer:
    """A TCP balancer on 127.0.0.1: each connection goes to the first backend port
    that accepts it, bytes copied both ways until either side closes."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.server: asyncio.Server | None = None
        self.routed: list[int] = []
        self.writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> FailoverBalancer:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for port in self.backends:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            self.routed.append(port)
            self.writers |= {writer, up_writer}
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            return
        writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


class CountingCache(EntityCache):
    """An EntityCache that counts the resets (snapshots read again) it was sent."""

    resets = 0

    def apply(self, update: Update) -> None:
        self.resets += update.kind == "reset"
        super().apply(update)


@pytest.fixture
async def hubs(redis_url: str, key_prefix: str) -> AsyncIterator[list[HubProcess]]:
    started = [HubProcess(redis_url, key_prefix, free_port()) for _ in range(3)]
    try:
        await asyncio.gather(*(hub.start() for hub in started))
        yield started
    finally:
        for hub in started:
            await hub.stop()


@pytest.mark.slow
async def test_publish_on_a_delta_on_b_and_resume_on_c_after_b_is_killed(
    hubs: list[HubProcess],
) -> None:
    a, b, c = hubs
    options = {"request_timeout": timeout(30), "backoff": (0.05, 0.3)}
    async with (
        FailoverBalancer([b.port, c.port]) as balancer,
        FluxClient(f"http://127.0.0.1:{a.port}", **options) as publisher,  # type: ignore[arg-type]
        FluxClient(balancer.url, **options) as subscriber,  # type: ignore[arg-type]
    ):
        cache = CountingCache(subscriber, prefixes=["xhub/"])
        await cache.start()
        try:
            await _follow(a, b, c, balancer, publisher, subscriber, cache)
        finally:
            await cache.close()


async def _follow(
    a: HubProcess,
    b: HubProcess,
    c: HubProcess,
    balancer: FailoverBalancer,
    publisher: FluxClient,
    subscriber: FluxClient,
    cache: CountingCache,
) -> None:
    await cache.wait_until(lambda _: cache.synced, within=timeout(10))
    assert balancer.routed == [b.port]

    # Hub A's publish reaches the subscriber on hub B, live.
    sent = time.monotonic()
    await publisher.publish("xhub/first", {"on": "a"})
    await cache.wait_until(lambda e: "xhub/first" in e, within=timeout(5))
    delay = time.monotonic() - sent
    assert cache.entities["xhub/first"].properties == {"on": "a"}
    assert delay < timeout(2), delay

    stop = asyncio.Event()
    published = 0

    async def publish() -> None:
        nonlocal published
        while not stop.is_set():
            await publisher.publish(f"xhub/{published % 20}", {"n": published})
            published += 1

    publishing = asyncio.create_task(publish())
    while published < 100:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await b.kill()  # -9: no close frame, no goodbye
    at_kill = published
    while published < at_kill + 300:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(publishing, timeout(30))

    expected = await rest_state(f"http://127.0.0.1:{c.port}", "xhub/")
    await cache.wait_until(lambda _: cache.snapshot() == expected, within=timeout(20))
    assert balancer.routed[-1] == c.port and subscriber.generation >= 2
    assert cache.gaps == 0
    assert cache.resets == 0  # resumed from its cursor, not from a new snapshot
    assert sum(version for version, _ in expected.values()) == published + 1
