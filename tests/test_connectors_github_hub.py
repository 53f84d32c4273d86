"""The GitHub connector inside a real hub, against a local GitHub (tests/github_replay.py).

End to end: a token stored through the API, the hub polls, entities appear through
REST and to a live WebSocket subscriber, the status tells what happened; a rate limit
holds every poll until its reset; the connectors that are not available take no
token and are never polled.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from hub.app import Hub
from hub.config import Settings
from hub.connectors import ConnectorsExtension
from hub.connectors.github import GitHubConnector
from hub.core.timefmt import format_ms
from hub.store import Store
from hub.store.connectors import credential_job

from .conftest import make_settings, running_hub, timeout
from .doc_blocks import doc_blocks, json_values
from .github_replay import GitHubReplay
from .local_http import Reply, Seen, until
from .test_connectors_github import ENTITIES, TOKEN
from .test_openapi import run_example

KEY = base64.b64encode(bytes(range(32))).decode()
FAST = {"min_poll_interval": 0.1, "poll_timeout": 2.0, "encryption_key": KEY}


@pytest.fixture
async def github() -> AsyncIterator[GitHubReplay]:
    async with GitHubReplay() as replay:
        yield replay


@pytest.fixture
def settings(key_prefix: str, github: GitHubReplay) -> Settings:
    return make_settings(key_prefix, connectors={**FAST, "github_api_url": github.api_url})


def _extension(hub: Hub) -> ConnectorsExtension:
    return next(e for e in hub.extensions if isinstance(e, ConnectorsExtension))


def _poll_every(hub: Hub, seconds: float) -> None:
    """Poll GitHub every ``seconds`` instead of Flux's 300 (the rest as configured)."""
    ext = _extension(hub)
    ext.catalogue["github"] = GitHubConnector(
        ext.client,
        api_url=ext.settings.github_api_url,
        timeout=ext.settings.poll_timeout,
        clock=ext.clock,
        poll_interval=seconds,
    )


async def _detail(http: httpx.AsyncClient) -> dict[str, Any]:
    reply = await http.get("/api/connectors/github")
    assert reply.status_code == 200
    value: dict[str, Any] = reply.json()
    return value


