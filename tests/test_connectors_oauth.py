"""The OAuth flow of FLUX_COMPAT.md §1.10 against a real hub and a local fake provider.

The fake provider is a real HTTP server (tests/local_http.py) playing the token
endpoint; a connector added to the hub's catalogue points its OAuth config at it, so
the whole flow runs: start (307), callback, code exchange over HTTP, encrypted
storage, and the connector polled with the access token it received.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hub.app import Hub
from hub.config import Settings
from hub.connectors import (
    ConnectorsExtension,
    Credentials,
    OAuthConfig,
    connector_event,
)
from hub.store import Keys, Store
from hub.transport.responses import error_code

from .conftest import make_settings, running_hub, timeout
from .local_http import LocalServer, Reply, Seen, json_reply, until
from .processes import free_port

KEY = base64.b64encode(bytes(range(32))).decode()
BASE = "https://hub.example.com/"
CLIENTS = {"fake": ("client id/1", "client-secret-1")}
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def _settings(key_prefix: str, *, public: bool = False, clients: bool = True) -> Settings:
    return make_settings(
        key_prefix,
        gateway={"auth_enabled": public},
        connectors={
            "min_poll_interval": 0.1,
            "poll_timeout": 0.5,
            "encryption_key": KEY,
            "oauth_callback_base_url": BASE,
            "oauth_clients": CLIENTS if clients else {},
        },
    )


@pytest.fixture
def settings(key_prefix: str) -> Settings:
    return _settings(key_prefix)


class Provider:
    """The fake provider's token endpoint; its answer is set by the test."""

    def __init__(self) -> None:
        self.reply = json_reply(
            {"access_token": "at-123", "refresh_token": "rt-456", "expires_in": 3600}
        )

    def __call__(self, seen: Seen) -> Reply:
        return self.reply


@pytest.fixture
async def provider() -> AsyncIterator[tuple[LocalServer, Provider]]:
    answer = Provider()
    async with LocalServer(answer) as server:
        yield server, answer


@dataclass(frozen=True)
class Fake:
    """A connector whose OAuth provider is the local fake; it publishes its token."""

    oauth_config: OAuthConfig
    name: str = "fake"
    poll_interval: float = 0.2

    async def fetch(self, credentials: Credentials | None) -> list[dict[str, Any]]:
        assert credentials is not None
        properties = {"token": credentials.access_token, "refresh": credentials.refresh_token}
        return [connector_event("fake/account", properties, stream="fake", source="fake")]


def _add_fake(hub: Hub, token_url: str) -> None:
    extension = next(e for e in hub.extensions if isinstance(e, ConnectorsExtension))
    config = OAuthConfig("https://provider.example/authorize", token_url, ("read", "write:all"))
    extension.add(Fake(config))


@pytest.fixture
async def fake_hub(
    hub: Hub, provider: tuple[LocalServer, Provider]
) -> AsyncIterator[tuple[Hub, LocalServer, Provider]]:
    server, answer = provider
    _add_fake(hub, server.url("/token"))
    yield hub, server, answer


def _client(hub: Hub) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}", timeout=timeout(10))


