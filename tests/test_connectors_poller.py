"""The generic HTTP poller against real local HTTP servers, a real hub and real Redis.

Done means: a local JSON endpoint becomes an entity whose changes reach a WebSocket
subscriber, and the endpoint's failures (down, garbage, errors, too large, too slow)
show in the poller's status, never as a crash. Several hubs on one Redis poll each
poller once per interval, and a poller survives the hub that registered it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest

from hub.app import Hub
from hub.config import Settings
from hub.connectors import ConnectorsExtension
from hub.connectors.scheduler import backoff
from hub.store import Keys, Store

from .conftest import make_settings, running_hub, timeout
from .local_http import LocalServer, Reply, Seen, json_reply, until
from .native_client import Native
from .processes import free_port

KEY = base64.b64encode(bytes(range(32))).decode()
INTERVAL = 0.2
FAST = {"min_poll_interval": 0.1, "poll_timeout": 0.5, "max_poll_bytes": 1024}


@pytest.fixture
def settings(key_prefix: str) -> Settings:
    return make_settings(key_prefix, connectors={**FAST, "encryption_key": KEY})


def _client(hub: Hub) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}", timeout=timeout(10))


def _poller(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "sensor",
        "url": url,
        "poll_interval_secs": INTERVAL,
        "entity_key": "sensor",
        "namespace": "lab",
        **extra,
    }


async def _register(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    reply = await http.post("/api/connectors/generic", json=body)
    assert reply.status_code == 201, reply.text
    source_id: str = reply.json()["source_id"]
    return source_id


async def _status(http: httpx.AsyncClient, source_id: str) -> dict[str, Any]:
    reply = await http.get(f"/api/connectors/generic/{source_id}")
    assert reply.status_code == 200, reply.text
    status: dict[str, Any] = reply.json()
    return status


async def _status_until(
    http: httpx.AsyncClient, source_id: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def ready() -> bool:
        found.update(await _status(http, source_id))
        return check(found)

    await until(ready)
    return found


class Endpoint:
    """A JSON API whose answer the test changes."""

    def __init__(self, value: Any = None) -> None:
        self.reply = json_reply(value if value is not None else {"temp": 20})

    def __call__(self, seen: Seen) -> Reply:
        return self.reply


@asynccontextmanager
async def _endpoint(
    value: Any = None, port: int = 0
) -> AsyncIterator[tuple[LocalServer, Endpoint]]:
    endpoint = Endpoint(value)
    async with LocalServer(endpoint, port) as server:
        yield server, endpoint


# ---------------------------------------------------------------------- the live entity


async def test_poller_turns_local_json_endpoint_into_entity_seen_by_subscriber(
    hub: Hub, http: httpx.AsyncClient, ws_url: str
) -> None:
    native = await Native.connect(ws_url)
    try:
        subscribed = await native.request(
            {"type": "subscribe", "sub": "s", "filter": {"ids": ["lab/sensor"]}}, "subscribed"
        )
        assert subscribed["type"] == "subscribed"
        async with _endpoint({"temp": 20, "unit": "C"}) as (server, endpoint):
            source_id = await _register(http, _poller(server.url("/reading")))
            created = await native.recv_type("delta")
            assert created["id"] == "lab/sensor" and created["created"] is True
            assert created["set"] == {"temp": 20, "unit": "C"}
            endpoint.reply = json_reply({"temp": 21, "unit": "C"})
            changed = await native.recv_type("delta")
            assert changed["set"] == {"temp": 21} and changed["base"] == created["version"]
            assert server.requests[0].target == "/reading"
            assert server.requests[0].headers["accept"] == "application/json"
    finally:
        await native.close()

    entity = (await http.get("/api/state/entities/lab%2Fsensor")).json()
    assert entity["properties"] == {"temp": 21, "unit": "C"}
    history = (await http.get("/api/events", params={"entity": "lab/sensor"})).json()
    assert {(e["stream"], e["source"]) for e in history} == {("generic", f"poller.{source_id}")}
    status = await _status(http, source_id)
    assert status["status"] == "ok" and status["last_error"] is None
    assert status["polls"] >= 2 and status["failures"] == 0
    assert status["entity_id"] == "lab/sensor" and status["poll_interval_secs"] == INTERVAL
    assert status["last_poll"].endswith("Z") and status["next_poll"] >= status["last_poll"]


async def test_poller_publishes_non_object_json_as_value(http: httpx.AsyncClient) -> None:
    async with _endpoint([1, "two", None]) as (server, _):
        source_id = await _register(http, _poller(server.url()))
        await _status_until(http, source_id, lambda s: s["polls"] >= 1)
    entity = (await http.get("/api/state/entities/lab%2Fsensor")).json()
    assert entity["properties"] == {"value": [1, "two", None]}


async def test_poller_status_has_every_field_and_no_token(http: httpx.AsyncClient) -> None:
    async with _endpoint() as (server, _):
        body = _poller(server.url(), auth_type="bearer", token="s3cret-token")
        source_id = await _register(http, body)
        status = await _status_until(http, source_id, lambda s: s["polls"] >= 1)
        listing = (await http.get("/api/connectors/generic")).json()
    assert set(status) == {
        "source_id",
        "name",
        "url",
        "poll_interval_secs",
        "namespace",
        "entity_key",
        "entity_id",
        "auth_type",
        "status",
        "created_at",
        "last_poll",
        "last_success",
        "last_error",
        "next_poll",
        "polls",
        "failures",
        "consecutive_failures",
    }
    assert status["auth_type"] == "bearer" and status["source_id"] == source_id
    assert [p["source_id"] for p in listing["pollers"]] == [source_id]
    assert "s3cret-token" not in json.dumps(listing) + json.dumps(status)


# ---------------------------------------------------------------------- failures


async def test_server_down_shows_in_status_and_polling_recovers_when_it_comes_up(
    hub: Hub, http: httpx.AsyncClient
) -> None:
    port = free_port()
    source_id = await _register(http, _poller(f"http://127.0.0.1:{port}/"))
    down = await _status_until(http, source_id, lambda s: s["consecutive_failures"] >= 2)
    assert down["status"] == "error" and down["last_success"] is None
    assert down["last_error"].startswith("cannot connect: "), down["last_error"]
    assert down["failures"] >= 2 and down["polls"] == down["failures"]
    assert (await http.get("/readyz")).status_code == 200  # the hub is fine
    async with _endpoint({"up": True}, port):
        up = await _status_until(http, source_id, lambda s: s["status"] == "ok")
    assert up["last_error"] is None and up["consecutive_failures"] == 0
    assert up["failures"] >= 2 and up["last_success"] == up["last_poll"]
    entity = (await http.get("/api/state/entities/lab%2Fsensor")).json()
    assert entity["properties"] == {"up": True}


async def test_failures_back_off(http: httpx.AsyncClient) -> None:
    source_id = await _register(http, _poller(f"http://127.0.0.1:{free_port()}/"))
    status = await _status_until(http, source_id, lambda s: s["consecutive_failures"] >= 2)
    # After n failures in a row the next poll waits interval * 2**n.
    from hub.core.timefmt import parse_rfc3339_ms

    gap = parse_rfc3339_ms(status["next_poll"]) - parse_rfc3339_ms(status["last_poll"])
    assert gap >= INTERVAL * 1000 * 2 ** status["consecutive_failures"] - 5


GARBAGE = [
    pytest.param(Reply(200, b"<html>not json"), "response is not JSON: ", id="not-json"),
    pytest.param(Reply(200, b""), "response is not JSON: ", id="empty"),
    pytest.param(Reply(500, b"{}"), "HTTP 500 Internal Server Error", id="http-500"),
    pytest.param(Reply(404, b"{}"), "HTTP 404 Not Found", id="http-404"),
    pytest.param(
        Reply(200, b'{"x":"' + b"a" * 2000 + b'"}'),
        "response is larger than 1024 bytes",
        id="too-large",
    ),
    pytest.param(Reply(hang=True), "no complete response within 0.5 s", id="too-slow"),
    pytest.param(Reply(drop=True), "request failed: RemoteProtocolError: ", id="dropped"),
]


@pytest.mark.parametrize(("bad", "message"), GARBAGE)
async def test_endpoint_garbage_is_recorded_and_the_entity_keeps_its_last_value(
    hub: Hub, http: httpx.AsyncClient, bad: Reply, message: str
) -> None:
    async with _endpoint({"good": 1}) as (server, endpoint):
        source_id = await _register(http, _poller(server.url()))
        await _status_until(http, source_id, lambda s: s["status"] == "ok")
        endpoint.reply = bad
        status = await _status_until(http, source_id, lambda s: s["status"] == "error")
    assert status["last_error"].startswith(message), status["last_error"]
    assert status["failures"] == status["consecutive_failures"] >= 1
    assert status["last_success"] is not None
    entity = (await http.get("/api/state/entities/lab%2Fsensor")).json()
    assert entity["properties"] == {"good": 1}
    assert (await http.get("/readyz")).status_code == 200


async def test_chunked_body_over_the_limit_is_cut_off(http: httpx.AsyncClient) -> None:
    # No Content-Length: the limit applies while reading.
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(10):
            writer.write(b"200\r\n" + b" " * 512 + b"\r\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        source_id = await _register(http, _poller(f"http://127.0.0.1:{port}/"))
        status = await _status_until(http, source_id, lambda s: s["status"] == "error")
    finally:
        server.close()
        await server.wait_closed()
    assert status["last_error"] == "response is larger than 1024 bytes"


# ---------------------------------------------------------------------- auth and secrets


AUTH = [
    pytest.param("bearer", "authorization", "Bearer tok-123", id="bearer"),
    pytest.param({"api_key_header": "X-Api-Key"}, "x-api-key", "tok-123", id="api-key"),
]


@pytest.mark.parametrize(("auth_type", "header", "sent"), AUTH)
async def test_poller_sends_its_token_which_is_stored_encrypted(
    http: httpx.AsyncClient,
    store: Store,
    key_prefix: str,
    auth_type: Any,
    header: str,
    sent: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with _endpoint() as (server, _):
        source_id = await _register(
            http, _poller(server.url(), auth_type=auth_type, token="tok-123")
        )
        status = await _status_until(http, source_id, lambda s: s["polls"] >= 1)
    assert server.requests[0].headers[header] == sent
    assert status["auth_type"] == auth_type
    raw = await store.client.hgetall(Keys(key_prefix).connector_pollers())
    assert raw and all(b"tok-123" not in value for value in raw.values())
    assert all("tok-123" not in record.getMessage() for record in caplog.records)


async def test_without_encryption_key_pollers_with_a_token_are_refused(
    store: Store, key_prefix: str
) -> None:
    settings = make_settings(key_prefix, connectors=FAST)
    async with running_hub(settings, store) as hub, _client(hub) as http:
        reply = await http.post(
            "/api/connectors/generic",
            json=_poller("http://127.0.0.1:1/", auth_type="bearer", token="t"),
        )
        assert reply.status_code == 500
        assert reply.json() == {
            "error": "Credential storage not available (FLUX_ENCRYPTION_KEY not set)",
            "code": "internal",
        }
        async with _endpoint() as (server, _):
            source_id = await _register(http, _poller(server.url()))
            await _status_until(http, source_id, lambda s: s["status"] == "ok")


# ---------------------------------------------------------------------- validation

INVALID = [
    pytest.param([], "body: expected a JSON object", id="not-object"),
    pytest.param({**_poller("http://x/"), "name": ""}, "name: must not be empty", id="name"),
    pytest.param(
        {k: v for k, v in _poller("http://x/").items() if k != "url"},
        "url: required",
        id="url-missing",
    ),
    pytest.param(
        _poller("ftp://x/"), "url: scheme must be http or https, got 'ftp'", id="url-scheme"
    ),
    pytest.param(_poller("http:///path"), "url: has no host", id="url-host"),
    pytest.param(
        _poller("http://u:p@x/"),
        "url: must not contain credentials; use auth_type and token",
        id="url-credentials",
    ),
    pytest.param({**_poller("http://x/"), "url": 5}, "url: expected a string, got integer `5`"),
    pytest.param(
        {**_poller("http://x/"), "poll_interval_secs": 0.05},
        "poll_interval_secs: must be at least 0.1 (seconds)",
        id="interval-small",
    ),
    pytest.param(
        {**_poller("http://x/"), "poll_interval_secs": "10"},
        'poll_interval_secs: expected a number, got string "10"',
        id="interval-type",
    ),
    pytest.param(
        {**_poller("http://x/"), "poll_interval_secs": 100_000},
        "poll_interval_secs: must be at most 86400",
        id="interval-large",
    ),
    pytest.param(
        {**_poller("http://x/"), "entity_key": ""},
        "entity_key: must not be empty",
        id="entity-key",
    ),
    pytest.param(
        {**_poller("http://x/"), "namespace": "AB"},
        "namespace: Namespace name too short (minimum 3 characters)",
        id="namespace-short",
    ),
    pytest.param(
        {**_poller("http://x/"), "namespace": "Lab"},
        "namespace: Invalid character 'L' (must be [a-z0-9-_])",
        id="namespace-chars",
    ),
    pytest.param(
        {**_poller("http://x/"), "namespace": "flux-core"},
        "namespace: 'flux-core' is reserved for the hub",
        id="namespace-reserved",
    ),
    pytest.param(
        {**_poller("http://x/"), "auth_type": "basic"},
        'auth_type: expected "none", "bearer" or {"api_key_header": "<header name>"}',
        id="auth-type",
    ),
    pytest.param(
        {**_poller("http://x/"), "auth_type": {"api_key_header": "X Key"}, "token": "t"},
        "auth_type.api_key_header: not a valid HTTP header name",
        id="auth-header",
    ),
    pytest.param(
        {**_poller("http://x/"), "auth_type": {"api_key_header": "Host"}, "token": "t"},
        "auth_type.api_key_header: 'Host' cannot carry a key",
        id="auth-header-reserved",
    ),
    pytest.param(
        {**_poller("http://x/"), "auth_type": "bearer"},
        'token: required when auth_type is "bearer"',
        id="token-missing",
    ),
    pytest.param(
        {**_poller("http://x/"), "token": "t"},
        'token: given, but auth_type is "none"',
        id="token-unexpected",
    ),
    pytest.param(
        {**_poller("http://x/"), "auth_type": "bearer", "token": "a\nb"},
        "token: must be printable ASCII (it is sent in a header)",
        id="token-newline",
    ),
]


@pytest.mark.parametrize(("body", "message"), INVALID)
async def test_invalid_poller_is_refused_with_422_naming_the_field(
    http: httpx.AsyncClient, body: Any, message: str
) -> None:
    reply = await http.post("/api/connectors/generic", json=body)
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"].startswith(message), reply.json()
    assert (await http.get("/api/connectors/generic")).json() == {"pollers": []}


async def test_poller_body_that_is_not_json_gets_400(http: httpx.AsyncClient) -> None:
    reply = await http.post("/api/connectors/generic", content=b"{oops")
    assert reply.status_code == 400
    assert reply.json()["error"].startswith("Failed to parse the request body as JSON: ")


async def test_unknown_fields_like_flux_namespace_token_are_ignored(
    http: httpx.AsyncClient,
) -> None:
    body = _poller("http://127.0.0.1:1/", flux_namespace_token="x", extra=1)
    source_id = await _register(http, body)
    assert "flux_namespace_token" not in await _status(http, source_id)


async def test_poller_count_is_bounded(store: Store, key_prefix: str) -> None:
    settings = make_settings(key_prefix, connectors={**FAST, "max_pollers": 1})
    async with running_hub(settings, store) as hub, _client(hub) as http:
        await _register(http, _poller("http://127.0.0.1:1/"))
        reply = await http.post("/api/connectors/generic", json=_poller("http://127.0.0.1:2/"))
        assert reply.status_code == 409
        assert reply.json() == {
            "error": "poller limit reached: at most 1 pollers (FLUX_MAX_POLLERS); delete one first",
            "code": "conflict",
        }


# ---------------------------------------------------------------------- lifecycle


async def test_deleted_poller_stops_polling_and_is_gone(hub: Hub, http: httpx.AsyncClient) -> None:
    async with _endpoint() as (server, _):
        source_id = await _register(http, _poller(server.url()))
        await _status_until(http, source_id, lambda s: s["polls"] >= 1)
        reply = await http.delete(f"/api/connectors/generic/{source_id}")
        assert reply.status_code == 204 and reply.content == b""
        seen = len(server.requests)
        await asyncio.sleep(3 * INTERVAL)
        assert len(server.requests) <= seen + 1  # at most one poll already in flight
    missing = await http.get(f"/api/connectors/generic/{source_id}")
    assert missing.status_code == 404
    assert missing.json() == {"error": f"Poller '{source_id}' not found", "code": "not_found"}
    again = await http.delete(f"/api/connectors/generic/{source_id}")
    assert again.status_code == 404
    assert (await http.get("/api/connectors/generic")).json() == {"pollers": []}


async def test_wrong_method_gets_405_with_allow(http: httpx.AsyncClient) -> None:
    reply = await http.put("/api/connectors/generic", json={})
    assert reply.status_code == 405 and reply.headers["allow"] == "GET, POST"
    reply = await http.post("/api/connectors/generic/abc", json={})
    assert reply.status_code == 405 and reply.headers["allow"] == "DELETE, GET"
    reply = await http.get("/api/connectors/generic/abc/more")
    assert reply.status_code == 404


async def test_poller_and_its_token_survive_a_hub_restart(store: Store, settings: Settings) -> None:
    async with _endpoint() as (server, _):
        async with running_hub(settings, store) as first, _client(first) as http:
            body = _poller(server.url(), auth_type="bearer", token="kept")
            source_id = await _register(http, body)
            await _status_until(http, source_id, lambda s: s["polls"] >= 1)
        before = len(server.requests)
        async with running_hub(settings, store) as second, _client(second) as http:
            status = await _status_until(http, source_id, lambda s: s["polls"] >= 2)
            assert status["status"] == "ok"
        assert len(server.requests) > before
        assert server.requests[-1].headers["authorization"] == "Bearer kept"


# ---------------------------------------------------------------------- several hubs


def _gaps(requests: list[Seen]) -> list[float]:
    return [b.at - a.at for a, b in zip(requests, requests[1:], strict=False)]


def _extension(hub: Hub) -> ConnectorsExtension:
    return next(e for e in hub.extensions if isinstance(e, ConnectorsExtension))


async def test_two_hubs_on_one_redis_poll_once_per_interval_and_hand_over(
    store: Store, settings: Settings
) -> None:
    interval = 0.3
    async with _endpoint() as (server, _), AsyncExitStack() as stack_a, AsyncExitStack() as stack_b:
        a = await stack_a.enter_async_context(running_hub(settings, store))
        b = await stack_b.enter_async_context(running_hub(settings, store))
        async with _client(a) as http:
            source_id = await _register(http, _poller(server.url(), poll_interval_secs=interval))
        job = f"poller:{source_id}"
        await until(lambda: _one_runs([a, b], job))
        await asyncio.sleep(5 * interval)
        holder, other = (a, b) if job in _extension(a).scheduler.running else (b, a)
        assert job not in _extension(other).scheduler.running
        polled = len(server.requests)
        assert 3 <= polled <= 7, polled
        # The holder stops (and gives its lease back); the other hub takes over.
        await (stack_a if holder is a else stack_b).aclose()
        await until(lambda: _one_runs([other], job))
        count = len(server.requests)
        await until(lambda: _more(server, count + 3))
    gaps = _gaps(server.requests)
    assert min(gaps) >= 0.5 * interval, gaps


async def _one_runs(hubs: list[Hub], job: str) -> bool:
    return sum(job in _extension(h).scheduler.running for h in hubs) == 1


async def _more(server: LocalServer, count: int) -> bool:
    return len(server.requests) >= count


async def test_hub_that_loses_its_lease_stops_until_it_expires(
    hub: Hub, http: httpx.AsyncClient, store: Store, key_prefix: str
) -> None:
    async with _endpoint() as (server, _):
        source_id = await _register(http, _poller(server.url()))
        await _status_until(http, source_id, lambda s: s["polls"] >= 1)
        lease = Keys(key_prefix).connector_lease(f"poller:{source_id}")
        owner = _extension(hub).scheduler.owner.encode()
        # Another (dead) hub holds the lease for 1 s, as after a stall of this one.
        loop = asyncio.get_running_loop()
        await store.client.set(lease, b"dead-hub", px=1000)
        taken = loop.time()

        async def reclaimed() -> bool:
            return bool(await store.client.get(lease) == owner)

        await until(reclaimed)
        back = loop.time()
        count = len(server.requests)
        await until(lambda: _more(server, count + 1))
    assert back - taken >= 0.9
    # A poll already under way may land just after the take-over; then nothing
    # until the foreign lease expires.
    quiet = [r for r in server.requests if taken + 0.25 < r.at < taken + 0.95]
    assert quiet == []


# ---------------------------------------------------------------------- auth of the API


async def test_public_mode_generic_endpoints_need_the_admin_token(
    store: Store, key_prefix: str
) -> None:
    settings = make_settings(
        key_prefix, gateway={"auth_enabled": True, "admin_token": "adm1n"}, connectors=FAST
    )
    body = _poller("http://127.0.0.1:1/")
    async with running_hub(settings, store) as hub, _client(hub) as http:
        for headers in ({}, {"authorization": "Bearer someone"}, {"authorization": "adm1n"}):
            for method, path in [
                ("POST", "/api/connectors/generic"),
                ("GET", "/api/connectors/generic"),
                ("GET", "/api/connectors/generic/x"),
                ("DELETE", "/api/connectors/generic/x"),
            ]:
                reply = await http.request(method, path, json=body, headers=headers)
                assert reply.status_code == 401, (method, path, headers)
                assert reply.json() == {"error": "Unauthorized", "code": "unauthorized"}
        admin = {"authorization": "Bearer adm1n"}
        created = await http.post("/api/connectors/generic", json=body, headers=admin)
        assert created.status_code == 201
        listing = await http.get("/api/connectors/generic", headers=admin)
        assert len(listing.json()["pollers"]) == 1
    # Public mode without an admin token: open, as Flux's admin operations are.
    open_settings = make_settings(key_prefix, gateway={"auth_enabled": True}, connectors=FAST)
    async with running_hub(open_settings, store) as hub, _client(hub) as http:
        assert len((await http.get("/api/connectors/generic")).json()["pollers"]) == 1


def test_backoff_doubles_after_each_failure_up_to_the_cap() -> None:
    assert [backoff(10, n) for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]
    assert backoff(600, 3) == 600  # never shorter than the interval
    assert backoff(0.2, 100) == 300
