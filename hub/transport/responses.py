"""HTTP/1.1 responses to bytes, without I/O: the other half of :mod:`hub.transport.h1`.

Every response carries the CORS headers FLUX_COMPAT.md asks for. A handler's own
headers are checked on the way out (:func:`serialize_head`): a name must be a token,
and no value may hold CR, LF or NUL, so a response can never be split in two.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..wire.jsonutil import dumps

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from .streaming import BodyWriter

__all__ = [
    "ERROR_CODES",
    "LAST_CHUNK",
    "Response",
    "error_code",
    "error_response",
    "json_response",
    "preflight_headers",
    "serialize_chunk",
    "serialize_head",
    "serialize_response",
]

LAST_CHUNK = b"0\r\n\r\n"

_REASONS = {
    100: b"Continue",
    200: b"OK",
    201: b"Created",
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
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    505: b"HTTP Version Not Supported",
}

# FLUX_COMPAT.md: any origin, with PUT added to Flux's methods.
_CORS = (
    b"access-control-allow-origin: *\r\n"
    b"access-control-expose-headers: retry-after, x-next-cursor\r\n"
)
_PREFLIGHT = (
    b"access-control-allow-methods: GET, POST, PUT, DELETE, OPTIONS\r\n"
    b"access-control-allow-headers: authorization, content-type, last-event-id\r\n"
    b"access-control-max-age: 600\r\n"
)

# RFC 9110 §5.1 (token) and §5.5 (no CR, LF or NUL in a field value).
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_UNSAFE = re.compile(rb"[\x00\r\n]").search


@dataclass(slots=True)
class Response:
    """An HTTP response: a body, or a stream of chunks."""

    status: int = 200
    body: bytes = b""
    content_type: bytes | None = b"application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: When set, the body is streamed with chunked transfer-encoding.
    stream: AsyncIterator[bytes] | None = None
    #: When set, the body is written over time by this coroutine, chunked, for as
    #: long as the client listens (:mod:`hub.transport.streaming`).
    producer: Callable[[BodyWriter], Awaitable[None]] | None = None

    @property
    def chunked(self) -> bool:
        """Whether the body is streamed (chunked transfer-encoding)."""
        return self.stream is not None or self.producer is not None


def json_response(value: object, status: int = 200) -> Response:
    return Response(status, dumps(value))


#: The machine-readable ``code`` of an error, by status (docs/compat.md): a stable
#: slug a client may branch on, beside Flux's human ``error`` message.
ERROR_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    431: "header_fields_too_large",
    500: "internal",
    501: "not_implemented",
    502: "bad_gateway",
    503: "unavailable",
    505: "http_version_not_supported",
}


def error_code(status: int) -> str:
    """The default ``code`` of an error status (``client_error`` or ``server_error``
    for a status without a slug of its own)."""
    found = ERROR_CODES.get(status)
    if found is not None:
        return found
    return "server_error" if status >= 500 else "client_error"


def error_response(
    status: int,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    code: str | None = None,
    **extra: object,
) -> Response:
    """Every error is JSON ``{"error": message, "code": code}`` (FLUX_COMPAT.md: even
    framework ones), plus any ``extra`` fields.

    Args:
        status: the HTTP status.
        message: Flux's message (``error``), which Flux clients read: keep it exact.
        headers: extra response headers (``Retry-After``, ``Allow``).
        code: the machine-readable kind (``code``); by default the status's
            (:func:`error_code`).
        extra: more fields (``version`` of a conflict).
    """
    body = {"error": message, "code": code or error_code(status), **extra}
    return Response(status, dumps(body), headers=headers or [])


def preflight_headers() -> list[tuple[bytes, bytes]]:
    """Headers of a CORS preflight answer."""
    return [tuple(line.split(b": ", 1)) for line in _PREFLIGHT.strip().split(b"\r\n")]  # type: ignore[misc]


def serialize_head(
    response: Response, keep_alive: bool, chunked: bool = False, *, until_close: bool = False
) -> bytes:
    """The status line and headers of ``response``: its body has a length, or is
    ``chunked``, or (``until_close``: a streamed answer to HTTP/1.0) ends when the
    connection closes.

    Raises:
        ValueError: a header name is not a token, or a header value (or the content
            type) holds CR, LF or NUL. Such a header comes from a bug or from client
            input copied unchecked; it is refused rather than cleaned, so the bug shows
            (the shell logs it and answers 500) and no response is ever split.
    """
    reason = _REASONS.get(response.status, b"Unknown")
    parts = [b"HTTP/1.1 %d %b\r\n" % (response.status, reason), _CORS]
    if response.content_type is not None and response.status not in (204, 304):
        if _UNSAFE(response.content_type) is not None:
            raise ValueError("the response's content type holds CR, LF or NUL")
        parts.append(b"content-type: %b\r\n" % response.content_type)
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    elif until_close:
        keep_alive = False
    elif response.status not in (204, 304):
        parts.append(b"content-length: %d\r\n" % len(response.body))
    for name, value in response.headers:
        if _TOKEN(name) is None:
            raise ValueError(f"response header name {name!r} is not a token")
        if _UNSAFE(value) is not None:
            raise ValueError(f"response header {name!r} holds CR, LF or NUL in its value")
        parts.append(b"%b: %b\r\n" % (name, value))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def serialize_response(response: Response, keep_alive: bool) -> bytes:
    """A whole response without a stream. Raises what :func:`serialize_head` raises."""
    head = serialize_head(response, keep_alive)
    return head + response.body if response.status not in (204, 304) else head


def serialize_chunk(data: bytes) -> bytes:
    """One chunk of a streamed body (``data`` must not be empty: that ends the body)."""
    return b"%x\r\n%b\r\n" % (len(data), data)