async def test_stored_token_is_polled_into_entities_seen_by_rest_and_a_subscriber(
    hub: Hub,
    http: httpx.AsyncClient,
    ws_url: str,
    github: GitHubReplay,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # A Flux (compat) client: without a subscription it receives every update. Its
    # queue unbounded: with 16 updates left unread (websockets' default), it would stop
    # reading its socket, miss the hub's closing frame, and close after 10 s.
    async with websockets.connect(ws_url, max_queue=None) as ws:
        await ws.ping()
        reply = await http.post("/api/connectors/github/token", json={"token": TOKEN.access_token})
        assert reply.status_code == 200 and reply.json() == {"success": True}
        seen: set[str] = set()
        async with asyncio.timeout(timeout(10)):
            while seen != set(ENTITIES):
                message = json.loads(await ws.recv())
                if (
                    message["type"] == "state_update"
                    and message["entity_id"] != "flux-core/directory"
                ):
                    assert message["entity_id"].startswith("github/"), message
                    seen.add(message["entity_id"])
    listing = (await http.get("/api/state/entities", params={"prefix": "github/"})).json()
    assert sorted(e["id"] for e in listing) == sorted(ENTITIES)
    repo = (await http.get("/api/state/entities/github%2Frepo%2Foctocat%2FHello-World")).json()
    assert repo["properties"]["stargazers_count"] == 2713
    detail = await _detail(http)
    assert detail["status"] == "configured" and detail["enabled"] is True
    assert "last_error" not in detail
    assert detail["next_poll"] > detail["last_poll"]
    assert {k: v for k, v in detail.items() if k not in ("last_poll", "next_poll")} == {
        "name": "github",
        "enabled": True,
        "status": "configured",
        "poll_interval_seconds": 300,
        "runs": 1,
        "failures": 0,
        "records": 8,
        "duplicates": 0,
        "rejected": 0,
        "records_total": 8,
        "requests": 4,
        "not_modified": 0,
        "rate_limit": {"limit": 5000, "remaining": 4995, "reset": format_ms(github.reset * 1000)},
    }
    # The token reached GitHub, and nothing else: no log line holds it.
    assert all(
        s.headers["authorization"] == f"Bearer {TOKEN.access_token}" for s in github.requests
    )
    logged = [record.getMessage() for record in caplog.records]
    assert logged and not [line for line in logged if TOKEN.access_token in line]


async def test_repolls_publish_nothing_twice(
    hub: Hub, http: httpx.AsyncClient, github: GitHubReplay
) -> None:
    _poll_every(hub, 0.2)
    await http.post("/api/connectors/github/token", json={"token": TOKEN.access_token})

    async def polled_three_times() -> bool:
        return int((await _detail(http)).get("runs", 0)) >= 3

    await until(polled_three_times, 10)
    for entity in ENTITIES:
        history = (await http.get("/api/events", params={"entity": entity})).json()
        assert len(history) == 1, (entity, history)
        state = (await http.get(f"/api/state/entities/{entity.replace('/', '%2F')}")).json()
        assert state["version"] == 1
    # The second poll's issues (since is inclusive) were dropped as duplicates; from
    # the third on, every list is unchanged: 304s, nothing published; notifications
    # wait for GitHub's X-Poll-Interval (60 s).
    detail = await _detail(http)
    assert detail["runs"] >= 3 and detail["records_total"] == len(ENTITIES)
    assert (detail["records"], detail["duplicates"], detail["rejected"]) == (0, 0, 0)
    assert (detail["requests"], detail["not_modified"]) == (3, 3)
    assert github.targets().count("/notifications?per_page=50") == 1


async def test_rate_limit_holds_every_poll_until_the_reset(
    hub: Hub, http: httpx.AsyncClient, github: GitHubReplay
) -> None:
    _poll_every(hub, 0.2)
    github.reset = int(time.time()) + 3
    github.override = lambda seen, target: github.reply("rate-limit-403")
    await http.post("/api/connectors/github/token", json={"token": TOKEN.access_token})

    async def limited() -> bool:
        return "last_error" in await _detail(http)

    await until(limited)
    detail = await _detail(http)
    reset = format_ms(github.reset * 1000)
    assert detail["next_poll"] == reset
    assert detail["last_error"] == (
        "GitHub rate limit used up (X-RateLimit-Remaining: 0 of 5000 requests per hour,"
        f" HTTP 403): no request before {reset} (X-RateLimit-Reset)"
    )
    # The interval is 0.2 s, but no request is made before the reset.
    await asyncio.sleep(1)
    assert len(github.requests) == 1
    github.override = None

    async def resumed() -> bool:
        return len(github.requests) > 1 and "last_error" not in await _detail(http)

    await until(resumed, 10)
    assert github.requests[1].at >= github.requests[0].at + 1


async def test_bad_token_shows_in_the_status(
    hub: Hub, http: httpx.AsyncClient, github: GitHubReplay
) -> None:
    github.override = lambda seen, target: github.reply("bad-credentials-401")
    await http.post("/api/connectors/github/token", json={"token": "ghp_revoked"})

    async def failed() -> bool:
        return "last_error" in await _detail(http)

    await until(failed)
    detail = await _detail(http)
    assert detail["last_error"] == (
        "GitHub refused the token (HTTP 401: Bad credentials): store a new one"
    )
    assert detail["status"] == "configured"
    assert (detail["runs"], detail["failures"], detail["records"]) == (1, 1, 0)


@pytest.mark.parametrize("name", ["gmail", "linkedin", "calendar"])
async def test_unavailable_connector_says_so_takes_no_token_and_is_never_polled(
    hub: Hub, http: httpx.AsyncClient, store: Store, name: str
) -> None:
    service = {"gmail": "Gmail", "linkedin": "LinkedIn", "calendar": "Google Calendar"}[name]
    reason = (
        f"Connector '{name}' is not available: this hub does not fetch from {service}"
        " (listed for compatibility with Flux; see docs/connectors.md)"
    )
    listing = (await http.get("/api/connectors")).json()["connectors"]
    assert {"name": name, "enabled": False, "status": "not_available"} in listing
    detail = (await http.get(f"/api/connectors/{name}")).json()
    assert detail["status"] == "not_available" and detail["available"] is False
    assert detail["reason"] == reason and detail["enabled"] is False
    for method, path in [("POST", "token"), ("GET", "oauth/start")]:
        reply = await http.request(method, f"/api/connectors/{name}/{path}", json={"token": "t"})
        assert reply.status_code == 409, (method, path)
        assert reply.json() == {
            "error": f"{reason}; no credentials were stored",
            "code": "conflict",
        }
    # Credentials an older hub stored stay unpolled, and can be deleted.
    ext = _extension(hub)
    assert ext.box is not None
    sealed = ext.box.seal(b'{"access_token": "old"}', f"cred:{name}:default")
    await ext.store.put_credentials(
        name, "default", sealed, now_ms=ext.now_ms(), max_credentials=10
    )
    ext.scheduler.wake()
    await asyncio.sleep(0.5)  # five ticks
    job = credential_job(name, "default")
    assert job in await ext.store.job_ids() and job not in ext.scheduler.running
    status = (await ext.store.statuses([job]))[0]
    assert (status.last_poll, status.polls) == (None, 0)
    detail = (await http.get(f"/api/connectors/{name}")).json()
    assert detail["status"] == "not_available"
    assert (await http.delete(f"/api/connectors/{name}/token")).status_code == 200


async def test_enterprise_api_url_from_the_environment(store: Store, key_prefix: str) -> None:
    async with GitHubReplay(prefix="/api/v3") as enterprise:
        env = {"FLUX_GITHUB_API_URL": enterprise.api_url + "/", "FLUX_ENCRYPTION_KEY": KEY}
        from_env = Settings.from_env(env)
        assert from_env.connectors.github_api_url == enterprise.api_url
        settings = make_settings(
            key_prefix, connectors={**FAST, "github_api_url": enterprise.api_url}
        )
        async with (
            running_hub(settings, store) as hub,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}", timeout=timeout(10)) as http,
        ):
            await http.post("/api/connectors/github/token", json={"token": TOKEN.access_token})

            async def polled() -> bool:
                detail = await _detail(http)
                return "last_poll" in detail

            await until(polled)
            assert "last_error" not in await _detail(http)
            assert all(seen.target.startswith("/api/v3/") for seen in enterprise.requests)
            reply = await http.get("/api/state/entities/github%2Fpull%2Focta%2Fx")
            assert reply.status_code == 404
            reply = await http.get(
                "/api/state/entities/github%2Fpull%2Facme-labs%2Fflux-agents%2F88"
            )
            assert reply.json()["properties"]["draft"] is True


