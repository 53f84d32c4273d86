"""HTTP/1.1 without I/O: bytes in; requests, upgrades or refusals out.

The pattern of websockets' ``protocol.py`` and h11's ``Connection``: no socket, no event
loop, no clock. The asyncio shell (:mod:`hub.transport.http`) feeds what it reads to
:meth:`H1Connection.receive_data`, takes :meth:`~H1Connection.events_received`, writes
:meth:`~H1Connection.data_to_send`, and owns every timeout (408, keep-alive).
Responses become bytes in :mod:`hub.transport.responses`.

httptools (llhttp in its strict mode) parses; this module adds the hub's policy on top
of it (docs/limits.md lists each bound with its answer):

- a head with more than :data:`MAX_HEADERS` fields, or more than :data:`MAX_HEAD_BYTES`
  of request line and field bytes, gets 431; so does a head still unfinished after a
  whole window of :data:`MAX_HEAD_BYTES` raw bytes (nothing accumulates meanwhile), and
  as much chunked framing (extensions, trailers) without a byte of data;
- a repeated ``Host``, ``Authorization``, ``Content-Length`` or ``Transfer-Encoding``
  gets 400 naming the field, as do ``Content-Length`` with ``Transfer-Encoding`` and
  anything llhttp refuses (bare LF, obs-fold, bad chunk sizes, control characters);
- a request target whose percent-encoded bytes are not UTF-8 gets 400;
- a transfer coding other than ``chunked``, and ``CONNECT``, get 501; HTTP versions
  other than 1.0 and 1.1 get 505; an upgrade request with a body gets 400;
- a body over the route's limit gets 413, from ``Content-Length`` before the body or
  as a chunked body streams in;
- trailers are read and dropped: they never reach the request's headers.

Invariant: the outcome does not depend on how the bytes were split into reads. Every
decision is taken at a point fixed in the byte stream: at the end of a head or a body,
inside a body span (where only data can follow), or at a multiple of the window size
(the input is cut there before it is parsed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote_to_bytes

import httptools

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "CONTINUE",
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "SINGLE_FIELDS",
    "Event",
    "H1Connection",
    "Rejection",
    "Request",
    "Upgrade",
]

#: Largest request head: request line plus field names and values, separators aside.
MAX_HEAD_BYTES = 64 * 1024
#: Most header fields in one request head.
MAX_HEADERS = 100
#: Fields that may appear once: a second one could make two parsers disagree on what
#: the request says (request smuggling; RFC 9112 §6.3, RFC 9110 §7.2).
SINGLE_FIELDS = {
    "host": "Host",
    "authorization": "Authorization",
    "content-length": "Content-Length",
    "transfer-encoding": "Transfer-Encoding",
}

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# llhttp's words for the refusals the hub words itself.
_PARSER_REASONS = {
    "Duplicate Content-Length": "repeated Content-Length header",
    "Content-Length can't be present with Transfer-Encoding": (
        "Content-Length and Transfer-Encoding together"
    ),
    "Transfer-Encoding can't be present with Content-Length": (
        "Content-Length and Transfer-Encoding together"
    ),
}

# Where the parser is in the message being read.
_IDLE, _HEAD, _BODY = 0, 1, 2


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
    #: Raw header pairs as received (trailing whitespace of values removed), for the
    #: WebSocket handshake.
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: The request target as sent (origin, absolute or asterisk form).
    target: str = ""
    #: Whether the connection stays open after the response.
    keep_alive: bool = True
    #: An HTTP/1.0 request: a streamed answer cannot be chunked (it ends at the close).
    http_10: bool = False

    @property
    def query(self) -> dict[str, str]:
        """Query parameters; the first occurrence wins."""
        result: dict[str, str] = {}
        for key, value in parse_qsl(self.query_string, keep_blank_values=True):
            result.setdefault(key, value)
        return result


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A request to switch protocols; what follows its head is the new protocol's."""

    request: Request
    #: Bytes received after the head, for the new protocol.
    data: bytes


@dataclass(frozen=True, slots=True)
class Rejection:
    """A request refused before it was complete; answer ``status`` and close."""

    status: int
    #: Shown to the client as ``{"error": message}``; names the problem.
    message: str


Event = Request | Upgrade | Rejection


