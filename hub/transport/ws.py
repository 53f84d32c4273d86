"""WebSocket connections on asyncio transports, driven by websockets' sans-I/O protocol.

websockets parses incoming frames, answers pings and runs the closing handshake. For
fan-out, frames are encoded once (:func:`encode_frame`) and the same bytes are written
to every matching transport: server frames are not masked and no extension is ever
negotiated, so one encoding fits every connection.

Backpressure: the transport's write buffer is this connection's outbound queue. When it
holds more than ``max_send_buffer`` bytes, the connection is a slow consumer: it is
closed with 1013 (try again later) and a reason, so a well-behaved client reconnects.
Nothing else waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request as WsRequest
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from ..errors import Overloaded, close_code_for
from ..wire.framing import encode_frame

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .h1 import Request

__all__ = ["Session", "WebSocket", "handshake"]

logger = logging.getLogger("hub.gateway")

# websockets logs every open and close at INFO; that is per-connection noise here.
_protocol_logger = logging.getLogger("hub.ws.protocol")

#: Seconds a closing connection may take to finish the closing handshake (a client
#: that reads gets the close frame at once).
CLOSE_TIMEOUT = 5.0
#: Seconds a connection closed with 1013 gets to read what is queued, then the close
#: frame and its reason (docs/faults.md). Every 1013 close is for a client that is
#: behind — past ``max_send_buffer`` unsent, past ``max_pending_entities`` merged
#: deltas (with up to ``conflate_after_bytes`` unsent), or the hub fell behind — and
#: such a client is often stalled for seconds (a paused process, a network blip).
#: What is queued is bounded already, so waiting costs no more memory than the bound;
#: it is the grace of an event stream too (``streaming.CLOSE_TIMEOUT``).
SLOW_CLOSE_TIMEOUT = 30.0


class Session(Protocol):
    """The protocol spoken over one WebSocket (compat or native)."""

    def on_message(self, data: bytes, text: bool) -> None: ...

    def on_close(self) -> None: ...

    def pause_writing(self) -> None:
        """The transport's buffer went over its high-water mark."""

    def resume_writing(self) -> None:
        """The transport's buffer drained below its low-water mark."""


def handshake(
    request: Request,
    transport: asyncio.Transport,
    *,
    max_frame_bytes: int,
    subprotocols: list[str],
) -> ServerProtocol | None:
    """Run the opening handshake; return the open protocol, or None if refused.

    The refusal (400, 426 ...) has been written to the transport by then.
    """
    protocol = ServerProtocol(
        subprotocols=[Subprotocol(s) for s in subprotocols] or None,
        # No subprotocol asked for is fine: that is the Flux-compatible protocol.
        select_subprotocol=_select_subprotocol,
        max_size=max_frame_bytes,
        logger=_protocol_logger,
    )
    # websockets' DEBUG log prints the upgrade's headers (Authorization), its target
    # (?token=) and every frame (auth frames carry tokens): off, whatever the level.
    protocol.debug = False
    # httptools has parsed the head already; the protocol parses it again (once per
    # connection) so that its own state machine moves on to frames.
    target = request.path + ("?" + request.query_string if request.query_string else "")
    head = [b"GET %b HTTP/1.1\r\n" % target.encode("latin-1")]
    head += [b"%b: %b\r\n" % (name, value) for name, value in request.raw_headers]
    head.append(b"\r\n")
    protocol.receive_data(b"".join(head))
    events = protocol.events_received()
    if not events or not isinstance(events[0], WsRequest):
        transport.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        return None
    response = protocol.accept(events[0])
    protocol.send_response(response)
    for data in protocol.data_to_send():
        if data:
            transport.write(data)
    if response.status_code != 101:
        return None
    return protocol


