"""``/metrics`` counts what the bounds of docs/limits.md refuse, close or evict.

Each test reaches a bound with real sockets against a real hub, then reads the count
from ``GET /metrics`` as Prometheus would: unfinished request heads evicted at each
cap (408), connections refused at each cap (503, 429), and event streams ended by a
slow reader (``slow_consumer``) or by the reader leaving (``gone``).

Two client addresses come from the loopback network: 127.0.0.1 and 127.0.0.2 (Linux
routes all of 127.0.0.0/8 to ``lo``), so that the per-address caps and the hub's can
be told apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.typing import Subprotocol

from hub.app import Hub
from hub.store import Store
from hub.transport.heads import OLDEST_OF_ADDRESS, OLDEST_ON_HUB
from hub.transport.ws import CLOSE_TIMEOUT

from .attack import status_and_body
from .conftest import make_settings, running_hub, timeout

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]

#: The first bytes of a request head that never ends.
BEGUN = b"GET /healthz HTTP/1.1\r\nhost: x\r\n"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _metric(port: int, name: str, **labels: str) -> float:
    """One sample of ``GET /metrics``."""
    async with httpx.AsyncClient(timeout=timeout(10)) as http:
        reply = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert reply.status_code == 200, reply.text
    return _samples(reply.text)[(name, tuple(sorted(labels.items())))]


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition``: the hub's side of a socket has no event to wait on."""
    deadline = time.monotonic() + timeout(10)
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _sockets() -> AsyncIterator[Callable[[int, str], Awaitable[Connection]]]:
    """``open(port, source)``: a connection from ``source``; all closed at the end."""
    opened: list[asyncio.StreamWriter] = []

    async def open_(port: int, source: str) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        opened.append(writer)
        return reader, writer

    try:
        yield open_
    finally:
        for writer in opened:
            writer.close()


async def test_metrics_count_heads_evicted_at_each_cap(store: Store, key_prefix: str) -> None:
    gateway = {"max_unfinished_heads": 3, "max_unfinished_heads_per_client": 2}
    async with (
        running_hub(make_settings(key_prefix, gateway=gateway), store) as hub,
        _sockets() as connect,
    ):
        heads = hub.gateway.heads
        streams = []

        def begun() -> int:
            return heads.evicted + len(heads)

        # 127.0.0.1 begins three heads (its cap is 2: its oldest goes), then
        # 127.0.0.2 two (the hub's cap is 3: the oldest on the hub goes).
        for source in ["127.0.0.1"] * 3 + ["127.0.0.2"] * 2:
            reader, writer = await connect(hub.port, source)
            before = begun()
            writer.write(BEGUN)
            await _until(lambda: begun() > before, "head not begun")  # noqa: B023
            streams.append(reader)
        first, second = streams[0], streams[1]
        for reader, message in [(first, OLDEST_OF_ADDRESS), (second, OLDEST_ON_HUB)]:
            answer = await asyncio.wait_for(reader.read(), timeout(10))
            assert status_and_body(answer) == (
                408,
                {"error": message, "code": "request_timeout"},
            ), answer
        assert len(heads) == 3
        name = "flux_request_heads_evicted_total"
        assert await _metric(hub.port, name, cap="client") == 1
        assert await _metric(hub.port, name, cap="hub") == 1


async def test_metrics_count_connections_refused_at_each_cap(store: Store, key_prefix: str) -> None:
    gateway = {"max_connections": 3, "max_connections_per_client": 2}
    async with running_hub(make_settings(key_prefix, gateway=gateway), store) as hub:
        seen = hub.gateway

        def handled() -> int:
            return len(seen.connections) + sum(seen.refused.values())

        answers: list[bytes] = []
        async with _sockets() as connect:
            # Two from 127.0.0.1, then its third (its cap: 429); one from 127.0.0.2
            # fills the hub (3), and its next is refused at the hub's cap (503).
            for source in ["127.0.0.1"] * 3 + ["127.0.0.2"] * 2:
                before = handled()
                reader, _ = await connect(hub.port, source)
                await _until(lambda: handled() > before, "connection not seen")  # noqa: B023
                if len(answers) < sum(seen.refused.values()):
                    answers.append(await asyncio.wait_for(reader.read(), timeout(10)))
        assert [status_and_body(a)[0] for a in answers] == [429, 503]
        await _until(lambda: not seen.connections, "the idle connections stayed")
        name = "flux_connections_refused_total"
        assert await _metric(hub.port, name, cap="client") == 1
        assert await _metric(hub.port, name, cap="hub") == 1


# ---------------------------------------------------------------- event streams

#: A stalled reader's socket receives into 4 KiB (the kernel doubles it), and the hub's
#: side of it sends from 16 KiB: its own buffer then fills as over a stalled network
#: (tests/faults/stall.py explains the sizes).
RECEIVE_BUFFER = 4096
SEND_BUFFER = 16 * 1024
SMALL_BOUNDS = {
    "conflate_after_bytes": 16 * 1024,
    "max_pending_entities": 1,
    "max_send_buffer_bytes": 64 * 1024,
}


