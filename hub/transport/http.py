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
- given an :class:`~hub.transport.heads.UnfinishedHeads`, a request's head must be
  complete within its ``timeout`` (the first request's, from the moment the client
  connected; else 408), a new connection's first byte must come as soon, and the
  oldest unfinished heads are closed at its caps (slowloris; docs/limits.md);
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
from .streaming import CLIENT_GONE, CLOSE_TIMEOUT, SHUTTING_DOWN, BodyWriter

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .heads import UnfinishedHeads

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
    """One client TCP connection: HTTP requests until it upgrades to WebSocket.

    Args:
        app: the hub side.
        heads: the hub's unfinished request heads, with their deadline and caps;
            None: a head has ``request_timeout``, like the rest of the request.
    """

    def __init__(self, app: App, heads: UnfinishedHeads[HttpConnection] | None = None) -> None:
        self.app = app
        self.heads = heads
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.client = ""
        #: The client's address (its ``client`` without the port).
        self.address = ""
        self.h1 = H1Connection(app.body_limit, max_body_bytes=app.max_body_bytes)
        self.websocket: Upgraded | None = None
        self.closed = False
        self._rejected = False
        self._discarded = 0
        self._eof = False
        # Complete requests waiting to be handled, and whether a handler runs.
        self._pending: deque[Request] = deque()
        self._busy = False
        #: The hub is stopping: close after the response being prepared.
        self._last = False
        self._worker = False
        self._wakeup = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        # When the timer fires for the request being read, and what its 408 says.
        self._request_deadline = 0.0
        self._timeout_message = "request timed out"
        self._opened = self.loop.time()
        # Whether this connection is in ``heads`` (its head began, not complete).
        self._in_head = False
        # A 408 owed once the requests before the one being read are answered.
        self._expired: str | None = None
        # Write flow control, for streamed responses.
        self._writable = asyncio.Event()
        self._writable.set()
        #: The body being written by a producer (hub.transport.streaming), if any.
        self._body: BodyWriter | None = None

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast("asyncio.Transport", transport)
        self.transport = transport
        self._opened = self.loop.time()
        peer = transport.get_extra_info("peername")
        self.client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        self.address = str(peer[0]) if isinstance(peer, tuple) else self.client
        self.h1.client = self.client
        refusal = self.app.connection_opened(self)
        if refusal is not None:
            # Over the total: the hub is busy (503); over one address's share: 429.
            status = 429 if "your address" in refusal else 503
            transport.write(serialize_response(error_response(status, refusal), False))
            transport.close()
            self.closed = True
            return
        wait = self.app.keepalive_timeout
        if self.heads is not None:
            # Its first request is due soon: a socket that sends nothing holds a slot.
            wait = min(wait, self.heads.timeout)
        self._arm_timer(wait)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed and self.transport is None:
            return
        self.closed = True
        self._cancel_timer()
        self._end_head()
        self._writable.set()
        self._wakeup.set()  # lets the worker see the end
        if self._body is not None:
            self._body.disconnected()
        if self.websocket is not None:
            self.websocket.connection_lost(exc)
        self.app.connection_closed(self)
        self.transport = None

    def pause_writing(self) -> None:
        self._writable.clear()
        if self.websocket is not None:
            self.websocket.pause_writing()
        elif self._body is not None:
            self._body.paused_writing()

    def resume_writing(self) -> None:
        self._writable.set()
        if self.websocket is not None:
            self.websocket.resume_writing()
        elif self._body is not None:
            self._body.resumed_writing()

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
        if h1.requests_begun != begun or not h1.reading:
            self._expired = None  # a 408 owed for a request that came complete after all
        if h1.reading:
            if h1.requests_begun != begun:
                self._request_began()
            elif self._in_head and not h1.reading_head:
                # The head is complete: the body has what is left of request_timeout.
                self._end_head()
                self._arm_at(self._request_deadline, "request timed out")
        elif events:
            self._cancel_timer()
        if self._in_head and not h1.reading_head:  # complete, refused or upgraded
            self._end_head()
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

    def _request_began(self) -> None:
        """A new request's first bytes came, and it is not complete: arm its deadline."""
        now = self.loop.time()
        self._request_deadline = now + self.app.request_timeout
        heads = self.heads
        if heads is None or not self.h1.reading_head:
            self._end_head()
            self._arm_at(self._request_deadline, "request timed out")
            return
        # The first request's head is due heads.timeout after the connection opened
        # (as nginx's client_header_timeout, Go's ReadHeaderTimeout), so that waiting
        # first does not buy time to trickle after; a later one's, after its first
        # byte (the wait before it is keepalive_timeout's).
        start = self._opened if self.h1.requests_begun == 1 else now
        deadline = min(start + heads.timeout, self._request_deadline)
        limit = min(heads.timeout, self.app.request_timeout)
        self._arm_at(deadline, f"request head not complete within {limit:g} s")
        self._in_head = True
        for victim, message in heads.begin(self, self.address):
            victim._in_head = False
            victim._expire(message)

    def _end_head(self) -> None:
        if self._in_head:
            self._in_head = False
            if self.heads is not None:
                self.heads.end(self)

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
                    if self._expired is not None:  # timed out while we were busy
                        self._reject(408, self._expired)
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
                    keep_alive = keep_alive and not self._last
                    # HTTP/1.0 has no chunked coding: a streamed body ends at the close.
                    chunked = response.chunked and not request.http_10
                    until_close = response.chunked and request.http_10
                    keep_alive = keep_alive and not until_close
                    head = serialize_head(response, keep_alive, chunked, until_close=until_close)
                except Exception:
                    # serialize_head's ValueError (a header with CR/LF) lands here too.
                    logger.exception("unhandled error in %s %s", request.method, request.path)
                    response = error_response(500, "internal error")
                    head = serialize_head(response, keep_alive)
                # RFC 9110 §9.3.2: the answer to HEAD is the head of the answer to GET.
                await self._send(response, head, request.method != "HEAD", not request.http_10)
                self._busy = False
                if not keep_alive or self.closed:
                    self.close()
                    return
        finally:
            self._busy = False
            self._worker = False

    async def _send(
        self, response: Response, head: bytes, with_body: bool, chunked: bool = True
    ) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        if not with_body:
            transport.write(head)
            return
        if response.producer is not None:
            transport.write(head)
            await self._produce(response, transport, chunked)
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
                transport.write(serialize_chunk(chunk) if chunked else chunk)
                await self._writable.wait()
        except Exception:
            # Headers are out: the only honest signal left is to cut the connection.
            logger.exception("error while streaming a response; closing the connection")
            self.abort()
            return
        if not self.closed and chunked:
            transport.write(LAST_CHUNK)

    async def _produce(
        self, response: Response, transport: asyncio.Transport, chunked: bool
    ) -> None:
        """Run a response's producer (hub.transport.streaming), then end the body."""
        assert response.producer is not None
        body = self._body = BodyWriter(transport, chunked=chunked)
        if self._eof:
            body.stop(CLIENT_GONE)
        try:
            await body.run(response.producer)
        except Exception:
            logger.exception("error while streaming a response; closing the connection")
            body.finish()
            self.abort()
            return
        finally:
            self._body = None
        body.finish()
        if self.closed:
            return
        if chunked:
            transport.write(LAST_CHUNK)
        if body.stopped:
            # Closed once what is buffered is sent; cut if the client does not read it.
            self.closed = True
            self.close()
            self._timer = self.loop.call_later(CLOSE_TIMEOUT, self._cut)

    def _cut(self) -> None:
        self._timer = None
        if self.transport is not None:
            self.transport.abort()

    def shutdown(self) -> None:
        """The hub is stopping: stop a streamed response (its producer may say so
        last); answer a request being handled (``connection: close``), then close;
        else close after what was written is flushed."""
        if self._body is not None:
            self._body.stop(SHUTTING_DOWN)
        elif self._busy:
            self._last = True  # the request being handled is answered, then we close
        else:
            self.close()

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
        self._end_head()
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
        if self._body is not None:
            # A streamed response goes on until the client leaves: this is it.
            self._body.stop(CLIENT_GONE)
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

    def _arm_at(self, deadline: float, message: str) -> None:
        """Arm the timer of the request being read: a 408 with ``message`` at ``deadline``."""
        self._cancel_timer()
        self._timeout_message = message
        self._timer = self.loop.call_at(deadline, self._on_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        if self.websocket is not None or self._rejected:
            return
        if self.h1.reading:
            self._expire(self._timeout_message)
        elif not (self._busy or self._pending):
            self.close()

    def _expire(self, message: str) -> None:
        """408 for the request being read: now, or once the requests before it (being
        handled, or pipelined and queued) are answered, so that answers keep their order."""
        if self._busy or self._pending:
            self._expired = message
        else:
            self._reject(408, message)
