"""All exceptions raised by the hub, in one tree.

Branches are grouped by what the caller can do about them::

    HubError
    ├── ConfigError            bad settings or arguments: fix them and start again
    ├── ProtocolError          the client sent something we refuse: tell it why
    │   ├── InvalidEvent       an event envelope breaks a Flux rule (HTTP 400)
    │   │   └── MalformedEvent not even the envelope's shape (fails a whole Flux batch)
    │   ├── PayloadTooLarge    a body or frame is over its limit (HTTP 413, close 1009)
    │   └── BadRequest         any other malformed request (HTTP 400/422)
    │       └── WhereError     a value filter (``where``) that does not parse
    ├── Overloaded             the hub is at a bound (slow consumer, full queue): retry later
    ├── LogUnavailable         Redis does not answer or refuses: retryable
    ├── Closed                 our side is shutting down
    └── Broken                 the peer or the infrastructure went away

Mapping an error to a WebSocket close code happens in exactly one place:
:func:`close_code_for`.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "Broken",
    "Closed",
    "ConfigError",
    "HubError",
    "InvalidEvent",
    "LogUnavailable",
    "MalformedEvent",
    "Overloaded",
    "PayloadTooLarge",
    "ProtocolError",
    "WhereError",
    "close_code_for",
]


class HubError(Exception):
    """Base class of every exception the hub raises on purpose."""


class ConfigError(HubError):
    """A setting, flag or environment variable has a value we cannot use."""


class ProtocolError(HubError):
    """The client sent something the hub refuses.

    The message is shown to the client as is, so it must name the problem.
    """

    #: HTTP status used when this error ends a REST request.
    status: int = 400


class InvalidEvent(ProtocolError):
    """An event envelope breaks one of the rules of FLUX_COMPAT.md §1.2."""


class MalformedEvent(InvalidEvent):
    """The value is not shaped like an event (a missing field, a wrong type, bad JSON).

    Flux reports these through serde, before any rule, and they fail a whole batch.
    """


class BadRequest(ProtocolError):
    """A request is malformed in a way that is not an envelope rule."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class WhereError(BadRequest):
    """A value filter (``where``, hub/core/where.py) is malformed or over a bound.

    The message starts with the path of the offending part (``where.load: ...``).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)


class PayloadTooLarge(ProtocolError):
    """A body, frame or value is larger than its configured limit."""

    status = 413


class Overloaded(HubError):
    """The hub reached one of its bounds; the client should retry later."""


class LogUnavailable(HubError):
    """Redis cannot be reached or refused a command. Retryable."""


class Closed(HubError):
    """Our side is closing: the hub is shutting down."""


class Broken(HubError):
    """The peer or the infrastructure went away without closing properly."""


# RFC 6455 §7.4.1 close codes used by the hub.
_CLOSE_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (PayloadTooLarge, 1009),  # message too big
    (ProtocolError, 1008),  # policy violation
    (Overloaded, 1013),  # try again later
    (Closed, 1001),  # going away
    (LogUnavailable, 1011),  # internal error (retryable)
)


def close_code_for(exc: BaseException) -> int:
    """Return the WebSocket close code that reports ``exc`` to a client.

    Args:
        exc: the error that ends the connection.

    Returns:
        An RFC 6455 close code; 1011 (internal error) for anything unexpected.
    """
    for kind, code in _CLOSE_CODES:
        if isinstance(exc, kind):
            return code
    return 1011