async def stalled_reader(port: int, request: bytes, until: bytes) -> socket.socket:
    """A connection that sends ``request``, reads until ``until`` has come, then stops
    reading; its receive buffer is small (:data:`RECEIVE_BUFFER`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, request)
    got = b""
    while until not in got:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout(10))
        assert chunk, got
        got += chunk
    return sock


def shrink_hub_side(hub: Hub, client: socket.socket) -> None:
    """Give the hub's side of ``client``'s connection a small kernel send buffer."""
    port = client.getsockname()[1]
    (conn,) = [c for c in hub.gateway.connections if c.client == f"127.0.0.1:{port}"]
    assert conn.transport is not None
    conn.transport.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER
    )


async def publish_until(port: int, prefix: str, done: Callable[[], bool]) -> int:
    """Batches of 100 events, 100 entities each with a 200-byte value, until ``done``.
    Returns the events published."""
    published = 0
    deadline = time.monotonic() + timeout(20)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=timeout(10)) as http:
        while not done():
            assert time.monotonic() < deadline, f"not done after {published} events"
            events = [
                {
                    "stream": "s",
                    "source": "t",
                    "payload": {
                        "entity_id": f"{prefix}{n}",
                        "properties": {"v": f"{published:0200}"},
                    },
                }
                for n in range(100)
            ]
            reply = await http.post("/api/events/batch", json={"events": events})
            assert reply.status_code == 200, reply.text
            published += len(events)
            await asyncio.sleep(0.02)
    return published


async def test_metrics_count_event_streams_ended_slow_or_gone(
    store: Store, key_prefix: str
) -> None:
    settings = make_settings(key_prefix, fanout=SMALL_BOUNDS)
    async with running_hub(settings, store) as hub:
        streams = hub.streams

        def ended(code: str) -> int:
            return streams.closes[code]

        request = b"GET /api/stream?prefixes=slow/&snapshot=false HTTP/1.1\r\nhost: x\r\n\r\n"
        reader = await stalled_reader(hub.port, request, b"event: subscribed")
        try:
            shrink_hub_side(hub, reader)
            await publish_until(hub.port, "slow/", lambda: ended("slow_consumer") > 0)
        finally:
            reader.close()
        # A reader that leaves: its stream ends as "gone".
        async with (
            httpx.AsyncClient(timeout=timeout(10)) as http,
            http.stream("GET", f"http://127.0.0.1:{hub.port}/api/stream?prefixes=x/") as stream,
        ):
            async for line in stream.aiter_lines():
                if line == "event: subscribed":
                    break
        await _until(lambda: ended("gone") == 1, "the stream did not end")
        name = "flux_sse_closes_total"
        assert await _metric(hub.port, name, code="slow_consumer") == 1
        assert await _metric(hub.port, name, code="gone") == 1


# ---------------------------------------------------------------- a native slow consumer

#: Seconds the slow client stays stalled after the hub closed its connection: more
#: than a prompt close's grace (``ws.CLOSE_TIMEOUT``, 5 s), less than a 1013's (30 s).
#: Not scaled: it is measured against the hub's own constants.
STALLED_AFTER_CLOSE = CLOSE_TIMEOUT + 1


@pytest.mark.slow
async def test_slow_native_client_reads_its_1013_after_seconds_and_it_is_counted(
    store: Store, key_prefix: str
) -> None:
    settings = make_settings(key_prefix, fanout=SMALL_BOUNDS)
    async with running_hub(settings, store) as hub:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", hub.port))
        # max_queue=1: with one message waiting, the client stops reading its socket.
        async with websockets.connect(
            f"ws://127.0.0.1:{hub.port}/api/ws",
            sock=sock,
            subprotocols=[Subprotocol("flux.v1")],
            max_queue=1,
        ) as ws:
            await ws.send(
                json.dumps({"type": "subscribe", "sub": "s", "filter": {"prefixes": ["n/"]}})
            )
            assert json.loads(await ws.recv())["type"] == "subscribed"
            (session,) = hub.gateway.native_sessions
            shrink_hub_side(hub, sock)
            # It reads nothing now: its merged deltas pass the bound (1), the hub
            # closes with 1013, and it goes on reading nothing for a while.
            await publish_until(hub.port, "n/", lambda: not session.ws.open)
            await asyncio.sleep(STALLED_AFTER_CLOSE)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), timeout(10))
        assert closed.value.rcvd is not None, "cut before the client read the close frame"
        assert closed.value.rcvd.code == 1013
        assert closed.value.rcvd.reason.startswith("slow consumer: more than 1 entities pending")
        await _until(lambda: not hub.gateway.websockets, "the connection stayed")
        assert await _metric(hub.port, "flux_ws_closes_total", code="1013") == 1
