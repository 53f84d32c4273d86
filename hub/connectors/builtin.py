"""The built-in catalogue of FLUX_COMPAT.md §1.10: github, gmail, linkedin, calendar.

Their names, poll intervals and OAuth endpoints are Flux's. None of them fetches yet
(in Flux, only GitHub does, in a separate service): credentials can be stored and
OAuth flows completed, and each poll records ``fetching is not implemented for
connector '<name>'`` as the connector's ``last_error``, so the status says what
happens instead of staying silent. The generic HTTP poller (``poller.py``) is the
connector that does fetch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import OAuthConfig

if TYPE_CHECKING:
    from .base import Connector, Credentials

__all__ = ["BUILTIN_CONNECTORS", "StubConnector"]

_GOOGLE_AUTH = "https://accounts.google.com/o/oauth2/v2/auth"
_GOOGLE_TOKEN = "https://oauth2.googleapis.com/token"


@dataclass(frozen=True, slots=True)
class StubConnector:
    """A connector that is listed and configurable but does not fetch yet."""

    name: str
    oauth_config: OAuthConfig | None
    poll_interval: float

    async def fetch(self, credentials: Credentials | None) -> list[dict[str, Any]]:
        """Raises NotImplementedError: this connector does not fetch yet."""
        raise NotImplementedError(f"fetching is not implemented for connector '{self.name}'")


#: In Flux's order (the order of ``GET /api/connectors``).
BUILTIN_CONNECTORS: tuple[Connector, ...] = (
    StubConnector(
        "github",
        OAuthConfig(
            "https://github.com/login/oauth/authorize",
            "https://github.com/login/oauth/access_token",
            ("repo", "read:user"),
        ),
        300,
    ),
    StubConnector(
        "gmail",
        OAuthConfig(
            _GOOGLE_AUTH, _GOOGLE_TOKEN, ("https://www.googleapis.com/auth/gmail.readonly",)
        ),
        60,
    ),
    StubConnector(
        "linkedin",
        OAuthConfig(
            "https://www.linkedin.com/oauth/v2/authorization",
            "https://www.linkedin.com/oauth/v2/accessToken",
            ("r_liteprofile", "r_emailaddress"),
        ),
        600,
    ),
    StubConnector(
        "calendar",
        OAuthConfig(
            _GOOGLE_AUTH, _GOOGLE_TOKEN, ("https://www.googleapis.com/auth/calendar.readonly",)
        ),
        300,
    ),
)
