"""The OAuth 2.0 authorization-code flow of FLUX_COMPAT.md §1.10.

``GET …/oauth/start`` redirects (307) to the provider with a fresh CSRF ``state``;
the provider sends the user back to ``GET …/oauth/callback?code&state``, where the
hub consumes the state (single use, 600 s), exchanges the code at the provider's
token endpoint and stores the credentials, encrypted. States live in Redis, so the
callback may reach any hub of the cluster.

Token exchange as Flux does it: a form POST of ``grant_type=authorization_code``,
``code``, ``redirect_uri``, ``client_id`` and ``client_secret`` with
``Accept: application/json``; the answer must be JSON with a string
``access_token`` (``refresh_token`` and ``expires_in`` are optional). The request is
bounded by ``poll_timeout`` (``time_limit``) and the answer by ``max_poll_bytes``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING
from urllib.parse import quote

import anyio
import httpx

from ..errors import Broken
from ..wire.jsonutil import JSONError, loads
from .base import Credentials

if TYPE_CHECKING:
    from .base import OAuthConfig

__all__ = ["authorize_url", "callback_url", "exchange_code"]

#: Characters of a provider's error body quoted back in a 502.
MAX_ERROR_BODY = 1000


def callback_url(base_url: str, connector: str) -> str:
    """The ``redirect_uri`` of a connector: ``<base>/api/connectors/<name>/oauth/callback``."""
    return f"{base_url.rstrip('/')}/api/connectors/{connector}/oauth/callback"


def authorize_url(config: OAuthConfig, *, client_id: str, redirect_uri: str, state: str) -> str:
    """Where ``oauth/start`` redirects to, with Flux's query (values percent-encoded)."""
    query = (
        f"client_id={_q(client_id)}&redirect_uri={_q(redirect_uri)}"
        f"&scope={_q(' '.join(config.scopes))}&state={_q(state)}&response_type=code"
    )
    separator = "&" if "?" in config.auth_url else "?"
    return config.auth_url + separator + query


async def exchange_code(
    client: httpx.AsyncClient,
    token_url: str,
    *,
    code: str,
    redirect_uri: str,
    client_id: str,
    client_secret: str,
    time_limit: float,
    max_bytes: int,
    now_ms: int,
) -> Credentials:
    """Exchange an authorization code for credentials.

    Raises:
        Broken: with Flux's message: ``Failed to send token exchange request``,
            ``Token exchange failed with status <code> <reason>: <body>`` or
            ``Failed to parse token response``.
    """
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": client_id,
        "client_secret": client_secret,
    }
    body = bytearray()
    try:
        with anyio.fail_after(time_limit):
            async with client.stream(
                "POST",
                token_url,
                data=form,
                headers={"accept": "application/json"},
                timeout=time_limit,
            ) as response:
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise Broken("Failed to parse token response")
    except (TimeoutError, httpx.HTTPError):
        raise Broken("Failed to send token exchange request") from None
    if not response.is_success:
        text = bytes(body[:MAX_ERROR_BODY]).decode(errors="replace")
        raise Broken(
            f"Token exchange failed with status {response.status_code}"
            f" {response.reason_phrase}: {text}"
        )
    try:
        value = loads(bytes(body))
    except JSONError:
        raise Broken("Failed to parse token response") from None
    if not isinstance(value, dict) or not isinstance(value.get("access_token"), str):
        raise Broken("Failed to parse token response")
    refresh = value.get("refresh_token")
    expires_in = value.get("expires_in")
    expires_at = None
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        if math.isfinite(expires_in):
            expires_at = now_ms + math.floor(expires_in * 1000)
    return Credentials(
        value["access_token"], refresh if isinstance(refresh, str) else None, expires_at
    )


def _q(text: str) -> str:
    # Like Rust's urlencoding::encode: everything but unreserved characters.
    return quote(text, safe="")
