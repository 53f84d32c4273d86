"""The connector interface, shaped like Flux's ``Connector`` trait (FLUX_COMPAT.md §6).

A connector turns an external API into events. The hub schedules it: for each user
who stored credentials for it (a token through ``POST /api/connectors/:name/token``, or
an OAuth flow), one hub polls it every :attr:`Connector.poll_interval` seconds, calls
:meth:`Connector.fetch` with the decrypted credentials, validates the events it
returns as any published event, and applies them. A failure (an exception from
``fetch``, an invalid event) is recorded in the connector's status and the next poll
is backed off; it never reaches the hub.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..wire.jsonutil import JSONError, dumps, loads

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CONNECTOR_NAME",
    "Connector",
    "Credentials",
    "FetchResult",
    "OAuthConfig",
    "connector_event",
]

#: What a connector's name may be: it appears in paths and in environment variable
#: names (``FLUX_OAUTH_<NAME>_CLIENT_ID``).
CONNECTOR_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True, slots=True)
class OAuthConfig:
    """Where a connector's OAuth 2.0 authorization-code flow happens."""

    #: The provider's authorization page (the user is redirected there).
    auth_url: str
    #: The provider's token endpoint (the hub exchanges the code there).
    token_url: str
    #: Scopes requested, sent space-separated.
    scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a user stored for a connector (Flux's ``Credentials``)."""

    access_token: str
    refresh_token: str | None = None
    #: When the access token expires, in ms since the epoch; None if unknown.
    expires_at: int | None = None

    def to_json(self) -> bytes:
        """The stored form (encrypted before it reaches Redis)."""
        return dumps(
            {
                "access_token": self.access_token,
                "refresh_token": self.refresh_token,
                "expires_at": self.expires_at,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Credentials | None:
        """Read the stored form; None if it is not one."""
        try:
            value = loads(data)
        except JSONError:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("access_token"), str):
            return None
        refresh = value.get("refresh_token")
        expires = value.get("expires_at")
        return cls(
            value["access_token"],
            refresh if isinstance(refresh, str) else None,
            expires if isinstance(expires, int) and not isinstance(expires, bool) else None,
        )


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What a fetch read, when a plain list of events does not say enough.

    A connector that read part of its source before failing (a rate limit half-way
    through, one endpoint refused) returns what it read with the error: the events
    are applied and the error becomes the status' ``last_error``.
    """

    events: list[dict[str, Any]]
    #: Recorded as ``last_error`` (the events are applied all the same).
    error: str | None = None
    #: No poll before this wall time, in ms since the epoch (a rate limit's reset):
    #: the status' ``next_poll`` shows it, and no hub polls earlier.
    not_before: int | None = None
    #: The connector's own numbers about this fetch (requests made, quota left…),
    #: kept in the job's status; docs/connectors.md names those the API shows.
    figures: Mapping[str, int] = field(default_factory=dict)


class Connector(Protocol):
    """A source of events polled by the hub. Structural: no base class needed.

    Implementations must be safe to call from several polls at once (one per user).
    A ``fetch`` that takes longer than 6 × ``poll_timeout`` (60 s by default) is
    cancelled and the poll fails.
    """

    @property
    def name(self) -> str:
        """Unique, matching :data:`CONNECTOR_NAME`; used in paths and env vars."""
        ...

    @property
    def oauth_config(self) -> OAuthConfig | None:
        """The OAuth flow of this connector; None if it takes tokens only."""
        ...

    @property
    def poll_interval(self) -> float:
        """Seconds between two polls of one user's credentials."""
        ...

    async def fetch(self, credentials: Credentials | None) -> list[dict[str, Any]] | FetchResult:
        """Read the external API once.

        Args:
            credentials: the user's decrypted credentials (None only for generic
                pollers without authentication).

        Returns:
            Events in the ``POST /api/events`` shape (see :func:`connector_event`),
            or a :class:`FetchResult` holding them with an error or a time before
            which the next poll may not happen.

        Raises:
            Exception: any failure; its message becomes the status' ``last_error``.
        """
        ...


def connector_event(
    entity_id: str, properties: dict[str, Any], *, stream: str, source: str
) -> dict[str, Any]:
    """An event as :meth:`Connector.fetch` returns it (no timestamp: the hub's time)."""
    return {
        "stream": stream,
        "source": source,
        "payload": {"entity_id": entity_id, "properties": properties},
    }
