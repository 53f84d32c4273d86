"""The streaming primitive (hub/transport/streaming.py) on a real socket: a producer's
chunks reach the client, the connection serves the next request after a body that
ended, the producer is cancelled when the client leaves or the hub shuts down (and may
say why last), a reader that stops reading is bounded and the stream stopped, and a
producer that drains waits for the reader instead."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import httpx
import pytest

from hub.transport.http import HttpConnection, Request, Response
from hub.transport.streaming import CLIENT_GONE, SHUTTING_DOWN, BodyWriter

from .attack import StubApp
from .conftest import timeout

Producer = Callable[[BodyWriter], Awaitable[None]]


class StreamApp(StubApp):
    """``GET /stream`` streams with the test's producer; anything else is ``{}``."""

    def __init__(self, producer: Producer) -> None:
        super().__init__()
        self.producer = producer
        self.connections: list[HttpConnection] = []

    async def handle(self, request: Request) -> Response:
        if request.path == "/stream":
            return Response(200, content_type=b"text/plain", producer=self.producer)
        return Response(200, b"{}")

    def connection_opened(self, conn: HttpConnection) -> str | None:
        self.connections.append(conn)
        return None


@contextlib.asynccontextmanager
async def serving(app: StreamApp) -> AsyncIterator[int]:
    server = await asyncio.get_running_loop().create_server(
        lambda: HttpConnection(app), "127.0.0.1", 0
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for conn in app.connections:
            conn.abort()
        await server.wait_closed()


async def test_chunks_reach_the_client_and_the_connection_serves_the_next_request() -> None:
    async def produce(body: BodyWriter) -> None:
        for i in range(3):
            assert body.write(b"part %d\n" % i)
            await body.drain()
            await asyncio.sleep(0.01)

    app = StreamApp(produce)
    async with serving(app) as port, httpx.AsyncClient() as client:
        url = f"http://127.0.0.1:{port}"
        async with client.stream("GET", f"{url}/stream") as reply:
            assert reply.headers["transfer-encoding"] == "chunked"
            assert [line async for line in reply.aiter_lines()] == [
                "part 0",
                "part 1",
                "part 2",
            ]
        # The same (kept-alive) connection answers the next request.
        assert (await client.get(f"{url}/other")).json() == {}
        assert len(app.connections) == 1


async def test_a_client_that_leaves_cancels_the_producer() -> None:
    seen: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    async def produce(body: BodyWriter) -> None:
        try:
            body.write(b"hello\n")
            await asyncio.sleep(3600)
        finally:
            seen.set_result(body.stop_reason)

    async with serving(StreamApp(produce)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        assert b"hello" in await reader.readuntil(b"hello\n")
        writer.close()
        assert await asyncio.wait_for(seen, timeout(5)) == CLIENT_GONE


async def test_shutdown_stops_the_producer_which_says_so_last() -> None:
    async def produce(body: BodyWriter) -> None:
        try:
            body.write(b"hello\n")
            await asyncio.sleep(3600)
        finally:
            if body.open:
                body.write(f"bye: {body.stop_reason}\n".encode())

    app = StreamApp(produce)
    async with serving(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        await reader.readuntil(b"hello\n")
        app.connections[0].shutdown()
        rest = await asyncio.wait_for(reader.read(), timeout(5))  # to EOF: it closed
        writer.close()
    assert f"bye: {SHUTTING_DOWN}\n".encode() in rest
    assert rest.endswith(b"\r\n0\r\n\r\n")  # the body ended properly


async def test_a_reader_that_stops_reading_is_bounded_and_stopped() -> None:
    chunk = b"x" * 65536
    outcome: asyncio.Future[tuple[str | None, int]] = asyncio.get_running_loop().create_future()

    async def produce(body: BodyWriter) -> None:
        body.max_buffer = 256 * 1024
        written = 0
        try:
            while body.write(chunk):  # never drains: a pushing producer
                written += len(chunk)
                await asyncio.sleep(0)
        finally:
            outcome.set_result((body.stop_reason, body.buffered))
        await asyncio.sleep(3600)

    async with serving(StreamApp(produce)) as port:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        try:
            reason, buffered = await asyncio.wait_for(outcome, timeout(10))
        finally:
            sock.close()
    assert reason is not None and reason.startswith("slow consumer: ")
    # The bound: max_buffer plus one write.
    assert buffered <= 256 * 1024 + len(chunk) + 64


async def test_a_producer_that_drains_waits_for_its_reader() -> None:
    chunk = b"y" * 16384
    progress: list[int] = []
    ended: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def produce(body: BodyWriter) -> None:
        body.set_buffer_limits(high=64 * 1024, low=16 * 1024)
        try:
            while True:
                body.write(chunk)
                progress.append(body.buffered)
                await body.drain()
        except BaseException as exc:
            ended.set_result(exc)
            raise

    async with serving(StreamApp(produce)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        await reader.readexactly(1024)
        transport = cast("asyncio.Transport", writer.transport)
        transport.pause_reading()  # the client stops reading
        await asyncio.sleep(0.5)
        stalled = len(progress)
        await asyncio.sleep(0.5)
        assert len(progress) == stalled  # waiting, not writing
        assert max(progress) <= 64 * 1024 + len(chunk) + 64
        transport.resume_reading()
        async with asyncio.timeout(timeout(10)):
            while len(progress) == stalled:  # going again once read
                await reader.read(1 << 20)
        writer.close()
        # The client left: the producer is cancelled at its next drain. (drain() once
        # returned at once while nothing paused: a producer writing into a closed
        # connection spun there and held the event loop until something killed it.)
        assert isinstance(await asyncio.wait_for(ended, timeout(10)), asyncio.CancelledError)


@pytest.mark.parametrize("method", ["HEAD"])
async def test_head_gets_the_head_only(method: str) -> None:
    async def produce(body: BodyWriter) -> None:
        raise AssertionError("not run for HEAD")

    async with serving(StreamApp(produce)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD /stream HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), timeout(5))
        writer.close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\n")


async def test_an_http_10_client_gets_the_body_as_it_is_until_the_close() -> None:
    async def produce(body: BodyWriter) -> None:
        body.write(b"part 1\n")
        await asyncio.sleep(0.01)
        body.write(b"part 2\n")

    async with serving(StreamApp(produce)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), timeout(5))  # to EOF: it closed
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding" not in head and b"content-length" not in head
    assert b"connection: close" in head
    assert body == b"part 1\npart 2\n"
