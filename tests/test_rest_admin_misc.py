"""Admin runtime config (FLUX_COMPAT.md §1.9), CORS, routing errors and health.

Decisions tested here: values are validated (422 out of bounds), changes are shared
by every hub on the same Redis and survive restarts, CORS allows PUT, every rejection
is JSON, and ``/healthz`` and ``/readyz`` exist.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from hub.store import Store

from .conftest import make_settings, running_hub, timeout

DEFAULTS = {
    "rate_limit_enabled": True,
    "rate_limit_per_namespace_per_minute": 10000,
    "body_size_limit_single_bytes": 1048576,
    "body_size_limit_batch_bytes": 10485760,
}


def _event_body_of_size(size: int) -> bytes:
    empty = b'{"stream":"s","source":"s","payload":{"entity_id":"cfg/1","properties":{"b":""}}}'
    return empty.replace(b'"b":""', b'"b":"' + b"a" * (size - len(empty)) + b'"')


async def _config(http: httpx.AsyncClient) -> dict[str, Any]:
    reply = await http.get("/api/admin/config")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    config: dict[str, Any] = reply.json()
    return config


def _client(port: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=timeout(10))


# ---------------------------------------------------------------------- GET / PUT


async def test_admin_reads_flux_default_config(http: httpx.AsyncClient) -> None:
    config = await _config(http)
    assert config == DEFAULTS
    assert all(type(config[k]) is type(v) for k, v in DEFAULTS.items())


@pytest.mark.parametrize(
    "update",
    [
        pytest.param({}, id="nothing"),
        pytest.param({"rate_limit_enabled": False}, id="flag"),
        pytest.param({"rate_limit_per_namespace_per_minute": 5000}, id="rate"),
        pytest.param(
            {"body_size_limit_single_bytes": 2048, "body_size_limit_batch_bytes": 65536},
            id="both-limits",
        ),
        pytest.param(
            {
                "rate_limit_enabled": False,
                "rate_limit_per_namespace_per_minute": 1,
                "body_size_limit_single_bytes": 4096,
                "body_size_limit_batch_bytes": 8192,
            },
            id="all",
        ),
    ],
)
async def test_admin_puts_any_subset_and_gets_full_config(
    http: httpx.AsyncClient, update: dict[str, Any]
) -> None:
    reply = await http.put("/api/admin/config", json=update)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    expected = {**DEFAULTS, **update}
    assert reply.json() == expected
    assert await _config(http) == expected


async def test_admin_put_ignores_unknown_fields(http: httpx.AsyncClient) -> None:
    update = {"max_batch_delete": 1, "rateLimitEnabled": False, "rate_limit_enabled": False}
    reply = await http.put("/api/admin/config", json=update)
    assert reply.status_code == 200
    assert reply.json() == {**DEFAULTS, "rate_limit_enabled": False}


async def test_admin_put_with_null_field_leaves_it_unchanged(http: httpx.AsyncClient) -> None:
    # Flux's update struct has Option<…> fields: null means "not given".
    update = {"rate_limit_enabled": None, "body_size_limit_single_bytes": 4096}
    reply = await http.put("/api/admin/config", json=update)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {**DEFAULTS, "body_size_limit_single_bytes": 4096}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"rate_limit_enabled": "yes"}, id="flag-string"),
        pytest.param({"rate_limit_enabled": 1}, id="flag-int"),
        pytest.param({"rate_limit_per_namespace_per_minute": "100"}, id="rate-string"),
        pytest.param({"rate_limit_per_namespace_per_minute": -1}, id="rate-negative"),
        pytest.param({"body_size_limit_single_bytes": 2048.0}, id="limit-float"),
        pytest.param({"body_size_limit_single_bytes": True}, id="limit-bool"),
        pytest.param({"body_size_limit_batch_bytes": [4096]}, id="limit-list"),
        pytest.param({"body_size_limit_batch_bytes": {}}, id="limit-object"),
        pytest.param([], id="array"),
        pytest.param("config", id="string"),
        pytest.param(None, id="null"),
    ],
)
async def test_admin_put_with_wrong_type_gets_422_json(http: httpx.AsyncClient, body: Any) -> None:
    reply = await http.put("/api/admin/config", content=json.dumps(body).encode())
    assert reply.status_code == 422
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()
    assert set(error) == {"error", "code"}
    assert error["error"].startswith("Failed to deserialize the JSON body into the target type")
    assert await _config(http) == DEFAULTS


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"body_size_limit_single_bytes": 0}, id="single-0"),
        pytest.param({"body_size_limit_batch_bytes": 0}, id="batch-0"),
        pytest.param({"body_size_limit_single_bytes": 1023}, id="single-below-1kib"),
        pytest.param({"body_size_limit_batch_bytes": 64 * 1024 * 1024 + 1}, id="batch-over-64mib"),
        pytest.param({"rate_limit_per_namespace_per_minute": 0}, id="rate-0"),
        pytest.param(
            {"rate_limit_enabled": False, "body_size_limit_single_bytes": 0}, id="partly-valid"
        ),
    ],
)
async def test_admin_put_out_of_bounds_gets_422_and_changes_nothing(
    http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    reply = await http.put("/api/admin/config", json=body)
    assert reply.status_code == 422
    assert reply.headers["content-type"] == "application/json"
    assert isinstance(reply.json()["error"], str)
    assert await _config(http) == DEFAULTS
    event = {"stream": "s", "source": "s", "payload": {"entity_id": "x", "properties": {}}}
    assert (await http.post("/api/events", json=event)).status_code == 200


async def test_admin_put_with_invalid_json_gets_400_json(http: httpx.AsyncClient) -> None:
    reply = await http.put("/api/admin/config", content=b"{rate_limit_enabled: false}")
    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["error"].startswith("Failed to parse the request body as JSON")


async def test_admin_with_token_set_must_send_exact_bearer_to_put(
    store: Store, key_prefix: str
) -> None:
    settings = make_settings(key_prefix, gateway={"admin_token": "s3cret"})
    update = {"rate_limit_per_namespace_per_minute": 42}
    async with running_hub(settings, store) as hub, _client(hub.port) as http:
        refused = [
            {},
            {"authorization": "Bearer wrong"},
            {"authorization": "s3cret"},
            {"authorization": "Bearer s3cret-and-more"},
            {"authorization": "Basic s3cret"},
        ]
        for headers in refused:
            reply = await http.put("/api/admin/config", json=update, headers=headers)
            assert reply.status_code == 401, headers
            assert reply.headers["content-type"] == "application/json"
            assert reply.json() == {"error": "Unauthorized", "code": "unauthorized"}
            assert reply.headers["access-control-allow-origin"] == "*"
        # GET stays open.
        assert await _config(http) == DEFAULTS
        ok = await http.put(
            "/api/admin/config", json=update, headers={"authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 200
        assert ok.json() == {**DEFAULTS, **update}
        assert await _config(http) == {**DEFAULTS, **update}


@pytest.mark.parametrize(
    ("content", "status"),
    [
        pytest.param(b'{"rate_limit_enabled": "x"}', 422, id="wrong-type"),
        pytest.param(b"[]", 422, id="not-an-object"),
        pytest.param(b"{", 400, id="invalid-json"),
    ],
)
async def test_admin_with_token_set_gets_body_error_before_401(
    store: Store, key_prefix: str, content: bytes, status: int
) -> None:
    # §1.9: the body is parsed (axum's Json extractor: syntax, then shape and types)
    # before the token is checked.
    settings = make_settings(key_prefix, gateway={"admin_token": "s3cret"})
    async with running_hub(settings, store) as hub, _client(hub.port) as http:
        for headers in ({}, {"authorization": "Bearer wrong"}):
            reply = await http.put("/api/admin/config", content=content, headers=headers)
            assert reply.status_code == status, reply.text
            assert reply.headers["content-type"] == "application/json"
        assert await _config(http) == DEFAULTS


async def test_admin_limit_change_applies_at_once_everywhere_and_survives_restart(
    http: httpx.AsyncClient, store: Store, key_prefix: str
) -> None:
    settings = make_settings(key_prefix)
    async with running_hub(settings, store) as second, _client(second.port) as other:
        assert await _config(other) == DEFAULTS
        reply = await http.put("/api/admin/config", json={"body_size_limit_single_bytes": 4096})
        assert reply.status_code == 200
        # This hub: the very next POST.
        over = await http.post("/api/events", content=_event_body_of_size(4097))
        assert over.status_code == 413
        assert over.json() == {"error": "payload too large", "code": "payload_too_large"}
        assert (
            await http.post("/api/events", content=_event_body_of_size(4096))
        ).status_code == 200
        # Another hub on the same Redis and prefix: within 2 s.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout(2)
        while (await _config(other))["body_size_limit_single_bytes"] != 4096:
            assert loop.time() < deadline, "the second hub never saw the change"
            await asyncio.sleep(0.05)
        assert (
            await other.post("/api/events", content=_event_body_of_size(4097))
        ).status_code == 413
        assert (
            await other.post("/api/events", content=_event_body_of_size(4096))
        ).status_code == 200
    # A hub started afterwards (a restart) starts with the changed value.
    async with running_hub(settings, store) as restarted, _client(restarted.port) as again:
        assert await _config(again) == {**DEFAULTS, "body_size_limit_single_bytes": 4096}
        assert (
            await again.post("/api/events", content=_event_body_of_size(4097))
        ).status_code == 413


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_client_without_json_content_type_is_accepted_everywhere(
    http: httpx.AsyncClient, content_type: str | None
) -> None:
    # Flux's JSON extractors answer 415 here; the hub accepts any Content-Type.
    headers = {} if content_type is None else {"content-type": content_type}
    put = await http.put(
        "/api/admin/config", content=b'{"rate_limit_enabled": false}', headers=headers
    )
    assert put.status_code == 200
    assert put.json()["rate_limit_enabled"] is False
    delete = await http.post(
        "/api/state/entities/delete", content=b'{"prefix": "none/"}', headers=headers
    )
    assert delete.status_code == 200
    assert delete.json() == {"deleted": 0, "failed": 0, "errors": []}


# ---------------------------------------------------------------------- CORS


async def test_browser_gets_cors_origin_on_every_response(http: httpx.AsyncClient) -> None:
    event = {"stream": "s", "source": "s", "payload": {"entity_id": "c/1", "properties": {"a": 1}}}
    responses = [
        await http.get("/api/state/entities"),
        await http.get("/api/state/entities", params={"limit": "1"}),
        await http.post("/api/events", json=event),
        await http.post("/api/events/batch", json={"events": [event]}),
        await http.get("/api/state/entities/c%2F1"),
        await http.get("/api/events", params={"entity": "c/1"}),
        await http.delete("/api/state/entities/c%2F1"),
        await http.post("/api/state/entities/delete", json={"prefix": "c/"}),
        await http.get("/api/admin/config"),
        await http.put("/api/admin/config", json={}),
        await http.get("/healthz"),
        await http.get("/readyz"),
        await http.post("/api/events", json={"stream": ""}),
        await http.get("/api/state/entities/nobody"),
        await http.get("/nowhere"),
        await http.patch("/api/events"),
        await http.put("/api/admin/config", json={"rate_limit_enabled": 3}),
        await http.get("/api/events"),
        await http.post("/api/events", content=b"x" * 1048577),
        await http.options("/api/events", headers={"origin": "http://example.com"}),
    ]
    assert {400, 404, 405, 413, 422} <= {r.status_code for r in responses}
    for reply in responses:
        assert reply.headers.get("access-control-allow-origin") == "*", (
            reply.request.method,
            reply.request.url,
            reply.status_code,
        )


@pytest.mark.parametrize("path", ["/api/admin/config", "/api/events", "/api/state/entities/a%2Fb"])
async def test_browser_preflight_allows_put_and_auth_headers(
    http: httpx.AsyncClient, path: str
) -> None:
    reply = await http.options(
        path,
        headers={
            "origin": "http://dashboard.example",
            "access-control-request-method": "PUT",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert reply.status_code in (200, 204)
    assert reply.headers["access-control-allow-origin"] == "*"
    methods = {m.strip().upper() for m in reply.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST", "PUT", "DELETE", "OPTIONS"} <= methods
    allowed = {h.strip().lower() for h in reply.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed


# ---------------------------------------------------------------------- routing, health


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/static/nope.js"),
        ("GET", "/api"),
        ("GET", "/api/nothing"),
        ("POST", "/api/events/unknown"),
        ("GET", "/api/state/entities/"),
        ("GET", "/api/state"),
        ("GET", "/api/admin"),
        ("DELETE", "/api/admin/config/x"),
    ],
)
async def test_client_on_unknown_path_gets_404_json(
    http: httpx.AsyncClient, method: str, path: str
) -> None:
    reply = await http.request(method, path)
    assert reply.status_code == 404
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()
    assert set(error) == {"error", "code"} and isinstance(error["error"], str)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", "/api/events"),
        ("DELETE", "/api/events"),
        ("GET", "/api/events/batch"),
        ("PUT", "/api/events/batch"),
        ("POST", "/api/state/entities"),
        ("DELETE", "/api/state/entities"),
        ("POST", "/api/state/entities/a%2Fb"),
        ("PUT", "/api/state/entities/a%2Fb"),
        ("POST", "/api/admin/config"),
        ("DELETE", "/api/admin/config"),
    ],
)
async def test_client_using_wrong_method_gets_405_json(
    http: httpx.AsyncClient, method: str, path: str
) -> None:
    reply = await http.request(method, path)
    assert reply.status_code == 405
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()
    assert set(error) == {"error", "code"} and isinstance(error["error"], str)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_operator_probe_gets_200(http: httpx.AsyncClient, path: str) -> None:
    reply = await http.get(path)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
