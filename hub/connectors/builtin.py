"""The built-in catalogue of FLUX_COMPAT.md §1.10: github, gmail, linkedin, calendar.

``github`` fetches (:mod:`.github`). ``gmail``, ``linkedin`` and ``calendar`` are
listed, in Flux's order and with Flux's poll intervals, but **not available**: nothing
in the hub fetches from them (they cannot be built and tested here), so the hub says
so instead of pretending (docs/connectors.md, "Not available"):

- ``GET /api/connectors`` and ``GET /api/connectors/:name`` report the status
  ``not_available`` (and ``available: false`` with the reason in the detail);
- storing a token or starting an OAuth flow for them is refused (409 Conflict, with
  the reason), so no credential is kept for a connector that would never use it;
- the scheduler never polls them (credentials stored by an older hub stay until
  deleted, unpolled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .github import GitHubConnector

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from .base import Connector, Credentials, OAuthConfig

__all__ = [
    "BUILTIN_NAMES",
    "UNAVAILABLE_CONNECTORS",
    "UnavailableConnector",
    "builtin_connectors",
    "unavailable_reason",
]

#: Flux's catalogue, in Flux's order (the order of ``GET /api/connectors``).
BUILTIN_NAMES = ("github", "gmail", "linkedin", "calendar")


@dataclass(frozen=True, slots=True)
class UnavailableConnector:
    """A connector Flux lists that this hub cannot fetch from: listed, never polled."""

    name: str
    poll_interval: float
    #: Why, in a sentence: shown in the status and in every refusal.
    reason: str
    oauth_config: OAuthConfig | None = None

    async def fetch(self, credentials: Credentials | None) -> list[dict[str, Any]]:
        """Never called (the scheduler skips unavailable connectors); raises."""
        raise NotImplementedError(self.reason)


def _unavailable(name: str, service: str, interval: float) -> UnavailableConnector:
    return UnavailableConnector(
        name,
        interval,
        f"Connector '{name}' is not available: this hub does not fetch from {service}"
        " (listed for compatibility with Flux; see docs/connectors.md)",
    )


#: Flux's connectors the hub lists but does not fetch from.
UNAVAILABLE_CONNECTORS: tuple[UnavailableConnector, ...] = (
    _unavailable("gmail", "Gmail", 60),
    _unavailable("linkedin", "LinkedIn", 600),
    _unavailable("calendar", "Google Calendar", 300),
)


def builtin_connectors(
    client: httpx.AsyncClient,
    *,
    github_api_url: str,
    timeout: float,
    clock: Callable[[], float],
) -> list[Connector]:
    """The built-in catalogue, in Flux's order."""
    github = GitHubConnector(client, api_url=github_api_url, timeout=timeout, clock=clock)
    return [github, *UNAVAILABLE_CONNECTORS]


def unavailable_reason(connector: Connector) -> str | None:
    """Why a connector cannot fetch; None if it can."""
    return connector.reason if isinstance(connector, UnavailableConnector) else None