@pytest.mark.parametrize(
    "url", ["ftp://github.example.com", "github.example.com/api/v3", "https://h/api?x=1"]
)
def test_unusable_api_url_is_refused_at_start(url: str) -> None:
    from hub.errors import ConfigError

    with pytest.raises(ConfigError, match="FLUX_GITHUB_API_URL"):
        Settings.from_env({"FLUX_GITHUB_API_URL": url})


#: Values of the documented output that differ on every run.
_TIMES = ("last_poll", "next_poll", "lastUpdated")


async def test_docs_setup_example_prints_what_the_docs_show(
    hub: Hub, base_url: str, tmp_path: Path
) -> None:
    script = _doc_block("curl -s localhost:3000/api/connectors/github/token")
    shown = json_values(_doc_block('{"success":true}'))
    printed = json_values(await run_example(script, base_url, tmp_path, 30))
    assert len(printed) == len(shown) == 3
    for documented, actual in zip(shown, printed, strict=True):
        for key in _TIMES:
            if key in documented:
                documented[key] = _a_time(actual[key])
        if "rate_limit" in documented:
            documented["rate_limit"]["reset"] = _a_time(actual["rate_limit"]["reset"])
        assert actual == documented


def _a_time(value: str) -> str:
    assert value.endswith("Z"), value
    return value