async def _start(http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> str:
    reply = await http.get("/api/connectors/fake/oauth/start", headers=headers or {})
    assert reply.status_code == 307, reply.text
    state = parse_qs(urlsplit(reply.headers["location"]).query)["state"][0]
    return state


# ---------------------------------------------------------------------- start


async def test_start_redirects_307_to_the_provider_with_flux_query(
    fake_hub: tuple[Hub, LocalServer, Provider], http: httpx.AsyncClient
) -> None:
    reply = await http.get("/api/connectors/fake/oauth/start")
    assert reply.status_code == 307 and reply.content == b""
    location = reply.headers["location"]
    base, _, query = location.partition("?")
    assert base == "https://provider.example/authorize"
    names = [part.split("=", 1)[0] for part in query.split("&")]
    assert names == ["client_id", "redirect_uri", "scope", "state", "response_type"]
    params = dict(part.split("=", 1) for part in query.split("&"))
    assert params["client_id"] == "client%20id%2F1"
    assert params["redirect_uri"] == (
        "https%3A%2F%2Fhub.example.com%2Fapi%2Fconnectors%2Ffake%2Foauth%2Fcallback"
    )
    assert params["scope"] == "read%20write%3Aall"
    assert UUID4.fullmatch(params["state"]) and params["response_type"] == "code"


async def test_start_state_expires_after_600_seconds(
    fake_hub: tuple[Hub, LocalServer, Provider], http: httpx.AsyncClient, store: Store
) -> None:
    state = await _start(http)
    ttl = await store.client.pttl(Keys(store.keys.prefix).oauth_state(state))
    assert 590_000 < ttl <= 600_000
    # As if 600 s had passed.
    await store.client.pexpire(Keys(store.keys.prefix).oauth_state(state), 1)
    await asyncio.sleep(0.01)
    reply = await http.get(f"/api/connectors/fake/oauth/callback?code=c&state={state}")
    assert reply.status_code == 401
    assert reply.json() == {
        "error": "Invalid or expired OAuth state (possible CSRF attack)",
        "code": "unauthorized",
    }


async def test_start_without_client_config_is_500_naming_the_variables(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.get("/api/connectors/github/oauth/start")
    assert reply.status_code == 500
    assert reply.json() == {
        "error": "OAuth not configured for connector 'github'. Set FLUX_OAUTH_GITHUB_CLIENT_ID"
        " and FLUX_OAUTH_GITHUB_CLIENT_SECRET environment variables.",
        "code": "internal",
    }


async def test_start_of_unknown_connector_is_404(http: httpx.AsyncClient) -> None:
    reply = await http.get("/api/connectors/nope/oauth/start")
    assert reply.status_code == 404
    assert reply.json() == {"error": "Connector 'nope' not found", "code": "not_found"}


async def test_start_check_order_in_public_mode(store: Store, key_prefix: str) -> None:
    async with running_hub(_settings(key_prefix, public=True), store) as hub, _client(hub) as http:
        unknown = await http.get("/api/connectors/nope/oauth/start")
        assert unknown.status_code == 404  # the name first
        anonymous = await http.get("/api/connectors/github/oauth/start")
        assert anonymous.status_code == 401  # then the token
        assert anonymous.json() == {
            "error": "Invalid token: Authorization token not provided",
            "code": "unauthorized",
        }
        unconfigured = await http.get(
            "/api/connectors/github/oauth/start", headers={"authorization": "Bearer u"}
        )
        assert unconfigured.status_code == 500  # then the client configuration


# ---------------------------------------------------------------------- callback


async def test_full_flow_stores_credentials_and_the_connector_polls_with_them(
    fake_hub: tuple[Hub, LocalServer, Provider], http: httpx.AsyncClient
) -> None:
    _, server, _ = fake_hub
    state = await _start(http)
    reply = await http.get(f"/api/connectors/fake/oauth/callback?code=the%20code&state={state}")
    assert reply.status_code == 200
    assert reply.json() == {
        "success": True,
        "message": "Successfully connected fake",
        "connector": "fake",
    }
    exchange = server.requests[0]
    assert (exchange.method, exchange.target) == ("POST", "/token")
    assert exchange.headers["accept"] == "application/json"
    assert exchange.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(exchange.body.decode()) == {
        "grant_type": ["authorization_code"],
        "code": ["the code"],
        "redirect_uri": [f"{BASE.rstrip('/')}/api/connectors/fake/oauth/callback"],
        "client_id": ["client id/1"],
        "client_secret": ["client-secret-1"],
    }
    listing = (await http.get("/api/connectors")).json()["connectors"]
    assert {"name": "fake", "enabled": True, "status": "configured"} in listing

    async def polled() -> bool:
        return (await http.get("/api/state/entities/fake%2Faccount")).status_code == 200

    await until(polled)
    entity = (await http.get("/api/state/entities/fake%2Faccount")).json()
    assert entity["properties"] == {"token": "at-123", "refresh": "rt-456"}
    # The state was single use.
    again = await http.get(f"/api/connectors/fake/oauth/callback?code=x&state={state}")
    assert again.status_code == 401


CALLBACK_ERRORS = [
    pytest.param(
        "error=access_denied&error_description=User%20cancelled&code=c&state=s",
        400,
        "OAuth authorization failed: access_denied - User cancelled",
        id="error",
    ),
    pytest.param(
        "error=access_denied",
        400,
        "OAuth authorization failed: access_denied - Unknown error",
        id="error-no-description",
    ),
    pytest.param("state=s", 400, "Missing 'code' parameter", id="no-code"),
    pytest.param("code=c", 400, "Missing 'state' parameter", id="no-state"),
    pytest.param(
        "code=c&state=never-issued",
        401,
        "Invalid or expired OAuth state (possible CSRF attack)",
        id="bad-state",
    ),
]


@pytest.mark.parametrize(("query", "status", "message"), CALLBACK_ERRORS)
async def test_callback_refusals(
    fake_hub: tuple[Hub, LocalServer, Provider],
    http: httpx.AsyncClient,
    query: str,
    status: int,
    message: str,
) -> None:
    reply = await http.get(f"/api/connectors/fake/oauth/callback?{query}")
    assert reply.status_code == status
    assert reply.json() == {"error": message, "code": error_code(status)}
    _, server, _ = fake_hub
    assert server.requests == []


async def test_callback_for_another_connector_is_a_mismatch_and_uses_the_state(
    fake_hub: tuple[Hub, LocalServer, Provider], http: httpx.AsyncClient
) -> None:
    state = await _start(http)
    reply = await http.get(f"/api/connectors/github/oauth/callback?code=c&state={state}")
    assert reply.status_code == 400 and reply.json() == {
        "error": "Connector name mismatch",
        "code": "bad_request",
    }
    reply = await http.get(f"/api/connectors/fake/oauth/callback?code=c&state={state}")
    assert reply.status_code == 401


async def test_callback_on_another_hub_without_client_config_is_500(
    fake_hub: tuple[Hub, LocalServer, Provider],
    http: httpx.AsyncClient,
    store: Store,
    key_prefix: str,
) -> None:
    _, server, _ = fake_hub
    state = await _start(http)  # on the hub that has the client configuration
    other_settings = _settings(key_prefix, clients=False)
    async with running_hub(other_settings, store) as other, _client(other) as elsewhere:
        _add_fake(other, server.url("/token"))
        reply = await elsewhere.get(f"/api/connectors/fake/oauth/callback?code=c&state={state}")
    assert reply.status_code == 500
    assert reply.json() == {
        "error": "OAuth not configured for connector 'fake'",
        "code": "internal",
    }


async def test_callback_reaches_any_hub_of_the_cluster(
    fake_hub: tuple[Hub, LocalServer, Provider], http: httpx.AsyncClient, store: Store
) -> None:
    _, server, _ = fake_hub
    state = await _start(http)
    async with running_hub(fake_hub[0].settings, store) as other, _client(other) as elsewhere:
        _add_fake(other, server.url("/token"))
        reply = await elsewhere.get(f"/api/connectors/fake/oauth/callback?code=c&state={state}")
        assert reply.status_code == 200
    listing = (await http.get("/api/connectors")).json()["connectors"]
    assert {"name": "fake", "enabled": True, "status": "configured"} in listing


EXCHANGE_FAILURES = [
    pytest.param(
        Reply(400, b'{"error":"bad_verification_code"}'),
        "Failed to exchange authorization code: Token exchange failed with status 400 Bad"
        ' Request: {"error":"bad_verification_code"}',
        id="refused",
    ),
    pytest.param(
        Reply(200, b"access_token=not-json"),
        "Failed to exchange authorization code: Failed to parse token response",
        id="garbage",
    ),
    pytest.param(
        json_reply({"token": "no access_token"}),
        "Failed to exchange authorization code: Failed to parse token response",
        id="no-access-token",
    ),
    pytest.param(
        Reply(hang=True),
        "Failed to exchange authorization code: Failed to send token exchange request",
        id="too-slow",
    ),
]


@pytest.mark.parametrize(("answer", "message"), EXCHANGE_FAILURES)
async def test_failed_code_exchange_is_502_and_stores_nothing(
    fake_hub: tuple[Hub, LocalServer, Provider],
    http: httpx.AsyncClient,
    answer: Reply,
    message: str,
) -> None:
    _, _, provider = fake_hub
    provider.reply = answer
    state = await _start(http)
    reply = await http.get(f"/api/connectors/fake/oauth/callback?code=c&state={state}")
    assert reply.status_code == 502
    assert reply.json() == {"error": message, "code": "bad_gateway"}
    detail = (await http.get("/api/connectors/fake")).json()
    assert detail["status"] == "not_configured"


async def test_provider_down_is_502(hub: Hub, http: httpx.AsyncClient) -> None:
    _add_fake(hub, f"http://127.0.0.1:{free_port()}/token")
    state = await _start(http)
    reply = await http.get(f"/api/connectors/fake/oauth/callback?code=c&state={state}")
    assert reply.status_code == 502
    assert reply.json() == {
        "error": "Failed to exchange authorization code: Failed to send token exchange request",
        "code": "bad_gateway",
    }


async def test_public_mode_flow_stores_for_the_user_who_started_it(
    store: Store, key_prefix: str, provider: tuple[LocalServer, Provider]
) -> None:
    server, _ = provider
    alice = {"authorization": "Bearer alice"}
    async with running_hub(_settings(key_prefix, public=True), store) as hub, _client(hub) as http:
        _add_fake(hub, server.url("/token"))
        state = await _start(http, alice)
        # The callback is open: the provider's redirect carries no bearer token.
        reply = await http.get(f"/api/connectors/fake/oauth/callback?code=c&state={state}")
        assert reply.status_code == 200
        mine = (await http.get("/api/connectors/fake", headers=alice)).json()
        assert mine["status"] == "configured"
        theirs = await http.get("/api/connectors/fake", headers={"authorization": "Bearer bob"})
        assert theirs.json()["status"] == "not_configured"