def _select_subprotocol(
    protocol: ServerProtocol, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    available = protocol.available_subprotocols or ()
    for candidate in offered:
        if candidate in available:
            return candidate
    return None


class WebSocket:
    """One open WebSocket connection."""

    def __init__(
        self,
        transport: asyncio.Transport,
        protocol: ServerProtocol,
        *,
        client: str,
        max_send_buffer: int,
        on_closed: Callable[[WebSocket], None],
    ) -> None:
        self.transport = transport
        self.protocol = protocol
        self.client = client
        self.subprotocol: str | None = protocol.subprotocol
        self.max_send_buffer = max_send_buffer
        self.session: Session | None = None
        self.closed = False
        self.last_seen = asyncio.get_running_loop().time()
        self._on_closed = on_closed
        self._fragments: list[bytes] = []
        self._fragment_text = True
        self._close_timer: asyncio.TimerHandle | None = None
        # Statistics, read by metrics.
        self.frames_sent = 0
        self.bytes_sent = 0

    # ------------------------------------------------------------------ incoming

    def data_received(self, data: bytes) -> None:
        self.last_seen = asyncio.get_running_loop().time()
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Frame):
                self._on_frame(event)
        self._flush()

    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._deliver(bytes(frame.data), opcode is Opcode.TEXT)
            else:
                self._fragments = [bytes(frame.data)]
                self._fragment_text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), []
                self._deliver(data, self._fragment_text)
        # PING, PONG and CLOSE are handled by the protocol itself.

    def _deliver(self, data: bytes, text: bool) -> None:
        if self.session is None or self.protocol.state is not State.OPEN:
            return
        if text and not data.isascii():
            try:
                data.decode()
            except UnicodeDecodeError as exc:
                # RFC 6455 §8.1: a text message that is not UTF-8 fails the connection
                # with 1007. websockets' sans-I/O protocol leaves this check to its
                # connections (their assembler decodes); this is ours, and it fails
                # the protocol the way those do.
                reason = f"invalid UTF-8 in a text message: {exc.reason} at position {exc.start}"
                self.protocol.fail(CloseCode.INVALID_DATA, reason)
                return
        self.session.on_message(data, text)

    # ------------------------------------------------------------------ outgoing

    @property
    def open(self) -> bool:
        return not self.closed and self.protocol.state is State.OPEN

    def send_text(self, data: bytes) -> None:
        """Send one message (already JSON-encoded)."""
        self.write_frames(encode_frame(data, text=True), 1)

    def send_binary(self, data: bytes) -> None:
        self.write_frames(encode_frame(data, text=False), 1)

    def write_frames(self, frames: bytes, count: int) -> None:
        """Write pre-encoded frames, or close the connection if it is too far behind."""
        if self.closed or self.protocol.state is not State.OPEN:  # self.open, inlined
            return
        # Behind already? Then it is a slow consumer. (Checked before writing: one
        # write carries a whole dispatch batch, which may exceed the cap by itself
        # for a client that reads perfectly well.) Bound: the cap plus one batch.
        buffered = self.transport.get_write_buffer_size()
        if buffered > self.max_send_buffer:
            slow = Overloaded(f"slow consumer: {buffered} bytes unread; reconnect")
            self.close(close_code_for(slow), str(slow))
            return
        self.transport.write(frames)
        self.frames_sent += count
        self.bytes_sent += len(frames)

    def ping(self, data: bytes = b"") -> None:
        if self.open:
            self.protocol.send_ping(data)
            self._flush()

    def close(self, code: int = 1000, reason: str = "", timeout: float | None = None) -> None:
        """Start the closing handshake; the transport is cut if it does not finish.

        Args:
            code: RFC 6455 §7.4 close code.
            reason: shown to the client; say what it can do.
            timeout: seconds before the TCP connection is cut regardless; by default
                :data:`SLOW_CLOSE_TIMEOUT` for 1013, else :data:`CLOSE_TIMEOUT`.
        """
        if self.closed:
            return
        if timeout is None:
            slow = code == CloseCode.TRY_AGAIN_LATER
            timeout = SLOW_CLOSE_TIMEOUT if slow else CLOSE_TIMEOUT
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()
        if self._close_timer is None and not self.closed:
            self._close_timer = asyncio.get_running_loop().call_later(timeout, self.transport.abort)

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()
        if self.protocol.close_expected() and not self.transport.is_closing():
            # RFC 6455 §7.1.1: the server closes the TCP connection first.
            self.transport.close()

    # ------------------------------------------------------------------ transport events

    def pause_writing(self) -> None:
        if self.session is not None:
            self.session.pause_writing()

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        if self._close_timer is not None:
            self._close_timer.cancel()
        self.protocol.receive_eof()
        if self.session is not None:
            try:
                self.session.on_close()
            except Exception:
                logger.exception("error while closing a WebSocket session")
        self._on_closed(self)
