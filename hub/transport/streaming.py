"""A response body written over time: the streaming primitive of the hub's HTTP server.

A route that streams for as long as its client listens (Server-Sent Events, MCP's
streamable HTTP) answers with a :class:`~hub.transport.responses.Response` whose
``producer`` is set::

    async def produce(body: BodyWriter) -> None:
        body.write(b"data: hello\\n\\n")      # never blocks
        await body.drain()                    # backpressure: wait until it is sent
        ...

    return Response(200, content_type=b"text/event-stream", producer=produce)

Once the head is out, the connection (:mod:`hub.transport.http`) calls
``await produce(body)`` in the task that serves the connection, and the body is sent
with ``transfer-encoding: chunked``, one chunk per :meth:`BodyWriter.write` (to an
HTTP/1.0 client, which has no chunked coding, as it is, ending at the close). When the
producer returns, the last chunk ends the body and the connection serves its next
request (keep-alive); if the stream was stopped (below), the connection is closed.

**Flow control.** :meth:`BodyWriter.write` queues bytes in the transport's buffer and
returns at once, so a producer fed by the fan-out (which must never wait for one
client) can call it from a callback. Two ways to respect a slow reader:

- a pulling producer awaits :meth:`BodyWriter.drain` between writes: it returns once
  the buffer is below its low-water mark (or the stream ended);
- a pushing producer sets :attr:`BodyWriter.on_pause` / :attr:`BodyWriter.on_resume`,
  called when the buffer crosses the high-water mark and when it drains below the
  low one (:meth:`BodyWriter.set_buffer_limits`; asyncio's defaults otherwise), and
  decides what to do meanwhile (SSE conflates, as native WebSockets do).

**Bound.** A write finding more than ``max_buffer`` bytes unsent (the hub's
``FLUX_MAX_SEND_BUFFER_BYTES``) does not queue them: it stops the stream with the
reason ``slow consumer: N bytes unread``. Memory per streaming connection is thus
``max_buffer`` plus one write, plus the producer's own last words (below).

**Ending.** :meth:`BodyWriter.stop` cancels the producer (``CancelledError`` at its
next await; :attr:`BodyWriter.stop_reason` says why). The stream is stopped when

- the client closes its side or the connection drops (nothing more reaches anyone);
- the hub shuts down (``server shutting down``: reconnect, to this hub or another);
- a write finds the buffer over ``max_buffer`` (slow consumer).

A producer may still write in its ``finally`` — a last message naming
:attr:`BodyWriter.stop_reason` — whenever :attr:`BodyWriter.open` is true; those writes
are not refused for the buffer bound (they are small and there is one). After a stop
the connection closes once what is buffered is sent, and is cut after
:data:`CLOSE_TIMEOUT` seconds if the client does not read it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.lowlevel

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable

__all__ = ["CLIENT_GONE", "CLOSE_TIMEOUT", "MAX_BUFFER", "SHUTTING_DOWN", "BodyWriter"]

#: ``max_buffer`` unless the producer sets another (the default of
#: ``FLUX_MAX_SEND_BUFFER_BYTES``, which a producer of the hub's passes on).
MAX_BUFFER = 8 * 1024 * 1024

#: Seconds a stopped stream's client gets to read what is buffered before the
#: connection is cut (the same grace as a slow WebSocket's close frame).
CLOSE_TIMEOUT = 30.0
#: :attr:`BodyWriter.stop_reason` when the client closed or the connection dropped.
CLIENT_GONE = "the client closed the connection"
#: :attr:`BodyWriter.stop_reason` at hub shutdown.
SHUTTING_DOWN = "server shutting down"


class _Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None: ...


class BodyWriter:
    """The body of one streamed response (see the module docstring).

    Args:
        transport: the connection's transport.
        max_buffer: bytes unsent past which a write stops the stream (slow consumer);
            a producer may change :attr:`max_buffer` before writing.
    """

    def __init__(
        self,
        transport: asyncio.Transport | _Transport,
        *,
        max_buffer: int = MAX_BUFFER,
        chunked: bool = True,
    ) -> None:
        self._transport = transport
        #: False for an HTTP/1.0 client: the body is written as it is, and ends when
        #: the connection closes.
        self.chunked = chunked
        self.max_buffer = max_buffer
        #: Why the stream was stopped; None while it runs.
        self.stop_reason: str | None = None
        #: Called when the transport's buffer goes over its high-water mark.
        self.on_pause: Callable[[], None] | None = None
        #: Called when the transport's buffer drains below its low-water mark.
        self.on_resume: Callable[[], None] | None = None
        #: Bytes written to the body so far (chunk framing excluded).
        self.bytes_written = 0
        self._paused = False
        self._drained = anyio.Event()
        self._drained.set()
        self._scope: anyio.CancelScope | None = None
        self._connected = True
        self._finished = False

    # ------------------------------------------------------------------ for producers

    @property
    def open(self) -> bool:
        """Whether a write still reaches the client (the connection is up, the body
        not finished); true in a stopped producer's ``finally`` unless the client left."""
        return self._connected and not self._finished

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    @property
    def paused(self) -> bool:
        """Whether the transport's buffer is over its high-water mark."""
        return self._paused

    @property
    def buffered(self) -> int:
        """Bytes written and not yet sent."""
        return self._transport.get_write_buffer_size() if self._connected else 0

    def write(self, data: bytes) -> bool:
        """Queue ``data`` as one chunk of the body; never blocks.

        Returns:
            False when it was not written: the body is over, or the stream was
            stopped by this very write (more than ``max_buffer`` bytes were unsent).
        """
        if not self.open:
            return False
        if not data:
            return True  # an empty chunk would end the body
        if self.stop_reason is None:
            buffered = self._transport.get_write_buffer_size()
            if buffered > self.max_buffer:
                self.stop(f"slow consumer: {buffered} bytes unread; reconnect and resume")
                return False
        self._transport.write(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)
        self.bytes_written += len(data)
        return True

    async def drain(self) -> None:
        """Return once the buffer is below its low-water mark, or the stream is over.

        Always a checkpoint: a producer writing in a loop lets the loop run (else, its
        client gone and nothing ever paused, it would spin and hold the whole hub), and
        is cancelled here once the stream is stopped.
        """
        await anyio.lowlevel.checkpoint()
        while self._paused and self.open and self.stop_reason is None:
            self._drained = anyio.Event()
            await self._drained.wait()

    def set_buffer_limits(self, high: int, low: int) -> None:
        """The transport's high- and low-water marks (``on_pause`` / ``on_resume``)."""
        if self._connected:
            self._transport.set_write_buffer_limits(high=high, low=low)

    def stop(self, reason: str) -> None:
        """End the stream: cancel the producer (the first reason given is kept)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._drained.set()
        if self._scope is not None:
            self._scope.cancel()

    # ------------------------------------------------------------------ for the connection

    async def run(self, producer: Callable[[BodyWriter], Awaitable[None]]) -> None:
        """Run ``producer`` until it returns or the stream is stopped."""
        if self.stop_reason is not None:
            return
        with anyio.CancelScope() as scope:
            self._scope = scope
            await producer(self)
        self._scope = None

    def finish(self) -> None:
        """No more writes: the connection writes the last chunk (if it still can)."""
        self._finished = True
        self._drained.set()

    def paused_writing(self) -> None:
        """The transport's buffer went over its high-water mark."""
        if not self._paused:
            self._paused = True
            if self.on_pause is not None:
                self.on_pause()

    def resumed_writing(self) -> None:
        """The transport's buffer drained below its low-water mark."""
        if self._paused:
            self._paused = False
            self._drained.set()
            if self.on_resume is not None:
                self.on_resume()

    def disconnected(self) -> None:
        """The connection is gone: writes reach no one; stop the producer."""
        self._connected = False
        self.stop(CLIENT_GONE)