def _doc_block(first_line: str) -> str:
    found = [
        block.text
        for block in doc_blocks()
        if block.path == "docs/connectors.md" and block.first_line.startswith(first_line)
    ]
    assert len(found) == 1, first_line
    return found[0]


async def test_oauth_flow_token_is_the_one_the_hub_polls_with(
    store: Store, key_prefix: str, github: GitHubReplay
) -> None:
    # GitHub's OAuth endpoints live on the host of the API root (Enterprise: the
    # same host; here the local GitHub plays both).
    oauth_token = "gho_16C7e42F292c6912E7710c838347Ae178B4a"

    def token_endpoint(seen: Seen, target: str) -> Reply | None:
        if target == "/login/oauth/access_token":
            assert seen.method == "POST" and b"code=the-code" in seen.body
            body = {"access_token": oauth_token, "token_type": "bearer", "scope": "repo,read:user"}
            return Reply(200, json.dumps(body).encode(), {"content-type": "application/json"})
        return None

    github.override = token_endpoint
    settings = make_settings(
        key_prefix,
        connectors={
            **FAST,
            "github_api_url": github.api_url,
            "oauth_clients": {"github": ("client-id", "client-secret")},
        },
    )
    async with (
        running_hub(settings, store) as hub,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}", timeout=timeout(10)) as http,
    ):
        start = await http.get("/api/connectors/github/oauth/start")
        assert start.status_code == 307
        location = httpx.URL(start.headers["location"])
        assert str(location).startswith(f"{github.api_url}/login/oauth/authorize?client_id=")
        state = location.params["state"]
        callback = await http.get(
            "/api/connectors/github/oauth/callback", params={"code": "the-code", "state": state}
        )
        assert callback.json() == {
            "success": True,
            "message": "Successfully connected github",
            "connector": "github",
        }

        async def polled() -> bool:
            return "last_poll" in await _detail(http)

        await until(polled)
        assert "last_error" not in await _detail(http)
        api_calls = [s for s in github.requests if s.target != "/login/oauth/access_token"]
        assert len(api_calls) == 4
        assert all(s.headers["authorization"] == f"Bearer {oauth_token}" for s in api_calls)


async def test_public_mode_entity_ids_with_more_slashes_are_written(
    store: Store, key_prefix: str, github: GitHubReplay
) -> None:
    # Flux's Public mode refuses ids with more than one `/`, its own GitHub
    # connector's among them (FLUX_COMPAT.md, line on entity ids); the hub takes them.
    settings = make_settings(
        key_prefix,
        gateway={"auth_enabled": True},
        connectors={**FAST, "github_api_url": github.api_url},
    )
    alice = {"authorization": "Bearer alice-token"}
    async with (
        running_hub(settings, store) as hub,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}", timeout=timeout(10)) as http,
    ):
        reply = await http.post(
            "/api/connectors/github/token", json={"token": TOKEN.access_token}, headers=alice
        )
        assert reply.status_code == 200

        async def published() -> bool:
            listing = await http.get("/api/state/entities", params={"prefix": "github/"})
            return len(listing.json()) == len(ENTITIES)

        await until(published)
        detail = (await http.get("/api/connectors/github", headers=alice)).json()
        assert detail["records"] == len(ENTITIES) and "last_error" not in detail
