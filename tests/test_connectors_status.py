"""Connector status and token endpoints (FLUX_COMPAT.md §1.10), against a real hub.

Kept from Flux: shapes, statuses, error strings and check orders. Fixed (§9 #19): the
single-connector endpoint agrees with the list in Internal mode, and ``last_poll`` /
``last_error`` are real. Also: a Public-mode token is stored only as its SHA-256, and
a connector added to the catalogue is polled with its user's decrypted credentials.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from dataclasses import dataclass
from typing import Any, cast

import httpx
import pytest

from hub.app import Hub
from hub.config import Settings
from hub.connectors import (
    BUILTIN_NAMES,
    ConnectorsExtension,
    Credentials,
    OAuthConfig,
    connector_event,
)
from hub.connectors.crypto import SecretBox
from hub.connectors.github import GITHUB_API_URL, github_oauth
from hub.engine.auth import hash_token
from hub.errors import ConfigError
from hub.store import Store

from .conftest import make_settings, running_hub, timeout
from .local_http import until
from .processes import free_port

KEY = base64.b64encode(bytes(range(32))).decode()
OTHER_KEY = base64.b64encode(bytes(range(1, 33))).decode()
#: The github connector polls a port nothing listens on (tests/test_connectors_github.py
#: gives it a GitHub to talk to).
GITHUB_NOWHERE = f"http://127.0.0.1:{free_port()}"
FAST = {"min_poll_interval": 0.1, "poll_timeout": 0.1, "github_api_url": GITHUB_NOWHERE}
NAMES = ["github", "gmail", "linkedin", "calendar"]
INTERVALS = {"github": 300, "gmail": 60, "linkedin": 600, "calendar": 300}


@pytest.fixture
def settings(key_prefix: str) -> Settings:
    return make_settings(key_prefix, connectors={**FAST, "encryption_key": KEY})


def _client(hub: Hub) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}", timeout=timeout(10))


def _extension(hub: Hub) -> ConnectorsExtension:
    return next(e for e in hub.extensions if isinstance(e, ConnectorsExtension))


def _status(name: str, configured: tuple[str, ...]) -> str:
    if name != "github":
        return "not_available"
    return "configured" if name in configured else "not_configured"


def _listing(*configured: str) -> dict[str, Any]:
    return {
        "connectors": [
            {"name": n, "enabled": n in configured, "status": _status(n, configured)} for n in NAMES
        ]
    }


async def _detail_until(http: httpx.AsyncClient, name: str, key: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def ready() -> bool:
        found.clear()
        found.update((await http.get(f"/api/connectors/{name}")).json())
        return key in found

    await until(ready)
    return found


# ---------------------------------------------------------------------- without a key


async def test_without_key_every_connector_is_not_configured(store: Store, key_prefix: str) -> None:
    async with running_hub(make_settings(key_prefix), store) as hub, _client(hub) as http:
        reply = await http.get("/api/connectors")
        assert reply.status_code == 200 and reply.json() == _listing()
        detail = await http.get("/api/connectors/github")
        assert detail.json() == {
            "name": "github",
            "enabled": False,
            "status": "not_configured",
            "poll_interval_seconds": 300,
        }
        for method in ("POST", "DELETE"):
            reply = await http.request(method, "/api/connectors/github/token", json={"token": "t"})
            assert reply.status_code == 500
            assert reply.json() == {
                "error": "Credential storage not available (FLUX_ENCRYPTION_KEY not set)",
                "code": "internal",
            }
        for path in ("oauth/start", "oauth/callback?code=c&state=s"):
            reply = await http.get(f"/api/connectors/github/{path}")
            assert reply.status_code == 404
            assert reply.json() == {
                "error": "OAuth is not available: FLUX_ENCRYPTION_KEY is not set",
                "code": "not_found",
            }


def test_unusable_encryption_key_stops_the_hub_from_starting() -> None:
    # Refused when the settings are read: `flux serve` exits naming the variable.
    for key, problem in [
        ("not base64!", "must be base64"),
        (base64.b64encode(b"short").decode(), "must decode to 32 bytes (AES-256), not 5"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(problem)) as refused:
            Settings.from_env({"FLUX_ENCRYPTION_KEY": key})
        assert str(refused.value).startswith("FLUX_ENCRYPTION_KEY: ")


# ---------------------------------------------------------------------- Internal mode


async def test_stored_token_shows_in_list_and_detail_with_real_poll_status(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.post("/api/connectors/github/token", json={"token": "ghp_x"})
    assert reply.status_code == 200 and reply.json() == {"success": True}
    assert (await http.get("/api/connectors")).json() == _listing("github")
    # Flux reports not_configured here in Internal mode (§9 #19); the hub agrees with
    # the list, and the first poll is real (here: GitHub is unreachable).
    detail = await _detail_until(http, "github", "last_poll")
    assert detail["name"] == "github" and detail["enabled"] is True
    assert detail["status"] == "configured" and detail["poll_interval_seconds"] == 300
    assert detail["last_error"].startswith("repositories: cannot connect to http://127.0.0.1:")
    assert detail["next_poll"] > detail["last_poll"]


async def test_deleted_token_is_gone_and_deleting_again_is_404(http: httpx.AsyncClient) -> None:
    await http.post("/api/connectors/github/token", json={"token": "t"})
    reply = await http.delete("/api/connectors/github/token")
    assert reply.status_code == 200 and reply.json() == {"success": True}
    assert (await http.get("/api/connectors")).json() == _listing()
    detail = (await http.get("/api/connectors/github")).json()
    assert detail["status"] == "not_configured" and "last_poll" not in detail
    again = await http.delete("/api/connectors/github/token")
    assert again.status_code == 404
    assert again.json() == {
        "error": "No credentials found for connector 'github'",
        "code": "not_found",
    }


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_unknown_connector_is_404(http: httpx.AsyncClient, method: str) -> None:
    path = "/api/connectors/nope" if method == "GET" else "/api/connectors/nope/token"
    reply = await http.request(method, path, json={"token": "t"})
    assert reply.status_code == 404
    assert reply.json() == {"error": "Connector 'nope' not found", "code": "not_found"}


TOKEN_BODIES = [
    pytest.param(b"{oops", 400, "Failed to parse the request body as JSON: ", id="syntax"),
    pytest.param(
        b"[]",
        422,
        "Failed to deserialize the JSON body into the target type: invalid type: sequence,"
        " expected struct TokenRequest",
        id="not-object",
    ),
    pytest.param(
        b"{}",
        422,
        "Failed to deserialize the JSON body into the target type: missing field `token`",
        id="missing",
    ),
    pytest.param(
        b'{"token": 5}',
        422,
        "Failed to deserialize the JSON body into the target type: token: invalid type:"
        " integer `5`, expected a string",
        id="type",
    ),
]


@pytest.mark.parametrize(("body", "status", "message"), TOKEN_BODIES)
async def test_token_body_is_checked_first(
    http: httpx.AsyncClient, body: bytes, status: int, message: str
) -> None:
    # Flux's order: the JSON extractor runs before the name is looked up.
    for name in ("github", "nope"):
        reply = await http.post(f"/api/connectors/{name}/token", content=body)
        assert reply.status_code == status
        assert reply.json()["error"].startswith(message), reply.json()


async def test_routing_errors(http: httpx.AsyncClient) -> None:
    reply = await http.put("/api/connectors", json={})
    assert reply.status_code == 405 and reply.headers["allow"] == "GET"
    reply = await http.get("/api/connectors/github/token")
    assert reply.status_code == 405 and reply.headers["allow"] == "DELETE, POST"
    for path in ("/api/connectors/github/nope", "/api/connectors/", "/api/connectors/a/oauth/x"):
        assert (await http.get(path)).status_code == 404


async def test_credentials_that_no_longer_decrypt_report_error(
    store: Store, key_prefix: str, settings: Settings
) -> None:
    async with running_hub(settings, store) as hub, _client(hub) as http:
        await http.post("/api/connectors/github/token", json={"token": "t"})
    rekeyed = make_settings(key_prefix, connectors={**FAST, "encryption_key": OTHER_KEY})
    async with running_hub(rekeyed, store) as hub, _client(hub) as http:
        listing = (await http.get("/api/connectors")).json()
        assert listing["connectors"][0] == {"name": "github", "enabled": False, "status": "error"}
        detail = await _detail_until(http, "github", "last_poll")
        assert detail["status"] == "error" and detail["enabled"] is False
        assert detail["last_error"] == (
            "the stored credentials cannot be decrypted with the current"
            " FLUX_ENCRYPTION_KEY (was it changed?)"
        )


# ---------------------------------------------------------------------- Public mode


@pytest.fixture
def public(key_prefix: str) -> Settings:
    return make_settings(
        key_prefix, gateway={"auth_enabled": True}, connectors={**FAST, "encryption_key": KEY}
    )


BAD_BEARERS = [
    pytest.param({}, "Invalid token: Authorization token not provided", id="missing"),
    pytest.param(
        {"authorization": "Token abc"}, "Invalid token: Invalid authorization token format"
    ),
    pytest.param({"authorization": "Bearer"}, "Invalid token: Invalid authorization token format"),
]


@pytest.mark.parametrize(("headers", "message"), BAD_BEARERS)
async def test_public_mode_needs_a_bearer_token(
    store: Store, public: Settings, headers: dict[str, str], message: str
) -> None:
    async with running_hub(public, store) as hub, _client(hub) as http:
        calls = [
            ("GET", "/api/connectors"),
            ("GET", "/api/connectors/github"),
            ("POST", "/api/connectors/github/token"),
            ("DELETE", "/api/connectors/github/token"),
            ("GET", "/api/connectors/github/oauth/start"),
        ]
        for method, path in calls:
            reply = await http.request(method, path, json={"token": "t"}, headers=headers)
            assert reply.status_code == 401, (method, path)
            assert reply.json() == {"error": message, "code": "unauthorized"}


async def test_public_mode_check_order(store: Store, key_prefix: str, public: Settings) -> None:
    async with running_hub(public, store) as hub, _client(hub) as http:
        # The name is checked before the token.
        for method, path in [
            ("GET", "/api/connectors/nope"),
            ("POST", "/api/connectors/nope/token"),
            ("DELETE", "/api/connectors/nope/token"),
            ("GET", "/api/connectors/nope/oauth/start"),
        ]:
            reply = await http.request(method, path, json={"token": "t"})
            assert reply.status_code == 404, (method, path)
    # Without a key, the store is checked before the token.
    no_key = make_settings(key_prefix, gateway={"auth_enabled": True})
    async with running_hub(no_key, store) as hub, _client(hub) as http:
        for method in ("POST", "DELETE"):
            reply = await http.request(method, "/api/connectors/github/token", json={"token": "t"})
            assert reply.status_code == 500
        assert (await http.get("/api/connectors")).status_code == 401


async def test_public_mode_user_is_the_token_and_the_token_is_never_stored(
    store: Store, public: Settings, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    alice = {"authorization": "Bearer alice-token-1234"}
    bob = {"authorization": "bearer   bob-token-5678"}
    async with running_hub(public, store) as hub, _client(hub) as http:
        reply = await http.post(
            "/api/connectors/github/token", json={"token": "github-secret"}, headers=alice
        )
        assert reply.status_code == 200
        assert (await http.get("/api/connectors", headers=alice)).json() == _listing("github")
        assert (await http.get("/api/connectors", headers=bob)).json() == _listing()
        detail = (await http.get("/api/connectors/github", headers=alice)).json()
        assert detail["status"] == "configured"
        bob_detail = (await http.get("/api/connectors/github", headers=bob)).json()
        assert bob_detail["status"] == "not_configured"
        missing = await http.delete("/api/connectors/github/token", headers=bob)
        assert missing.status_code == 404
    client = store.client
    dump = b""
    names = b""
    async for key in client.scan_iter(match=f"{key_prefix}:*"):
        dump += key
        names += key
        kind = await client.type(key)
        if kind == b"hash":
            fields = cast("dict[bytes, bytes]", await client.hgetall(key))
            for field, value in fields.items():
                dump += field + value
        elif kind == b"string":
            dump += cast("bytes | None", await client.get(key)) or b""
    assert b"{connectors}:credentials" in dump
    for secret in (b"alice-token-1234", b"github-secret"):
        assert secret not in dump
    # Not even the token's hash names a key (it is a hash field only).
    assert hash_token("alice-token-1234").encode() in dump
    assert hash_token("alice-token-1234").encode() not in names
    for record in caplog.records:
        message = record.getMessage()
        assert "alice-token-1234" not in message
        assert hash_token("alice-token-1234") not in message


# ---------------------------------------------------------------------- the interface


@dataclass(frozen=True)
class Weather:
    """A connector as a plug-in would write it: reads its token, returns events."""

    name: str = "weather"
    oauth_config: OAuthConfig | None = None
    poll_interval: float = 0.2

    async def fetch(self, credentials: Credentials | None) -> list[dict[str, Any]]:
        assert credentials is not None
        if credentials.access_token == "raise":
            raise RuntimeError("upstream exploded")
        if credentials.access_token == "hang":
            await asyncio.Event().wait()
        if credentials.access_token == "bad-event":
            return [{"stream": "Bad Stream", "source": "w", "payload": {}}]
        if credentials.access_token == "hub-namespace":
            ok = connector_event("weather/now", {"t": 1}, stream="weather", source="w")
            return [ok, connector_event("flux-core/directory", {}, stream="weather", source="w")]
        properties = {"token_length": len(credentials.access_token)}
        return [connector_event("weather/now", properties, stream="weather", source="w")]


async def test_added_connector_is_listed_and_polled_with_decrypted_credentials(
    hub: Hub, http: httpx.AsyncClient
) -> None:
    _extension(hub).add(Weather())
    reply = await http.post("/api/connectors/weather/token", json={"token": "abcdef"})
    assert reply.status_code == 200
    names = [c["name"] for c in (await http.get("/api/connectors")).json()["connectors"]]
    assert names == [*NAMES, "weather"]

    async def published() -> bool:
        return (await http.get("/api/state/entities/weather%2Fnow")).status_code == 200

    await until(published)
    entity = (await http.get("/api/state/entities/weather%2Fnow")).json()
    assert entity["properties"] == {"token_length": 6}
    detail = await _detail_until(http, "weather", "last_poll")
    assert detail["status"] == "configured" and "last_error" not in detail
    assert detail["poll_interval_seconds"] == 0.2


@pytest.mark.parametrize(
    ("token", "error"),
    [
        ("raise", "RuntimeError: upstream exploded"),
        ("hang", "fetch did not finish within 0.6 s"),
        (
            "bad-event",
            "event 0: invalid stream format 'Bad Stream': must be lowercase with optional dots",
        ),
        # The checks REST and the native protocol make (hub/engine/publish.py).
        ("hub-namespace", "event 1: namespace 'flux-core' is reserved for the hub"),
    ],
)
async def test_failing_connector_shows_its_error_and_the_hub_carries_on(
    hub: Hub, http: httpx.AsyncClient, token: str, error: str
) -> None:
    _extension(hub).add(Weather())
    await http.post("/api/connectors/weather/token", json={"token": token})
    detail = await _detail_until(http, "weather", "last_error")
    assert detail["last_error"] == error and detail["status"] == "configured"
    assert (await http.get("/readyz")).status_code == 200


async def test_catalogue_is_flux_s(hub: Hub) -> None:
    catalogue = _extension(hub).catalogue
    assert BUILTIN_NAMES == tuple(NAMES)
    assert [(c.name, c.poll_interval) for c in catalogue.values()] == list(INTERVALS.items())
    assert catalogue["github"].oauth_config == github_oauth(GITHUB_NOWHERE)
    assert github_oauth(GITHUB_API_URL) == OAuthConfig(
        "https://github.com/login/oauth/authorize",
        "https://github.com/login/oauth/access_token",
        ("repo", "read:user"),
    )


async def test_catalogue_refuses_bad_or_duplicate_names(hub: Hub) -> None:
    extension = _extension(hub)
    for name in ("github", "generic", "Bad", ""):
        with pytest.raises(ValueError):
            extension.add(Weather(name=name))


def test_sealed_secret_opens_only_with_its_key_and_for_its_slot() -> None:
    box = SecretBox.from_setting(KEY)
    sealed = box.seal(b"secret", "cred:github:alice")
    assert b"secret" not in sealed
    assert box.open(sealed, "cred:github:alice") == b"secret"
    assert box.open(sealed, "cred:github:bob") is None  # moved to another user's slot
    assert SecretBox.from_setting(OTHER_KEY).open(sealed, "cred:github:alice") is None
    assert box.open(sealed[:-1], "cred:github:alice") is None
    assert box.open(b"", "cred:github:alice") is None
    assert box.seal(b"secret", "x") != box.seal(b"secret", "x")  # a fresh nonce each time
