"""Exceptions of the Flux client SDK.

::

    FluxError
    ├── RequestError      the hub refused a request (an ``error`` frame or HTTP error)
    │   └── PublishError  an event was refused (``code``: invalid, conflict, …)
    │       └── ConflictError   ``if_version`` did not match (``current`` version)
    ├── GapError          a subscription received a delta that does not follow
    └── ClientClosed      the client was closed
"""

from __future__ import annotations

__all__ = [
    "ClientClosed",
    "ConflictError",
    "FluxError",
    "GapError",
    "PublishError",
    "RequestError",
]


class FluxError(Exception):
    """Base class of the SDK's exceptions."""


class RequestError(FluxError):
    """The hub refused a request; ``code`` says why (docs/protocol.md, errors)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class PublishError(RequestError):
    """An event was refused. ``event_id`` is the event's id."""

    def __init__(self, code: str, message: str, event_id: str | None) -> None:
        super().__init__(code, message)
        self.event_id = event_id


class ConflictError(PublishError):
    """``if_version`` did not match; ``current`` is the entity's version (0: absent)."""

    def __init__(self, message: str, event_id: str | None, current: int) -> None:
        super().__init__("conflict", message, event_id)
        self.current = current


class GapError(FluxError):
    """A delta did not follow the version held: the client's copy cannot be trusted.

    The hub promises this never happens; the cache raises it rather than hold a
    wrong state silently.
    """


class ClientClosed(FluxError):
    """The client was closed while a call was waiting."""
