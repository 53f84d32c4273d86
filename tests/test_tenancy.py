"""Public mode: namespaces, tokens, write authorization, private reads, rate limits.

FLUX_COMPAT.md §1.7, §1.8, §1.11 and §5, with the "Fix or extend" decisions.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import httpx
import pytest
import websockets
from websockets.typing import Subprotocol

from hub.app import Hub
from hub.engine.auth import BearerProblem, read_bearer
from hub.store import Keys, Store
from hub.transport.responses import error_code

from .conftest import make_settings, running_hub, timeout
from .native_client import Native, event
from .processes import HubProcess, free_port

ADMIN = "admin-secret"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}


@dataclass
class World:
    hub: Hub
    http: httpx.AsyncClient
    ws_url: str
    tokens: dict[str, str]

    def auth(self, namespace: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[namespace]}"}


async def _world(
    store: Store, settings_groups: dict[str, dict[str, Any]], key_prefix: str
) -> AsyncIterator[World]:
    gateway = {"auth_enabled": True, "admin_token": ADMIN, **settings_groups.pop("gateway", {})}
    settings = make_settings(key_prefix, gateway=gateway, **settings_groups)
    async with running_hub(settings, store) as hub:
        base = f"http://127.0.0.1:{hub.port}"
        async with httpx.AsyncClient(base_url=base, timeout=timeout(10)) as http:
            tokens = {}
            for name in ("alpha", "beta"):
                reply = await http.post(
                    "/api/namespaces", json={"name": name}, headers=ADMIN_HEADERS
                )
                assert reply.status_code == 200, reply.text
                tokens[name] = reply.json()["token"]
            yield World(hub, http, f"ws://127.0.0.1:{hub.port}/api/ws", tokens)


@pytest.fixture
async def world(store: Store, key_prefix: str) -> AsyncIterator[World]:
    async for w in _world(store, {}, key_prefix):
        yield w


@pytest.fixture
async def private(store: Store, key_prefix: str) -> AsyncIterator[World]:
    async for w in _world(store, {"gateway": {"private_reads": True}}, key_prefix):
        yield w


# ---------------------------------------------------------------------- namespaces


async def test_namespace_endpoints_are_404_in_internal_mode(http: httpx.AsyncClient) -> None:
    message = {
        "error": "Namespace registration not available (auth disabled)",
        "code": "not_found",
    }
    reply = await http.post("/api/namespaces", json={"name": "abc"})
    assert (reply.status_code, reply.json()) == (404, message)
    reply = await http.get("/api/namespaces/abc")
    assert (reply.status_code, reply.json()) == (404, message)


async def test_registration_needs_the_admin_token(world: World) -> None:
    for headers in [{}, {"Authorization": "Bearer wrong"}]:
        reply = await world.http.post("/api/namespaces", json={"name": "gamma"}, headers=headers)
        assert (reply.status_code, reply.json()) == (
            401,
            {"error": "Admin token required", "code": "unauthorized"},
        )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ab", "Namespace name too short (minimum 3 characters)"),
        ("a" * 33, "Namespace name too long (maximum 32 characters)"),
        ("Abc", "Invalid character 'A' (must be [a-z0-9-_])"),
        ("ab.c", "Invalid character '.' (must be [a-z0-9-_])"),
    ],
)
async def test_registration_checks_the_name(world: World, name: str, message: str) -> None:
    reply = await world.http.post("/api/namespaces", json={"name": name}, headers=ADMIN_HEADERS)
    assert (reply.status_code, reply.json()) == (400, {"error": message, "code": "bad_request"})


async def test_registration_shows_the_token_once(world: World) -> None:
    reply = await world.http.post(
        "/api/namespaces", json={"name": "gamma_1-x"}, headers=ADMIN_HEADERS
    )
    body = reply.json()
    assert set(body) == {"namespaceId", "name", "token"}
    assert body["namespaceId"].startswith("ns_") and len(body["namespaceId"]) == 11
    assert len(body["token"]) == 36
    again = await world.http.post(
        "/api/namespaces", json={"name": "gamma_1-x"}, headers=ADMIN_HEADERS
    )
    assert (again.status_code, again.json()) == (
        409,
        {"error": "Namespace name already exists", "code": "conflict"},
    )
    info = await world.http.get("/api/namespaces/gamma_1-x")
    assert set(info.json()) == {"namespaceId", "name", "createdAt", "entityCount"}
    assert body["token"] not in info.text


async def test_namespace_shows_its_real_entity_count(world: World) -> None:
    for n in range(3):
        reply = await world.http.post(
            "/api/events", json=event(f"alpha/{n}", v=n), headers=world.auth("alpha")
        )
        assert reply.status_code == 200
    info = (await world.http.get("/api/namespaces/alpha")).json()
    assert info["entityCount"] == 3 and info["name"] == "alpha"
    assert info["createdAt"].endswith("Z")
    missing = await world.http.get("/api/namespaces/nobody")
    assert (missing.status_code, missing.json()) == (
        404,
        {"error": "Namespace not found", "code": "not_found"},
    )


async def test_deleted_namespace_loses_its_token_and_entities(world: World) -> None:
    await world.http.post("/api/events", json=event("beta/kept", v=1), headers=world.auth("beta"))
    refused = await world.http.delete("/api/namespaces/beta")
    assert (refused.status_code, refused.json()) == (
        401,
        {"error": "Admin token required", "code": "unauthorized"},
    )
    reply = await world.http.delete("/api/namespaces/beta", headers=ADMIN_HEADERS)
    assert reply.status_code == 204 and reply.content == b""
    assert (
        await world.http.delete("/api/namespaces/beta", headers=ADMIN_HEADERS)
    ).status_code == 404
    stale = await world.http.post(
        "/api/events", json=event("beta/kept", v=2), headers=world.auth("beta")
    )
    assert stale.status_code == 401
    assert (await world.http.get("/api/state/entities/beta%2Fkept")).status_code == 404
    # A new owner of the name inherits nothing.
    again = await world.http.post("/api/namespaces", json={"name": "beta"}, headers=ADMIN_HEADERS)
    assert again.status_code == 200
    assert (await world.http.get("/api/namespaces/beta")).json()["entityCount"] == 0


# ---------------------------------------------------------------------- the write matrix


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, BearerProblem.MISSING),
        ("Basic abc", BearerProblem.MALFORMED),
        ("Bearer", BearerProblem.MALFORMED),
        ("Bearer   ", BearerProblem.EMPTY),
        ("bearer  tok ", "tok"),
        ("BEARER tok", "tok"),
    ],
)
def test_bearer_parser_is_lenient_and_names_the_problem(
    header: str | None, expected: object
) -> None:
    # One parser on every endpoint (FLUX_COMPAT.md decision); HTTP clients trim header
    # values, so the "empty" case only arrives below them.
    assert read_bearer(header) == expected


@dataclass(frozen=True)
class Case:
    """How one write path answers: (status, message) for a single write."""

    name: str
    entity: str
    token: str | None  # "alpha", "beta", None, or a raw header value prefixed "raw:"


WRITE_CASES = [
    # (token, entity, expected status, expected message) for ingestion paths
    pytest.param(None, "alpha/x", 401, "Authorization token not provided", id="no-token"),
    pytest.param(
        "raw:Basic abc", "alpha/x", 401, "Invalid authorization token format", id="not-bearer"
    ),
    pytest.param(
        "beta",
        "alpha/x",
        403,
        "Token does not have permission to write to namespace 'alpha'",
        id="other-namespace",
    ),
    pytest.param(
        "alpha",
        "nobody/x",
        401,
        "Namespace 'nobody' not found. Get a namespace at flux-universe.com",
        id="unknown-namespace",
    ),
    pytest.param(
        "alpha",
        "no-namespace",
        401,
        "Entity ID 'no-namespace' missing namespace prefix (expected 'namespace/entity' format)",
        id="no-namespace",
    ),
    pytest.param(
        "alpha",
        "AB/x",
        401,
        "Failed to parse entity_id 'AB/x': InvalidNamespace(\"Invalid namespace 'AB': TooShort\")",
        id="malformed-id",
    ),
    pytest.param("alpha", "alpha/deep/path", 200, None, id="right-token-nested-id"),
    pytest.param("raw:bearer  TOKEN", "alpha/x", 200, None, id="right-token-lenient-parse"),
]


def _headers(world: World, token: str | None) -> dict[str, str]:
    if token is None:
        return {}
    if token.startswith("raw:"):
        value = token[4:].replace("TOKEN", world.tokens["alpha"])
        return {"Authorization": value}
    return world.auth(token)


@pytest.mark.parametrize(("token", "entity", "status", "message"), WRITE_CASES)
async def test_rest_publish_is_authorized(
    world: World, token: str | None, entity: str, status: int, message: str | None
) -> None:
    reply = await world.http.post(
        "/api/events", json=event(entity, v=1), headers=_headers(world, token)
    )
    assert reply.status_code == status, reply.text
    if message is not None:
        assert reply.json() == {"error": message, "code": error_code(status)}


@pytest.mark.parametrize(("token", "entity", "status", "message"), WRITE_CASES)
async def test_rest_batch_authorizes_each_event(
    world: World, token: str | None, entity: str, status: int, message: str | None
) -> None:
    events = [event(entity, v=1), event("alpha/fine", v=1)]
    reply = await world.http.post(
        "/api/events/batch", json={"events": events}, headers=_headers(world, token)
    )
    assert reply.status_code == 200
    first, second = reply.json()["results"]
    if message is None:
        assert first["error"] is None
    else:
        kind = "Forbidden" if status == 403 else "Invalid token"
        assert first["error"] == f"authorization failed: {kind}: {message}"
        assert first["eventId"] is not None  # validation passed: the id is kept
    # The other event succeeds or fails on its own merits.
    assert (second["error"] is None) == (token not in (None, "beta", "raw:Basic abc"))


@pytest.mark.parametrize(("token", "entity", "status", "message"), WRITE_CASES)
async def test_native_publish_authorizes_each_event(
    world: World, token: str | None, entity: str, status: int, message: str | None
) -> None:
    headers = _headers(world, token)
    client = Native(
        await websockets.connect(
            world.ws_url, subprotocols=[Subprotocol("flux.v1")], additional_headers=headers
        )
    )
    try:
        result = (await client.publish(event(entity, v=1)))[0]
    finally:
        await client.close()
    if message is None:
        assert result["status"] == "ok"
    else:
        code = {401: "unauthorized", 403: "forbidden"}[status]
        assert result["error"] == {"code": code, "message": message}


async def test_native_client_can_authenticate_with_a_frame_or_query(world: World) -> None:
    client = await Native.connect(world.ws_url)
    try:
        assert (await client.publish(event("alpha/a", v=1)))[0]["error"]["code"] == "unauthorized"
        bad = await client.request({"type": "auth", "token": "nope"}, "authenticated")
        assert bad["code"] == "unauthorized"
        good = await client.request(
            {"type": "auth", "token": world.tokens["alpha"]}, "authenticated"
        )
        assert good["namespace"] == "alpha" and good["admin"] is False
        assert (await client.publish(event("alpha/a", v=1)))[0]["status"] == "ok"
    finally:
        await client.close()
    query = await Native.connect(world.ws_url + f"?token={world.tokens['beta']}")
    try:
        assert (await query.publish(event("beta/b", v=1)))[0]["status"] == "ok"
        assert (await query.publish(event("alpha/b", v=1)))[0]["error"]["code"] == "forbidden"
    finally:
        await query.close()


DELETE_CASES = [
    pytest.param(None, "alpha/x", 401, "Missing Authorization header", id="no-token"),
    pytest.param("raw:Basic abc", "alpha/x", 401, "Invalid Authorization format", id="not-bearer"),
    pytest.param("beta", "alpha/x", 403, "Token does not own namespace", id="other-namespace"),
    pytest.param("alpha", "nobody/x", 403, "Token does not own namespace", id="unknown-namespace"),
    pytest.param("alpha", "no-namespace", 401, "Entity has no namespace", id="no-namespace"),
    pytest.param(
        "alpha",
        "AB/x",
        400,
        "InvalidNamespace(\"Invalid namespace 'AB': TooShort\")",
        id="malformed-id",
    ),
    pytest.param("alpha", "alpha/x", 200, None, id="right-token"),
]


@pytest.mark.parametrize(("token", "entity", "status", "message"), DELETE_CASES)
async def test_rest_delete_is_authorized(
    world: World, token: str | None, entity: str, status: int, message: str | None
) -> None:
    path = "/api/state/entities/" + entity.replace("/", "%2F")
    reply = await world.http.delete(path, headers=_headers(world, token))
    assert reply.status_code == status, reply.text
    if message is not None:
        assert reply.json() == {"error": message, "code": error_code(status)}


@pytest.mark.parametrize(("token", "entity", "status", "message"), DELETE_CASES)
async def test_rest_batch_delete_is_authorized_before_anything_is_deleted(
    world: World, token: str | None, entity: str, status: int, message: str | None
) -> None:
    await world.http.post("/api/events", json=event("alpha/keep", v=1), headers=world.auth("alpha"))
    body = {"entity_ids": ["alpha/keep", entity]}
    reply = await world.http.post(
        "/api/state/entities/delete", json=body, headers=_headers(world, token)
    )
    assert reply.status_code == status, reply.text
    kept = await world.http.get("/api/state/entities/alpha%2Fkeep")
    if message is not None:
        assert reply.json() == {"error": message, "code": error_code(status)}
        assert kept.status_code == 200  # nothing was deleted
    else:
        assert kept.status_code == 404


async def test_nobody_may_write_the_hubs_own_namespace(world: World) -> None:
    for token in ("alpha", None):
        reply = await world.http.post(
            "/api/events", json=event("flux-core/directory", x=1), headers=_headers(world, token)
        )
        assert reply.status_code in (401, 403)
    admin = await world.http.post(
        "/api/events", json=event("flux-core/directory", x=1), headers=ADMIN_HEADERS
    )
    assert admin.status_code in (401, 403)


async def test_internal_mode_refuses_writes_to_flux_core(http: httpx.AsyncClient) -> None:
    reply = await http.post("/api/events", json=event("flux-core/directory", x=1))
    assert (reply.status_code, reply.json()) == (
        403,
        {"error": "namespace 'flux-core' is reserved for the hub", "code": "forbidden"},
    )
    gone = await http.delete("/api/state/entities/flux-core%2Fdirectory")
    assert gone.status_code == 403


# ---------------------------------------------------------------------- secrets


async def test_no_token_or_hash_leaks_into_responses_logs_or_keys(
    world: World, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets_seen = list(world.tokens.values())
    secrets_seen += [hashlib.sha256(t.encode()).hexdigest() for t in world.tokens.values()]
    replies = [
        await world.http.post(
            "/api/events", json=event("alpha/s", v=1), headers=world.auth("alpha")
        ),
        await world.http.post(
            "/api/events", json=event("alpha/s", v=1), headers=world.auth("beta")
        ),
        await world.http.get("/api/namespaces/alpha"),
        await world.http.get("/api/state/entities"),
        await world.http.get("/api/events", params={"entity": "alpha/s"}),
        await world.http.delete("/api/state/entities/alpha%2Fs", headers=world.auth("beta")),
    ]
    for reply in replies:
        for secret in secrets_seen:
            assert secret not in reply.text
            assert all(secret not in value for value in reply.headers.values())
    for record in caplog.records:
        for secret in secrets_seen:
            assert secret not in record.getMessage()
    keys = [k.decode() async for k in store.client.scan_iter(match=store.keys.prefix + ":*")]
    assert keys
    for key in keys:
        for secret in secrets_seen:
            assert secret not in key
    # The clear tokens are stored nowhere, values included.
    for key in keys:
        kind = cast("bytes", await store.client.type(key)).decode()
        if kind == "hash":
            fields = cast("dict[bytes, bytes]", await store.client.hgetall(key))
            flat = json.dumps({k.decode(): v.decode(errors="replace") for k, v in fields.items()})
            for token in world.tokens.values():
                assert token not in flat


# ---------------------------------------------------------------------- private reads


async def _seed(world: World) -> None:
    for namespace in ("alpha", "beta"):
        for n in range(2):
            reply = await world.http.post(
                "/api/events", json=event(f"{namespace}/{n}", v=n), headers=world.auth(namespace)
            )
            assert reply.status_code == 200


async def test_private_reads_confine_rest_reads_to_the_tokens_namespace(private: World) -> None:
    await _seed(private)
    http = private.http
    assert (await http.get("/api/state/entities")).status_code == 401
    listed = await http.get("/api/state/entities", headers=private.auth("alpha"))
    assert [e["id"] for e in listed.json()] == ["alpha/0", "alpha/1"]
    prefix = await http.get(
        "/api/state/entities", params={"prefix": "beta/"}, headers=private.auth("alpha")
    )
    assert prefix.json() == []
    other = await http.get("/api/state/entities/beta%2F0", headers=private.auth("alpha"))
    assert other.status_code == 403
    history = await http.get(
        "/api/events", params={"entity": "beta/0"}, headers=private.auth("alpha")
    )
    assert history.status_code == 403
    admin = await http.get("/api/state/entities", headers=ADMIN_HEADERS)
    assert {e["id"] for e in admin.json()} >= {"alpha/0", "beta/0"}


@pytest.mark.parametrize(
    "spec",
    [
        {"all": True},
        {"prefixes": ["beta/"]},
        {"prefixes": [""]},
        {"ids": ["beta/0", "alpha/0"]},
        {"namespaces": ["beta", "alpha"]},
        {"globs": ["*"]},
        {"globs": ["beta/*"]},
    ],
    ids=["all", "other-prefix", "empty-prefix", "ids", "namespaces", "glob-all", "glob-other"],
)
async def test_private_subscriber_never_receives_another_namespaces_delta(
    private: World, spec: dict[str, Any]
) -> None:
    await _seed(private)
    client = Native(
        await websockets.connect(
            private.ws_url,
            subprotocols=[Subprotocol("flux.v1")],
            additional_headers=private.auth("alpha"),
        )
    )
    seen: list[str] = []
    try:
        reply = await client.request(
            {"type": "subscribe", "sub": "s", "filter": spec, "snapshot": True}, "subscribed"
        )
        if reply["type"] == "error":
            assert reply["code"] == "forbidden"  # a filter that only reaches elsewhere
        publisher = await Native.connect(private.ws_url + f"?token={private.tokens['beta']}")
        await publisher.publish(event("beta/0", v=99), event("beta/new", v=1))
        await publisher.publish(event("beta/0", __deleted__=True))
        await publisher.close()
        await private.http.post(
            "/api/events", json=event("alpha/0", v=42), headers=private.auth("alpha")
        )
        while True:
            try:
                frame = await client.recv(wait=0.5)
            except TimeoutError:
                break
            if frame["type"] in ("delta", "deleted"):
                seen.append(frame["id"])
            elif frame["type"] == "snapshot":
                seen += [e["id"] for e in frame["entities"]]
    finally:
        await client.close()
    assert all(i.startswith("alpha/") for i in seen), seen
    if reply["type"] == "subscribed" and (
        "alpha/0" in json.dumps(spec)
        or spec in ({"all": True}, {"prefixes": [""]}, {"globs": ["*"]})
    ):
        assert "alpha/0" in seen


async def test_private_compat_client_needs_a_token_and_sees_only_its_namespace(
    private: World,
) -> None:
    async with websockets.connect(private.ws_url) as anonymous:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(anonymous.recv(), timeout(5))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    async with websockets.connect(private.ws_url + f"?token={private.tokens['alpha']}") as compat:
        await asyncio.sleep(0.2)
        await _seed(private)
        await private.http.delete("/api/state/entities/beta%2F0", headers=private.auth("beta"))
        ids = set()
        while True:
            try:
                message = json.loads(await asyncio.wait_for(compat.recv(), 0.5))
            except TimeoutError:
                break
            if "entity_id" in message:
                ids.add(message["entity_id"])
    assert ids == {"alpha/0", "alpha/1"}


# ---------------------------------------------------------------------- rate limits


async def test_two_hubs_share_one_rate_limit(store: Store, key_prefix: str) -> None:
    limit = 10
    async for w in _world(
        store, {"runtime": {"rate_limit_per_namespace_per_minute": limit}}, key_prefix
    ):
        settings = make_settings(
            key_prefix,
            gateway={"auth_enabled": True, "admin_token": ADMIN},
            runtime={"rate_limit_per_namespace_per_minute": limit},
        )
        async with running_hub(settings, store) as other:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{other.port}", timeout=timeout(10)
            ) as http2:
                statuses = []
                retry_after = []
                for n in range(16):
                    client = w.http if n % 2 else http2
                    reply = await client.post(
                        "/api/events", json=event(f"alpha/r{n}", v=n), headers=w.auth("alpha")
                    )
                    statuses.append(reply.status_code)
                    if reply.status_code == 429:
                        assert reply.json() == {
                            "error": "rate limit exceeded",
                            "code": "rate_limited",
                        }
                        retry_after.append(int(reply.headers["retry-after"]))
                batch = await http2.post(
                    "/api/events/batch",
                    json={"events": [event("alpha/b", v=1)]},
                    headers=w.auth("alpha"),
                )
                other_ns = await http2.post(
                    "/api/events", json=event("beta/free", v=1), headers=w.auth("beta")
                )
    assert statuses.count(200) == limit
    assert statuses.count(429) == 16 - limit
    # The real wait for one token: 60 s / 10 = 6 s, not Flux's fixed 60.
    assert all(1 <= r <= 6 for r in retry_after)
    assert batch.json()["results"][0]["error"] == "rate limit exceeded"
    assert other_ns.status_code == 200  # buckets are per namespace


async def test_rate_limit_can_be_switched_off_at_runtime(store: Store, key_prefix: str) -> None:
    async for w in _world(
        store, {"runtime": {"rate_limit_per_namespace_per_minute": 2}}, key_prefix
    ):
        statuses = [
            (
                await w.http.post(
                    "/api/events", json=event(f"alpha/{n}", v=n), headers=w.auth("alpha")
                )
            ).status_code
            for n in range(3)
        ]
        assert statuses == [200, 200, 429]
        reply = await w.http.put(
            "/api/admin/config", json={"rate_limit_enabled": False}, headers=ADMIN_HEADERS
        )
        assert reply.status_code == 200
        again = await w.http.post(
            "/api/events", json=event("alpha/x", v=1), headers=w.auth("alpha")
        )
        assert again.status_code == 200


async def test_native_publish_reports_the_rate_limit_per_event(
    store: Store, key_prefix: str
) -> None:
    async for w in _world(
        store, {"runtime": {"rate_limit_per_namespace_per_minute": 3}}, key_prefix
    ):
        client = await Native.connect(w.ws_url + f"?token={w.tokens['alpha']}")
        try:
            results = await client.publish(*[event(f"alpha/{n}", v=n) for n in range(5)])
        finally:
            await client.close()
        assert [r.get("status") for r in results] == ["ok", "ok", "ok", None, None]
        assert results[3]["error"]["code"] == "rate_limited"
        assert results[3]["retry_after_ms"] > 0


# ---------------------------------------------------------------------- directory


async def test_directory_lists_namespaces_and_is_not_writable(world: World) -> None:
    await _seed(world)
    http = world.http
    deadline = asyncio.get_running_loop().time() + timeout(10)
    while True:
        reply = await http.get("/api/state/entities/flux-core%2Fdirectory")
        if reply.status_code == 200 and reply.json()["properties"]["total_entities"] == 4:
            break
        assert asyncio.get_running_loop().time() < deadline, reply.text
        await asyncio.sleep(0.2)
    props = reply.json()["properties"]
    assert props["namespace_count"] == 2
    assert props["namespaces"]["alpha"]["entity_count"] == 2
    assert props["namespaces"]["beta"]["last_updated"].endswith("Z")
    assert props["updated_at"].endswith("Z")


async def test_one_hub_of_several_writes_the_directory(redis_url: str, key_prefix: str) -> None:
    settings = make_settings(key_prefix)
    async with (
        await Store.connect(redis_url, Keys(key_prefix), settings.log) as store,
        running_hub(settings, store) as first,
        running_hub(settings, store) as second,
    ):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{first.port}") as http:
            for n in range(3):
                await http.post("/api/events", json=event(f"ns{n}/x", v=n))
                await asyncio.sleep(2.2)
        writers = [h for h in (first, second) if h.directory.writes]
        assert len(writers) == 1


async def test_two_hub_processes_share_one_rate_limit(redis_url: str, key_prefix: str) -> None:
    # Two `flux serve` processes on one Redis: one bucket per namespace between them.
    env = {
        "FLUX_AUTH_ENABLED": "true",
        "FLUX_ADMIN_TOKEN": ADMIN,
        "FLUX_RATE_LIMIT_PER_NAMESPACE_PER_MINUTE": "10",
    }
    hubs = [HubProcess(redis_url, key_prefix, free_port(), env) for _ in range(2)]
    try:
        for process in hubs:
            await process.start()
        urls = [f"http://127.0.0.1:{h.port}" for h in hubs]
        async with httpx.AsyncClient(timeout=timeout(10)) as http:
            registered = await http.post(
                urls[0] + "/api/namespaces", json={"name": "shared"}, headers=ADMIN_HEADERS
            )
            token = registered.json()["token"]
            statuses = [
                (
                    await http.post(
                        urls[n % 2] + "/api/events",
                        json=event(f"shared/{n}", v=n),
                        headers={"Authorization": f"Bearer {token}"},
                    )
                ).status_code
                for n in range(16)
            ]
    finally:
        for process in hubs:
            await process.stop()
    assert statuses.count(200) == 10
    assert statuses.count(429) == 6
    assert statuses[-1] == 429  # the bucket is empty for both processes
