"""HTTP/1.1 on asyncio transports, parsed by httptools; upgrades hand over to ws.py.

Why not a framework: one port serves REST and WebSocket, and fan-out writes one
pre-encoded frame to many transports, which ASGI servers cannot do (bench/stacks.py
measures the difference; bench/RESULTS.md records it).

Per connection: requests are handled one at a time, in order (pipelined requests
wait their turn, reading pauses past :data:`MAX_PIPELINED`). Bounds:

- a request's head and body must arrive within ``request_timeout`` (else 408);
- the body is refused with 413 as soon as it exceeds the route's limit (by
  ``Content-Length`` before it is read, or while a chunked body streams in);
- an idle keep-alive connection is closed after ``keepalive_timeout``;
- the hub closes connections past ``max_connections`` at once with 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast
from urllib.parse import parse_qsl

import httptools

from ..wire.jsonutil import dumps

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from .ws import WebSocket

__all__ = ["App", "HttpConnection", "Request", "Response", "error_response", "json_response"]

logger = logging.getLogger("hub.gateway")

#: Requests parsed ahead of the one being handled before reading pauses.
MAX_PIPELINED = 16
#: Largest request head (request line plus headers) accepted.
MAX_HEAD_BYTES = 64 * 1024
#: After refusing a request mid-body, how long and how much of the rest is read and
#: thrown away before closing ("lingering close"): closing a socket with unread input
#: sends a reset, and the client would lose our answer while still sending.
LINGER_SECONDS = 5.0
LINGER_MAX_BYTES = 64 * 1024 * 1024

_REASONS = {
    100: b"Continue",
    200: b"OK",
    204: b"No Content",
    304: b"Not Modified",
    307: b"Temporary Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    409: b"Conflict",
    413: b"Payload Too Large",
    415: b"Unsupported Media Type",
    422: b"Unprocessable Entity",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
}

# FLUX_COMPAT.md: any origin, with PUT added to Flux's methods.
_CORS = (
    b"access-control-allow-origin: *\r\n"
    b"access-control-expose-headers: retry-after, x-next-cursor\r\n"
)
_PREFLIGHT = (
    b"access-control-allow-methods: GET, POST, PUT, DELETE, OPTIONS\r\n"
    b"access-control-allow-headers: authorization, content-type\r\n"
    b"access-control-max-age: 600\r\n"
)


@dataclass(slots=True)
class Request:
    """One parsed HTTP request."""

    method: str
    #: The raw (still percent-encoded) path.
    path: str
    query_string: str
    #: Header names lower-cased; for repeated headers, the last value.
    headers: dict[str, str]
    body: bytes = b""
    client: str = ""
    #: Raw header pairs as received, for the WebSocket handshake.
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def query(self) -> dict[str, str]:
        """Query parameters; the first occurrence wins."""
        result: dict[str, str] = {}
        for key, value in parse_qsl(self.query_string, keep_blank_values=True):
            result.setdefault(key, value)
        return result


@dataclass(slots=True)
class Response:
    """An HTTP response: a body, or a stream of chunks."""

    status: int = 200
    body: bytes = b""
    content_type: bytes | None = b"application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: When set, the body is streamed with chunked transfer-encoding.
    stream: AsyncIterator[bytes] | None = None


def json_response(value: object, status: int = 200) -> Response:
    return Response(status, dumps(value))


def error_response(
    status: int,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    **extra: object,
) -> Response:
    """Every error is JSON ``{"error": message}`` (FLUX_COMPAT.md: even framework ones),
    plus any ``extra`` fields."""
    return Response(status, dumps({"error": message, **extra}), headers=headers or [])


class App(Protocol):
    """What the HTTP layer needs from the hub."""

    def body_limit(self, method: str, path: str) -> tuple[int, str]:
        """The largest body this route accepts, and the 413 message."""
        ...

    async def handle(self, request: Request) -> Response: ...

    def spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` in the hub's task group."""
        ...

    def upgrade(self, request: Request, transport: asyncio.Transport) -> WebSocket | None:
        """Handle an upgrade request; return the new WebSocket, or None once refused."""
        ...

    def connection_opened(self, conn: HttpConnection) -> str | None:
        """Register a connection; the reason to refuse it, or None."""
        ...

    def connection_closed(self, conn: HttpConnection) -> None: ...

    request_timeout: float
    keepalive_timeout: float
    max_body_bytes: int


