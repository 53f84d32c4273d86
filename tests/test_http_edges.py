"""The HTTP layer at its bounds, over raw sockets: what misbehaving clients get."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from hub.app import Hub
from hub.store import Store

from .conftest import make_settings, running_hub, timeout


async def _exchange(port: int, data: bytes, *, read_all: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if read_all:
            return await asyncio.wait_for(reader.read(), timeout(10))
        return await asyncio.wait_for(reader.read(65536), timeout(10))
    finally:
        writer.close()


def _status_and_body(response: bytes) -> tuple[int, Any]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else None


def _event_body(size: int = 0) -> bytes:
    event = {
        "stream": "t",
        "source": "s",
        "payload": {"entity_id": "e", "properties": {"v": "x" * size}},
    }
    return json.dumps(event).encode()


async def test_body_over_the_limit_is_refused_from_its_content_length(hub: Hub) -> None:
    limit = hub.runtime.values.body_size_limit_single_bytes
    head = b"POST /api/events HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % (limit + 1)
    # The hub answers before any of the body is sent.
    status, body = _status_and_body(await _exchange(hub.port, head))
    assert (status, body) == (413, {"error": "payload too large"})


async def test_chunked_body_over_the_limit_is_refused(hub: Hub) -> None:
    limit = hub.runtime.values.body_size_limit_single_bytes
    chunk = b"x" * 65536
    head = b"POST /api/events HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    chunks = [b"%x\r\n%b\r\n" % (len(chunk), chunk)] * (limit // len(chunk) + 2)
    parts = [head, *chunks, b"0\r\n\r\n"]
    status, body = _status_and_body(await _exchange(hub.port, b"".join(parts)))
    assert (status, body) == (413, {"error": "payload too large"})


async def test_expect_100_continue_is_answered_before_the_body(hub: Hub) -> None:
    body = _event_body(2000)
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    try:
        writer.write(
            b"POST /api/events HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
            b"content-length: %d\r\n\r\n" % len(body)
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout(5))
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(body)
        final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout(5))
        assert final.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


async def test_malformed_request_gets_400_json(hub: Hub) -> None:
    status, body = _status_and_body(await _exchange(hub.port, b"NOT HTTP AT ALL\r\n\r\n"))
    assert status == 400
    assert body["error"].startswith("malformed HTTP request")


async def test_oversized_head_gets_431(hub: Hub) -> None:
    request = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n"
    status, body = _status_and_body(await _exchange(hub.port, request))
    assert (status, body) == (431, {"error": "request head too large"})


async def test_pipelined_requests_are_answered_in_order(hub: Hub) -> None:
    requests = (
        b"".join(b"GET /api/state/entities/n%d HTTP/1.1\r\nhost: x\r\n\r\n" % n for n in range(5))
        + b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    response = await _exchange(hub.port, requests)
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", response)]
    assert statuses == [404] * 5 + [200]
    assert response.endswith(b'{"status":"ok"}')


async def test_keep_alive_connection_serves_many_requests(hub: Hub) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    try:
        for _ in range(3):
            body = _event_body()
            writer.write(
                b"POST /api/events HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%b"
                % (len(body), body)
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout(5))
            assert head.startswith(b"HTTP/1.1 200")
            length = int(
                next(
                    h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
                ).split(b":")[1]
            )
            await reader.readexactly(length)
    finally:
        writer.close()


async def test_http_1_0_request_is_answered_and_closed(hub: Hub) -> None:
    response = await _exchange(hub.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200")
    assert b"connection: close" in response


async def test_client_that_stops_mid_request_gets_408(store: Store, key_prefix: str) -> None:
    settings = make_settings(key_prefix, gateway={"request_timeout": 0.3})
    async with running_hub(settings, store) as hub:
        response = await _exchange(
            hub.port, b"POST /api/events HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n{"
        )
    status, body = _status_and_body(response)
    assert (status, body) == (408, {"error": "request timed out"})


async def test_idle_keep_alive_connection_is_closed(store: Store, key_prefix: str) -> None:
    settings = make_settings(key_prefix, gateway={"keepalive_timeout": 0.3})
    async with running_hub(settings, store) as hub:
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
        try:
            # Nothing sent: the hub hangs up after the keep-alive timeout.
            assert await asyncio.wait_for(reader.read(), timeout(5)) == b""
        finally:
            writer.close()


async def test_connections_past_the_limit_get_503(store: Store, key_prefix: str) -> None:
    settings = make_settings(key_prefix, gateway={"max_connections": 2})
    async with running_hub(settings, store) as hub:
        held = [await asyncio.open_connection("127.0.0.1", hub.port) for _ in range(2)]
        try:
            await asyncio.sleep(0.05)
            status, body = _status_and_body(await _exchange(hub.port, b""))
            assert status == 503
            assert "too many connections" in body["error"]
        finally:
            for _, writer in held:
                writer.close()
        # Once they are gone, new connections are served again.
        await asyncio.sleep(0.1)
        response = await _exchange(hub.port, b"GET /healthz HTTP/1.1\r\nconnection: close\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 200")


async def test_client_that_half_closes_after_its_request_still_gets_the_answer(hub: Hub) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        writer.write_eof()
        response = await asyncio.wait_for(reader.read(), timeout(5))
    finally:
        writer.close()
    assert response.startswith(b"HTTP/1.1 200")
    assert response.endswith(b'{"status":"ok"}')


async def test_refused_upload_is_read_to_the_end_so_the_client_sees_the_413(hub: Hub) -> None:
    # A client that sends its whole body before reading must get the answer, not a reset.
    limit = hub.runtime.values.body_size_limit_single_bytes
    body = b"x" * (limit + 500_000)
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    try:
        writer.write(
            b"POST /api/events HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body)
        )
        writer.write(body)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout(10))
    finally:
        writer.close()
    assert _status_and_body(response) == (413, {"error": "payload too large"})


async def test_dashboard_files_are_revalidated_by_etag(hub: Hub) -> None:
    first = await _exchange(
        hub.port, b"GET /static/flux-client.js HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    head = first.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 200") and "cache-control: no-cache" in head
    etag = next(line.split(": ", 1)[1] for line in head.split("\r\n") if line.startswith("etag:"))
    again = await _exchange(
        hub.port,
        b"GET /static/flux-client.js HTTP/1.1\r\nhost: x\r\nif-none-match: %b\r\nconnection: close\r\n\r\n"
        % etag.encode(),
    )
    assert again.startswith(b"HTTP/1.1 304 Not Modified") and again.endswith(b"\r\n\r\n")
