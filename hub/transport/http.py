"""The asyncio shell of :mod:`hub.transport.h1`: sockets, timers, tasks; upgrades hand
over to ws.py.

Why not a framework: one port serves REST and WebSocket, and fan-out writes one
pre-encoded frame to many transports, which ASGI servers cannot do (bench/stacks.py
measures the difference; bench/RESULTS.md records it).

:class:`HttpConnection` feeds what it reads to an :class:`~hub.transport.h1.H1Connection`
(which parses and applies the limits on heads and bodies), answers the requests that
come out, and owns what takes a clock or a socket. Per connection: requests are handled
one at a time, in order (pipelined requests wait their turn, reading pauses past
:data:`MAX_PIPELINED`). Bounds:

- a request's head and body must arrive within ``request_timeout`` (else 408);
- a refused request is answered, then the rest of what the client sends is read and
  thrown away for a while before closing (:data:`LINGER_SECONDS`);
- an idle keep-alive connection is closed after ``keepalive_timeout``;
- the hub closes connections past ``max_connections`` at once with 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Protocol, cast

from .h1 import MAX_HEAD_BYTES, H1Connection, Rejection, Request, Upgrade
from .responses import (
    LAST_CHUNK,
    Response,
    error_response,
    json_response,
    preflight_headers,
    serialize_chunk,
    serialize_head,
    serialize_response,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = [
    "MAX_HEAD_BYTES",
    "App",
    "HttpConnection",
    "Request",
    "Response",
    "Upgraded",
    "error_response",
    "json_response",
    "preflight_headers",
]

logger = logging.getLogger("hub.gateway")

#: Requests parsed ahead of the one being handled before reading pauses.
MAX_PIPELINED = 16
#: After refusing a request mid-body, how long and how much of the rest is read and
#: thrown away before closing ("lingering close"): closing a socket with unread input
#: sends a reset, and the client would lose our answer while still sending.
LINGER_SECONDS = 5.0
LINGER_MAX_BYTES = 64 * 1024 * 1024


class Upgraded(Protocol):
    """What a connection becomes after an upgrade (``ws.WebSocket``)."""

    def data_received(self, data: bytes) -> None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


class App(Protocol):
    """What the HTTP layer needs from the hub."""

    def body_limit(self, method: str, path: str) -> tuple[int, str]:
        """The largest body this route accepts, and the 413 message."""
        ...

    async def handle(self, request: Request) -> Response: ...

    def spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` in the hub's task group."""
        ...

    def upgrade(self, request: Request, transport: asyncio.Transport) -> Upgraded | None:
        """Handle an upgrade request; return the new connection, or None once refused."""
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
        self.h1 = H1Connection(app.body_limit, max_body_bytes=app.max_body_bytes)
        self.websocket: Upgraded | None = None
        self.closed = False
        self._rejected = False
        self._discarded = 0
        self._eof = False
        # Complete requests waiting to be handled, and whether a handler runs.
        self._pending: deque[Request] = deque()
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
        self.h1.client = self.client
        refusal = self.app.connection_opened(self)
        if refusal is not None:
            # Over the total: the hub is busy (503); over one address's share: 429.
            status = 429 if "your address" in refusal else 503
            transport.write(serialize_response(error_response(status, refusal), False))
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
        h1 = self.h1
        begun = h1.requests_begun
        h1.receive_data(data)
        events = h1.events_received()
        if h1.reading:
            if h1.requests_begun != begun:
                # A new request began: its head and body have request_timeout to come.
                self._arm_timer(self.app.request_timeout)
        elif events:
            self._cancel_timer()
        output = h1.data_to_send()
        if output and self.transport is not None:
            self.transport.write(output)  # 100 Continue
        for event in events:
            if type(event) is Request:
                self._queue(event)
            elif isinstance(event, Upgrade):
                self._upgrade(event)
            elif isinstance(event, Rejection):
                self._reject(event.status, event.message)

    def _queue(self, request: Request) -> None:
        self._pending.append(request)
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
                    if not self.h1.reading:  # else the request timer runs
                        self._arm_timer(self.app.keepalive_timeout)
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                request = self._pending.popleft()
                if self.transport is not None and len(self._pending) < MAX_PIPELINED:
                    self.transport.resume_reading()
                self._busy = True
                keep_alive = request.keep_alive
                try:
                    response = await self.app.handle(request)
                    head = serialize_head(response, keep_alive, response.stream is not None)
                except Exception:
                    # serialize_head's ValueError (a header with CR/LF) lands here too.
                    logger.exception("unhandled error in %s %s", request.method, request.path)
                    response = error_response(500, "internal error")
                    head = serialize_head(response, keep_alive)
                # RFC 9110 §9.3.2: the answer to HEAD is the head of the answer to GET.
                await self._send(response, head, request.method != "HEAD")
                self._busy = False
                if not keep_alive:
                    self.close()
                    return
        finally:
            self._busy = False
            self._worker = False

    async def _send(self, response: Response, head: bytes, with_body: bool) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        if not with_body:
            transport.write(head)
            return
        if response.stream is None:
            transport.write(head + response.body if response.status not in (204, 304) else head)
            return
        transport.write(head)
        try:
            async for chunk in response.stream:
                if not chunk:
                    continue
                if self.closed:
                    return
                transport.write(serialize_chunk(chunk))
                await self._writable.wait()
        except Exception:
            # Headers are out: the only honest signal left is to cut the connection.
            logger.exception("error while streaming a response; closing the connection")
            self.abort()
            return
        if not self.closed:
            transport.write(LAST_CHUNK)

    def _upgrade(self, event: Upgrade) -> None:
        self._cancel_timer()
        if self.transport is None:
            return
        websocket = self.app.upgrade(event.request, self.transport)
        if websocket is None:
            self.close()
            return
        self.websocket = websocket
        if event.data:
            websocket.data_received(event.data)

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
        transport.write(serialize_response(error_response(status, message), False))
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
        if self.h1.reading:
            self._reject(408, "request timed out")
        else:
            self.close()