class HttpConnection(asyncio.Protocol):
    """One client TCP connection: HTTP requests until it upgrades to WebSocket."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.parser = httptools.HttpRequestParser(self)
        self.websocket: WebSocket | None = None
        self.closed = False
        # Parsing state of the request being read.
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._body_limit = 0
        self._limit_message = ""
        self._rejected = False
        self._discarded = 0
        self._eof = False
        # Complete requests waiting to be handled, and whether a handler runs.
        self._pending: deque[tuple[Request, bool]] = deque()
        self._busy = False
        self._worker = False
        self._wakeup = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        # Write flow control, for streamed responses.
        self._writable = asyncio.Event()
        self._writable.set()

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast("asyncio.Transport", transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        refusal = self.app.connection_opened(self)
        if refusal is not None:
            # Over the total: the hub is busy (503); over one address's share: 429.
            status = 429 if "your address" in refusal else 503
            transport.write(_serialize(error_response(status, refusal), False))
            transport.close()
            self.closed = True
            return
        self._arm_timer(self.app.keepalive_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed and self.transport is None:
            return
        self.closed = True
        self._cancel_timer()
        self._writable.set()
        self._wakeup.set()  # lets the worker see the end
        if self.websocket is not None:
            self.websocket.connection_lost(exc)
        self.app.connection_closed(self)
        self.transport = None

    def pause_writing(self) -> None:
        self._writable.clear()
        if self.websocket is not None:
            self.websocket.pause_writing()

    def resume_writing(self) -> None:
        self._writable.set()
        if self.websocket is not None:
            self.websocket.resume_writing()

    def data_received(self, data: bytes) -> None:
        if self.websocket is not None:
            self.websocket.data_received(data)
            return
        if self._rejected:
            self._discarded += len(data)
            if self._discarded > LINGER_MAX_BYTES:
                self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade(data[exc.args[0] :])
        except httptools.HttpParserError as exc:
            cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else exc
            if isinstance(cause, _Rejected):
                self._reject(cause.status, cause.message)
            else:
                self._reject(400, f"malformed HTTP request: {exc}")

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._body = []
        self._body_size = 0
        self._arm_timer(self.app.request_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _Rejected(431, "request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _Rejected(431, "request head too large")

    def on_headers_complete(self) -> None:
        method = self.parser.get_method().decode()
        path = httptools.parse_url(self._url).path.decode("latin-1")
        limit, message = self.app.body_limit(method, path)
        self._body_limit = min(limit, self.app.max_body_bytes)
        self._limit_message = message
        length = expect = None
        for name, value in self._headers:
            lname = name.lower()
            if lname == b"content-length":
                length = value
            elif lname == b"expect":
                expect = value
        if length is not None and length.strip().isdigit() and int(length) > self._body_limit:
            raise _Rejected(413, message)
        if expect is not None and expect.lower() == b"100-continue" and self.transport:
            # curl waits for this before sending a body over 1 KiB.
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._body_limit:
            raise _Rejected(413, self._limit_message)
        self._body.append(body)

    def on_message_complete(self) -> None:
        url = httptools.parse_url(self._url)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self._headers}
        request = Request(
            method=self.parser.get_method().decode(),
            path=url.path.decode("latin-1"),
            query_string=(url.query or b"").decode("latin-1"),
            headers=headers,
            body=b"".join(self._body),
            client=self.client,
            raw_headers=self._headers,
        )
        self._body = []
        if self.parser.should_upgrade():
            # The parser raises HttpParserUpgrade next; _upgrade takes it from there.
            self._pending.append((request, False))
            return
        self._pending.append((request, self.parser.should_keep_alive()))
        self._cancel_timer()
        if len(self._pending) > MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()
        if self._worker:
            self._wakeup.set()
        else:
            # One task per connection, for its whole life: starting a task per request
            # costs more than most requests (bench/RESULTS.md).
            self._worker = True
            self.app.spawn(self._serve)

    # ------------------------------------------------------------------ handling

    async def _serve(self) -> None:
        """Answer this connection's requests, in order, until it closes."""
        try:
            while not self.closed:
                if not self._pending:
                    if self._eof:
                        self.close()
                        return
                    self._arm_timer(self.app.keepalive_timeout)
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                request, keep_alive = self._pending.popleft()
                if self.transport is not None and len(self._pending) < MAX_PIPELINED:
                    self.transport.resume_reading()
                self._busy = True
                try:
                    response = await self.app.handle(request)
                except Exception:
                    logger.exception("unhandled error in %s %s", request.method, request.path)
                    response = error_response(500, "internal error")
                await self._send(response, keep_alive)
                self._busy = False
                if not keep_alive:
                    self.close()
                    return
        finally:
            self._busy = False
            self._worker = False

    async def _send(self, response: Response, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        if response.stream is None:
            transport.write(_serialize(response, keep_alive))
            return
        transport.write(_head(response, keep_alive, chunked=True))
        try:
            async for chunk in response.stream:
                if not chunk:
                    continue
                if self.closed:
                    return
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                await self._writable.wait()
        except Exception:
            # Headers are out: the only honest signal left is to cut the connection.
            logger.exception("error while streaming a response; closing the connection")
            self.abort()
            return
        if not self.closed:
            transport.write(b"0\r\n\r\n")

    def _upgrade(self, rest: bytes) -> None:
        self._cancel_timer()
        if not self._pending or self.transport is None:
            self._reject(400, "malformed upgrade request")
            return
        request, _ = self._pending.pop()
        websocket = self.app.upgrade(request, self.transport)
        if websocket is None:
            self.close()
            return
        self.websocket = websocket
        if rest:
            websocket.data_received(rest)

    def _reject(self, status: int, message: str) -> None:
        """Answer a request we will not read further, then close.

        The client may still be sending its body: half-close (our answer, then EOF)
        and discard what still comes, for a while, before closing.
        """
        self._rejected = True
        self._cancel_timer()
        transport = self.transport
        if transport is None or self.closed:
            return
        transport.write(_serialize(error_response(status, message), False))
        if transport.can_write_eof():
            transport.write_eof()
            self._timer = self.loop.call_later(LINGER_SECONDS, self.close)
        else:
            self.close()

    def eof_received(self) -> bool | None:
        """The client finished sending (half-close): answer what it asked, then close."""
        self._eof = True
        if self._rejected or not (self._busy or self._pending):
            self.close()
        return True  # keep the transport open for the answers still to come

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Close after what was written is flushed."""
        self._cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()

    def _arm_timer(self, delay: float) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(delay, self._on_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        if self.websocket is not None or self._busy or self._rejected:
            return
        if self._headers or self._url:
            self._reject(408, "request timed out")
        else:
            self.close()


class _Rejected(Exception):
    """Raised inside a parser callback to refuse the request being read."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _head(response: Response, keep_alive: bool, chunked: bool = False) -> bytes:
    reason = _REASONS.get(response.status, b"Unknown")
    parts = [b"HTTP/1.1 %d %b\r\n" % (response.status, reason), _CORS]
    if response.content_type is not None and response.status not in (204, 304):
        parts.append(b"content-type: %b\r\n" % response.content_type)
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    elif response.status not in (204, 304):
        parts.append(b"content-length: %d\r\n" % len(response.body))
    for name, value in response.headers:
        parts.append(b"%b: %b\r\n" % (name, value))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def _serialize(response: Response, keep_alive: bool) -> bytes:
    head = _head(response, keep_alive)
    return head + response.body if response.status not in (204, 304) else head


def preflight_headers() -> list[tuple[bytes, bytes]]:
    """Headers of a CORS preflight answer."""
    return [tuple(line.split(b": ", 1)) for line in _PREFLIGHT.strip().split(b"\r\n")]  # type: ignore[misc]
