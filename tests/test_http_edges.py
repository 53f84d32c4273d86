"""The HTTP layer at its bounds, over raw sockets: what misbehaving clients get."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from hub.app import Hub
from hub.store import Store
from hub.transport.http import HttpConnection, Request, Response

from .attack import StubApp
from .attack import exchange as _exchange
from .attack import status_and_body as _status_and_body
from .conftest import make_settings, running_hub, timeout


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
    assert (status, body) == (413, {"error": "payload too large", "code": "payload_too_large"})


async def test_chunked_body_over_the_limit_is_refused(hub: Hub) -> None:
    limit = hub.runtime.values.body_size_limit_single_bytes
    chunk = b"x" * 65536
    head = b"POST /api/events HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    chunks = [b"%x\r\n%b\r\n" % (len(chunk), chunk)] * (limit // len(chunk) + 2)
    parts = [head, *chunks, b"0\r\n\r\n"]
    status, body = _status_and_body(await _exchange(hub.port, b"".join(parts)))
    assert (status, body) == (413, {"error": "payload too large", "code": "payload_too_large"})


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
    assert (status, body) == (
        431,
        {"error": "request head too large", "code": "header_fields_too_large"},
    )


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
    assert (status, body) == (408, {"error": "request timed out", "code": "request_timeout"})


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
    assert _status_and_body(response) == (
        413,
        {"error": "payload too large", "code": "payload_too_large"},
    )


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


async def _assert_healthy(hub: Hub) -> None:
    healthz = await _exchange(hub.port, b"GET /healthz HTTP/1.1\r\nconnection: close\r\n\r\n")
    assert healthz.startswith(b"HTTP/1.1 200") and healthz.endswith(b'{"status":"ok"}')


async def _refused_then_healthy(hub: Hub, request: bytes) -> tuple[int, Any]:
    """The hub's answer to ``request``, after checking it still serves the next client."""
    answer = _status_and_body(await _exchange(hub.port, request))
    await _assert_healthy(hub)
    return answer


async def test_too_many_header_fields_get_431(hub: Hub) -> None:
    fields = b"".join(b"x-%d: v\r\n" % i for i in range(101))
    answer = await _refused_then_healthy(hub, b"GET /healthz HTTP/1.1\r\n" + fields + b"\r\n")
    assert answer == (
        431,
        {"error": "too many header fields: more than 100", "code": "header_fields_too_large"},
    )


async def test_endless_head_gets_431_before_it_ends(hub: Hub) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nx-endless: " + b"a" * 200_000)
        await writer.drain()
        # The head never ends: the hub answers anyway, and hangs up.
        response = await asyncio.wait_for(reader.read(), timeout(10))
    finally:
        writer.close()
    assert _status_and_body(response) == (
        431,
        {"error": "request head too large", "code": "header_fields_too_large"},
    )
    await _assert_healthy(hub)


@pytest.mark.parametrize(
    "field",
    [b"Host: h", b"Authorization: Bearer x", b"Content-Length: 2", b"Transfer-Encoding: gzip"],
)
async def test_repeated_identity_or_framing_field_gets_400_naming_it(
    hub: Hub, field: bytes
) -> None:
    last = b"Transfer-Encoding: chunked" if field.startswith(b"Transfer") else field
    request = b"POST /api/events HTTP/1.1\r\n%b\r\n%b\r\n\r\n{}" % (field, last)
    status, body = await _refused_then_healthy(hub, request)
    name = field.split(b":")[0].decode()
    assert (status, body) == (
        400,
        {"error": f"malformed HTTP request: repeated {name} header", "code": "bad_request"},
    )


async def test_content_length_with_transfer_encoding_gets_400(hub: Hub) -> None:
    request = (
        b"POST /api/events HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
        b"content-length: 5\r\n\r\n0\r\n\r\n"
    )
    answer = await _refused_then_healthy(hub, request)
    assert answer == (
        400,
        {
            "error": "malformed HTTP request: Content-Length and Transfer-Encoding together",
            "code": "bad_request",
        },
    )


@pytest.mark.parametrize(
    "chunk", [b"zz\r\n{}\r\n", b"2 \r\n{}\r\n", b"2\n{}\r\n", b"fffffffffffffffff\r\n"]
)
async def test_invalid_chunk_framing_gets_400(hub: Hub, chunk: bytes) -> None:
    request = b"POST /api/events HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" + chunk
    status, body = await _refused_then_healthy(hub, request)
    assert status == 400 and body["error"].startswith("malformed HTTP request: ")


async def test_obsolete_line_folding_gets_400(hub: Hub) -> None:
    request = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-a: a\r\n folded\r\n\r\n"
    status, body = await _refused_then_healthy(hub, request)
    assert status == 400 and body["error"].startswith("malformed HTTP request: ")


async def test_unsupported_transfer_coding_gets_501(hub: Hub) -> None:
    request = b"POST /api/events HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n"
    answer = await _refused_then_healthy(hub, request)
    assert answer == (
        501,
        {
            "error": "Transfer-Encoding 'gzip, chunked' is not supported: use chunked",
            "code": "not_implemented",
        },
    )


async def test_head_request_gets_the_head_of_the_get_answer(hub: Hub) -> None:
    get = await _exchange(
        hub.port, b"GET /static/flux-client.js HTTP/1.1\r\nconnection: close\r\n\r\n"
    )
    head = await _exchange(
        hub.port, b"HEAD /static/flux-client.js HTTP/1.1\r\nconnection: close\r\n\r\n"
    )
    assert head.endswith(b"\r\n\r\n")
    assert head == get[: len(head)]  # the same head, no body


class EchoHeaderApp(StubApp):
    """The smallest ``http.App``: ``GET /echo?v=...`` answers with ``x-echo: <v>``."""

    async def handle(self, request: Request) -> Response:
        return Response(200, b"{}", headers=[(b"x-echo", request.query["v"].encode("latin-1"))])


async def test_response_header_with_crlf_is_refused_with_500_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = EchoHeaderApp()
    server = await asyncio.get_running_loop().create_server(
        lambda: HttpConnection(app), "127.0.0.1", 0
    )
    try:
        port = server.sockets[0].getsockname()[1]
        response = await _exchange(
            port,
            b"GET /echo?v=a%0D%0ASet-Cookie:%20stolen HTTP/1.1\r\n\r\n"
            b"GET /echo?v=fine HTTP/1.1\r\nconnection: close\r\n\r\n",
        )
    finally:
        server.close()
        await server.wait_closed()
    refused, _, rest = response.partition(b"\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 500") and b"set-cookie" not in response.lower()
    assert rest.startswith(b'{"error":"internal error","code":"internal"}HTTP/1.1 200 OK\r\n')
    assert b"x-echo: fine\r\n" in rest
    [record] = [r for r in caplog.records if r.name == "hub.gateway"]
    assert record.exc_info is not None and "b'x-echo'" in str(record.exc_info[1])