class H1Connection:
    """The server side of one HTTP/1.1 connection, until it ends or upgrades.

    Call :meth:`receive_data` with each read, then :meth:`events_received` and
    :meth:`data_to_send`. After a :class:`Rejection`, an :class:`Upgrade`, or a request
    whose ``keep_alive`` is false, :attr:`closed` is true and further bytes are ignored:
    the shell answers, then closes (or hands the socket to the new protocol).

    :meth:`receive_data` raises nothing for any input; it only raises what
    ``body_limit`` raises.

    Args:
        body_limit: ``(method, path) -> (limit, message)``: the largest body the route
            accepts and the message of its 413.
        client: the peer's address, copied into each request.
        max_body_bytes: a cap over every route's limit.
        max_headers: most header fields in a head.
        max_head_bytes: most request line and field bytes in a head; also the window
            after which an unfinished head is refused.
    """

    def __init__(
        self,
        body_limit: Callable[[str, str], tuple[int, str]],
        *,
        client: str = "",
        max_body_bytes: int = 64 * 1024 * 1024,
        max_headers: int = MAX_HEADERS,
        max_head_bytes: int = MAX_HEAD_BYTES,
    ) -> None:
        self.client = client
        self.max_body_bytes = max_body_bytes
        self.max_headers = max_headers
        self.max_head_bytes = max_head_bytes
        #: True once no further request will be read.
        self.closed = False
        #: Requests whose first byte has been read (for the shell's request timer).
        self.requests_begun = 0
        self._body_limits = body_limit
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[Event] = []
        self._output: list[bytes] = []
        self._phase = _IDLE
        # Stream offset of the next byte, the next window mark, and what was seen there.
        self._offset = 0
        self._next_mark = max_head_bytes
        self._mark = (0, _IDLE, 0)
        # The request being read.
        self._url = b""
        self._raw: list[tuple[bytes, bytes]] = []
        self._fields: dict[str, str] = {}
        self._count = 0
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._body_limit = 0
        self._limit_message = ""
        self._method = ""
        self._path = ""
        self._query = ""
        self._close_after = False
        self._http_10 = False
        self._upgrade: Request | None = None

    # ------------------------------------------------------------------ public API

    @property
    def reading(self) -> bool:
        """Whether a request has begun and is not complete (the shell's 408 case)."""
        return self._phase != _IDLE and not self.closed

    @property
    def reading_head(self) -> bool:
        """Whether a request has begun and its head is not complete (the shell's
        header deadline, and the bound on unfinished heads)."""
        return self._phase == _HEAD and not self.closed

    def receive_data(self, data: bytes) -> None:
        """Parse bytes from the client.

        After calling this method you must call :meth:`events_received` and
        :meth:`data_to_send`.
        """
        if self.closed:
            return
        if self._offset + len(data) < self._next_mark:  # the common case: no mark
            self._offset += len(data)
            self._feed(data, b"")
            return
        # Cut the input at each window mark, so that what is seen there does not
        # depend on how the bytes were split.
        rest = memoryview(data)
        while rest:
            room = self._next_mark - self._offset  # Invariant: room >= 1.
            if len(rest) < room:
                self._offset += len(rest)
                self._feed(rest, b"")
                return
            piece, rest = rest[:room], rest[room:]
            self._offset = self._next_mark
            self._next_mark += self.max_head_bytes
            self._feed(piece, rest)
            if self.closed:
                return
            self._check_window()
            if self.closed:
                return

    def events_received(self) -> list[Event]:
        """The requests, upgrades and rejections parsed since the last call, in order."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> bytes:
        """Bytes to write now (``100 Continue``), or ``b""``."""
        if not self._output:
            return b""
        output = b"".join(self._output)
        self._output = []
        return output

    # ------------------------------------------------------------------ parsing

    def _feed(self, piece: bytes | memoryview, after: bytes | memoryview) -> None:
        try:
            self._parser.feed_data(piece)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded(bytes(piece[exc.args[0] :]) + bytes(after))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Refused):
                self._refuse(cause.status, cause.message)
            elif not isinstance(cause, _Ignored):
                self.closed = True  # the parser is dead: a bug, not the client's doing
                raise cause or exc from None
        except httptools.HttpParserError as exc:
            if not self.closed:  # else: bytes after the last request, ignored
                reason = str(exc)
                self._refuse(400, f"malformed HTTP request: {_PARSER_REASONS.get(reason, reason)}")

    def _refuse(self, status: int, message: str) -> None:
        self._events.append(Rejection(status, message))
        self.closed = True

    def _upgraded(self, data: bytes) -> None:
        request, self._upgrade = self._upgrade, None
        if request is None:  # llhttp upgrades CONNECT too, refused in the head
            self._refuse(400, "malformed HTTP request: unexpected upgrade")
            return
        request.keep_alive = False
        self._events.append(Upgrade(request, data))
        self.closed = True

    def _check_window(self) -> None:
        """At a window mark: refuse a head, or chunked framing, that spans a window."""
        mark = (self.requests_begun, self._phase, self._body_size)
        previous, self._mark = self._mark, mark
        if mark != previous or self._phase == _IDLE:
            return
        # Same message, same phase and not one byte of data in a whole window.
        if self._phase == _HEAD:
            self._refuse(431, "request head too large")
        else:
            self._refuse(431, "request trailers or chunk extensions too large")

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        if self.closed:
            raise _Ignored  # bytes after a request that closes the connection
        self.requests_begun += 1
        self._phase = _HEAD
        self._url = b""
        self._raw = []
        self._count = 0
        self._head_bytes = 0
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url  # bounded by the window

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._phase != _HEAD:
            return  # a trailer: read and dropped
        self._count += 1
        self._head_bytes += len(name) + len(value)
        if self._count <= self.max_headers:
            # llhttp drops leading whitespace, RFC 9112 §5.1 the trailing one too.
            self._raw.append((name, value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        # Every check here runs at the end of the head: a fixed point in the stream.
        self._phase = _BODY
        parser = self._parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise _Refused(505, f"HTTP/{version} is not supported: use HTTP/1.1")
        if self._count > self.max_headers:
            raise _Refused(431, f"too many header fields: more than {self.max_headers}")
        if self._head_bytes + len(self._url) > self.max_head_bytes:
            raise _Refused(431, "request head too large")
        fields: dict[str, str] = {}
        for raw_name, raw_value in self._raw:
            name = raw_name.decode("latin-1").lower()
            if name in SINGLE_FIELDS and name in fields:
                raise _Refused(
                    400, f"malformed HTTP request: repeated {SINGLE_FIELDS[name]} header"
                )
            fields[name] = raw_value.decode("latin-1")
        length = fields.get("content-length")
        coding = fields.get("transfer-encoding")
        if coding is not None:
            if length is not None:  # llhttp refuses it first; kept as the rule
                raise _Refused(
                    400, "malformed HTTP request: Content-Length and Transfer-Encoding together"
                )
            if coding.lower() != "chunked":
                raise _Refused(501, f"Transfer-Encoding {coding!r} is not supported: use chunked")
        method = parser.get_method().decode()
        if method == "CONNECT":
            raise _Refused(501, "CONNECT is not supported")
        if parser.should_upgrade() and (coding is not None or (length and int(length))):
            # llhttp would hand the body to the new protocol; a proxy would not.
            raise _Refused(400, "malformed HTTP request: an upgrade request cannot have a body")
        try:
            url = httptools.parse_url(self._url)
        except httptools.HttpParserInvalidURLError:
            raise _Refused(400, "malformed HTTP request: invalid request target") from None
        if b"%" in self._url:
            _check_utf8(self._url)
        self._method = method
        self._path = url.path.decode("latin-1") if url.path else "/"
        self._query = url.query.decode("latin-1") if url.query else ""
        self._fields = fields
        # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
        self._close_after = coding is not None and version == "1.0"
        self._http_10 = version == "1.0"
        limit, message = self._body_limits(method, self._path)
        self._body_limit = min(limit, self.max_body_bytes)
        self._limit_message = message
        if length is not None and int(length) > self._body_limit:
            raise _Refused(413, message)
        expect = fields.get("expect")
        if expect is not None and version == "1.1" and expect.lower() == "100-continue":
            # curl waits for this before sending a body over 1 KiB. (RFC 9110 §10.1.1:
            # an HTTP/1.0 client cannot expect it.)
            self._output.append(CONTINUE)

    def on_body(self, body: bytes) -> None:
        # Only data can follow inside a body span: this refusal is at a fixed point too.
        self._body_size += len(body)
        if self._body_size > self._body_limit:
            raise _Refused(413, self._limit_message)
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._phase = _IDLE
        request = Request(
            self._method,
            self._path,
            self._query,
            self._fields,
            b"".join(self._body),
            self.client,
            self._raw,
            self._url.decode("latin-1"),
        )
        self._body = []
        request.http_10 = self._http_10
        if self._parser.should_upgrade():
            self._upgrade = request  # HttpParserUpgrade follows: see _feed
            return
        if self._close_after or not self._parser.should_keep_alive():
            request.keep_alive = False
            self.closed = True
        self._events.append(request)


def _check_utf8(target: bytes) -> None:
    """Refuse a target whose percent-encoded bytes are not UTF-8 (``%FF``): decoded
    leniently, two different targets would name the same entity (both ``%FE`` and
    ``%FF`` become U+FFFD). llhttp already refuses raw bytes over 0x7F."""
    decoded = unquote_to_bytes(target)
    try:
        decoded.decode()
    except UnicodeDecodeError as exc:
        bad = "".join(f"%{byte:02X}" for byte in decoded[exc.start : exc.end])
        raise _Refused(
            400, f"malformed HTTP request: the request target is not UTF-8 once decoded ({bad})"
        ) from None


class _Refused(Exception):
    """Raised inside a parser callback to refuse the request being read."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Ignored(Exception):
    """Raised inside a parser callback to stop reading bytes that are ignored."""
