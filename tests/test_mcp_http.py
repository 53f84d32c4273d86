"""``/mcp``: the hub's streamable-HTTP MCP endpoint, driven by the ``mcp`` SDK's own
client; tokens and namespaces as on REST (Public mode, private reads); the bounds."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from pydantic import AnyUrl

from hub.app import Hub
from hub.mcp.http import MAX_WAITS
from hub.store import Store

from .conftest import make_settings, running_hub, timeout
from .mcp_agents import MCP_ACCEPT, http_agent, mcp_initialize, stdio_agent

ADMIN = "mcp-admin-token"
INIT = mcp_initialize("curl")
ACCEPT = MCP_ACCEPT


async def test_mcp_http_tools_and_the_task_claim_between_two_agents(
    base_url: str, http: httpx.AsyncClient
) -> None:
    async with http_agent(base_url) as planner:
        tools = {t.name for t in (await planner.session.list_tools()).tools}
        assert "wait_for_change" in tools
        done = await planner.ok(
            "publish", events=[{"entity_id": "crew/task-7", "properties": {"state": "open"}}]
        )
        assert done["results"][0]["version"] == 1
        page = await planner.ok("list", namespace="crew")
        assert [e["id"] for e in page["entities"]] == ["crew/task-7"]
    results: dict[str, tuple[dict[str, Any], bool]] = {}

    async def claim(name: str) -> None:
        async with http_agent(base_url) as agent:
            claim = {
                "entity_id": "crew/task-7",
                "properties": {"state": "claimed", "owner": name},
                "if_version": 1,
            }
            results[name] = await agent.call("publish", events=[claim])

    async with anyio.create_task_group() as tg:
        for name in ("agent-a", "agent-b", "agent-c"):
            tg.start_soon(claim, name)
    winners = [name for name, (_, is_error) in results.items() if not is_error]
    assert len(winners) == 1, results
    for name, (value, is_error) in results.items():
        if is_error:
            refusal = value["results"][0]
            assert refusal["error"]["code"] == "conflict" and refusal["version"] == 2
            assert refusal["current"]["properties"]["owner"] == winners[0], name
    entity = (await http.get("/api/state/entities/crew%2Ftask-7")).json()
    assert entity["properties"]["owner"] == winners[0]


async def test_mcp_http_wait_for_change_and_resource_notifications(base_url: str) -> None:
    async with http_agent(base_url) as agent, http_agent(base_url) as other:
        empty = await agent.ok("wait_for_change", filter={"ids": ["crew/x"]}, timeout_seconds=0.3)
        assert empty["timed_out"] is True and empty["changes"] == []
        await other.ok("publish", events=[{"entity_id": "crew/x", "properties": {"v": 1}}])
        found = await agent.ok(
            "wait_for_change", filter={"ids": ["crew/x"]}, cursor=empty["cursor"]
        )
        assert [(c["kind"], c["set"]) for c in found["changes"]] == [("created", {"v": 1})]

        uri = AnyUrl("flux://entity/crew/x")
        await agent.session.subscribe_resource(uri)
        await other.ok("publish", events=[{"entity_id": "crew/x", "properties": {"v": 2}}])
        await agent.wait_update(1)
        assert agent.updates == ["flux://entity/crew/x"]
        read = await agent.session.read_resource(uri)
        assert '"v": 2' in read.contents[0].text  # type: ignore[union-attr]


async def test_mcp_http_refusals_are_the_hubs_errors(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout(10)) as http:
        # No Accept that MCP needs.
        reply = await http.post("/mcp", json=INIT)
        assert reply.status_code == 406
        assert reply.json()["code"] == "client_error" and "Accept" in reply.json()["error"]
        reply = await http.post("/mcp", content=b"{not json", headers=ACCEPT)
        assert reply.status_code == 400 and reply.json()["code"] == "bad_request"
        unknown = {**ACCEPT, "mcp-session-id": "nope"}
        reply = await http.post("/mcp", json={**INIT, "method": "tools/list"}, headers=unknown)
        assert reply.status_code == 404 and reply.json()["code"] == "not_found"
        # A session opened by hand: initialize, then list the tools.
        opened = await http.post("/mcp", json=INIT, headers=ACCEPT)
        assert opened.status_code == 200, opened.text
        session = {**ACCEPT, "mcp-session-id": opened.headers["mcp-session-id"]}
        assert opened.json()["result"]["capabilities"]["resources"]["subscribe"] is True
        ready = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await http.post("/mcp", json=ready, headers=session)).status_code == 202
        listed = await http.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=session
        )
        assert len(listed.json()["result"]["tools"]) == 6
        closed = await http.delete("/mcp", headers=session)
        assert closed.status_code == 200
        reply = await http.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, headers=session
        )
        assert reply.status_code == 404


async def test_mcp_http_bounds_concurrent_waits(hub: Hub, base_url: str) -> None:
    crew = {"prefixes": ["crew/"]}
    async with http_agent(base_url) as agent, http_agent(base_url) as other:
        outcomes: list[tuple[dict[str, Any], bool]] = []

        async def wait() -> None:
            outcomes.append(await agent.call("wait_for_change", filter=crew, timeout_seconds=30))

        async with anyio.create_task_group() as tg:
            for _ in range(MAX_WAITS):
                tg.start_soon(wait)
            with anyio.fail_after(timeout(20)):
                while hub.mcp.waits.borrowed_tokens < MAX_WAITS:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            refused, is_error = await other.call("wait_for_change", filter=crew)
            assert is_error and refused["error"]["code"] == "unavailable"
            assert "too many wait_for_change calls in progress" in refused["error"]["message"]
            # One change ends every wait.
            await other.ok("publish", events=[{"entity_id": "crew/go", "properties": {"go": 1}}])
        assert len(outcomes) == MAX_WAITS
        assert all(not is_error and value["changes"] for value, is_error in outcomes)
        assert hub.mcp.waits.borrowed_tokens == 0


# ---------------------------------------------------------------------- Public mode


@pytest.fixture
async def public(store: Store, key_prefix: str) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A hub in Public mode with private reads, and the tokens of ``crew`` and ``ops``."""
    settings = make_settings(
        key_prefix, gateway={"auth_enabled": True, "admin_token": ADMIN, "private_reads": True}
    )
    hub: Hub
    async with running_hub(settings, store) as hub:
        base_url = f"http://127.0.0.1:{hub.port}"
        tokens = {}
        async with httpx.AsyncClient(base_url=base_url, timeout=timeout(10)) as http:
            for name in ("crew", "ops"):
                reply = await http.post(
                    "/api/namespaces",
                    json={"name": name},
                    headers={"Authorization": f"Bearer {ADMIN}"},
                )
                tokens[name] = reply.json()["token"]
            seeded = await http.post(
                "/api/events",
                json={
                    "stream": "s",
                    "source": "t",
                    "payload": {"entity_id": "ops/secret", "properties": {"k": 1}},
                },
                headers={"Authorization": f"Bearer {tokens['ops']}"},
            )
            assert seeded.status_code == 200
        yield base_url, tokens


@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_mcp_token_reaches_only_its_namespace_with_rests_errors(
    public: tuple[str, dict[str, str]], transport: str
) -> None:
    base_url, tokens = public
    crew = {"Authorization": f"Bearer {tokens['crew']}"}
    connect = http_agent if transport == "http" else stdio_agent
    async with (
        httpx.AsyncClient(base_url=base_url, headers=crew, timeout=timeout(10)) as rest,
        connect(base_url, tokens["crew"]) as agent,
    ):
        mine = await agent.ok("publish", events=[{"entity_id": "crew/a", "properties": {"v": 1}}])
        assert mine["published"] == 1

        # Writing elsewhere: refused as REST refuses it.
        wrote, is_error = await agent.call(
            "publish", events=[{"entity_id": "ops/secret", "properties": {"k": 2}}]
        )
        assert is_error
        rest_write = await rest.post(
            "/api/events",
            json={
                "stream": "s",
                "source": "t",
                "payload": {"entity_id": "ops/secret", "properties": {"k": 2}},
            },
        )
        assert rest_write.status_code == 403
        assert wrote["results"][0]["error"]["code"] == "forbidden"
        assert wrote["results"][0]["error"]["message"] == rest_write.json()["error"]

        # Reading, listing, history and deleting elsewhere: REST's very answers.
        for tool, arguments, method, path in [
            ("get", {"entity_id": "ops/secret"}, "GET", "/api/state/entities/ops%2Fsecret"),
            ("history", {"entity_id": "ops/secret"}, "GET", "/api/events?entity=ops/secret"),
            ("delete", {"entity_id": "ops/secret"}, "DELETE", "/api/state/entities/ops%2Fsecret"),
        ]:
            value, is_error = await agent.call(tool, **arguments)
            expected = await rest.request(method, path)
            assert is_error and expected.status_code == 403, (tool, value)
            assert value["error"]["status"] == 403
            assert value["error"]["message"] == expected.json()["error"], tool
            assert value["error"]["code"] == expected.json()["code"], tool
        listed = await agent.ok("list")
        assert [e["id"] for e in listed["entities"]] == ["crew/a"]
        assert (await agent.ok("list", namespace="ops"))["entities"] == []

        # Waiting on another namespace: the native protocol's refusal.
        refused, is_error = await agent.call(
            "wait_for_change", filter={"namespaces": ["ops"]}, timeout_seconds=0.2
        )
        assert is_error and refused["error"]["code"] == "forbidden"
        await agent.ok("delete", entity_id="crew/a")
        assert (await rest.get("/api/state/entities/ops%2Fsecret")).status_code == 403


async def test_mcp_without_a_token_is_refused_as_rest_refuses(
    public: tuple[str, dict[str, str]],
) -> None:
    base_url, _ = public
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=timeout(10)) as rest,
        http_agent(base_url) as agent,
    ):
        value, is_error = await agent.call("get", entity_id="crew/a")
        expected = await rest.get("/api/state/entities/crew%2Fa")
        assert is_error and value["error"]["status"] == expected.status_code == 401
        assert value["error"]["message"] == expected.json()["error"]
        wrote, is_error = await agent.call(
            "publish", events=[{"entity_id": "crew/a", "properties": {"v": 1}}]
        )
        assert is_error and wrote["results"][0]["error"]["code"] == "unauthorized"


async def test_mcp_presence_with_a_ttl_expires_and_is_seen_deleted(base_url: str) -> None:
    async with http_agent(base_url) as agent, http_agent(base_url) as watcher:
        start = await watcher.ok(
            "wait_for_change", filter={"prefixes": ["crew/agents/"]}, timeout_seconds=0
        )
        beat = {"entity_id": "crew/agents/a", "properties": {"status": "idle"}, "ttl": 0.5}
        done = await agent.ok("publish", events=[beat])
        assert done["results"][0]["ok"]
        seen: list[tuple[str, str | None]] = []
        cursor = start["cursor"]
        with anyio.fail_after(timeout(15)):
            while ("deleted", "expired") not in seen:
                found = await watcher.ok(
                    "wait_for_change",
                    filter={"prefixes": ["crew/agents/"]},
                    cursor=cursor,
                    timeout_seconds=5,
                )
                seen += [(c["kind"], c.get("reason")) for c in found["changes"]]
                cursor = found["cursor"]
        assert seen == [("created", None), ("deleted", "expired")]
        refused, is_error = await agent.call(
            "publish", events=[{"entity_id": "crew/x", "properties": {}, "ttl": -1}]
        )
        assert is_error and "-1 is less than the minimum of 0" in refused["text"]


async def test_mcp_get_list_and_changes_carry_a_leases_deadline(base_url: str) -> None:
    async with http_agent(base_url) as agent:
        start = await agent.ok(
            "wait_for_change", filter={"prefixes": ["crew/agents/"]}, timeout_seconds=0
        )
        beat = {"entity_id": "crew/agents/b", "properties": {"status": "idle"}, "ttl": 30}
        plain = {"entity_id": "crew/agents/c", "properties": {"status": "idle"}}
        assert all(r["ok"] for r in (await agent.ok("publish", events=[beat, plain]))["results"])
        got = await agent.ok("get", entity_id="crew/agents/b")
        deadline = got["expiresAt"]
        assert deadline.endswith("Z")
        assert "expiresAt" not in await agent.ok("get", entity_id="crew/agents/c")
        listed = (await agent.ok("list", prefix="crew/agents/"))["entities"]
        assert [e.get("expiresAt") for e in listed] == [deadline, None]
        assert (await agent.ok("publish", events=[beat]))["results"][0]["ok"]  # a beat
        assert (await agent.ok("publish", events=[{**beat, "ttl": 0}]))["results"][0]["ok"]
        changes: list[dict[str, Any]] = []
        cursor = start["cursor"]
        with anyio.fail_after(timeout(15)):
            while len(changes) < 4:
                found = await agent.ok(
                    "wait_for_change",
                    filter={"prefixes": ["crew/agents/"]},
                    cursor=cursor,
                    timeout_seconds=5,
                )
                changes += found["changes"]
                cursor = found["cursor"]
        created, other, renewed, removed = changes
        assert (created["kind"], created["expiresAt"]) == ("created", deadline)
        assert "expiresAt" not in other
        assert (renewed["kind"], renewed["set"]) == ("updated", {})
        assert renewed["expiresAt"] > deadline
        assert "expiresAt" in removed and removed["expiresAt"] is None


async def test_mcp_list_where_keeps_matching_values(base_url: str) -> None:
    async with http_agent(base_url) as agent:
        await agent.ok(
            "publish",
            events=[
                {"entity_id": f"crew/t{i}", "properties": {"state": s, "p": i}}
                for i, s in enumerate(["open", "done", "open", "open"])
            ],
        )
        page = await agent.ok("list", namespace="crew", where={"state": "open", "p": {"gte": 1}})
        assert [e["id"] for e in page["entities"]] == ["crew/t2", "crew/t3"]
        globbed = await agent.ok("list", glob="crew/t*", where={"state": "done"})
        assert [e["id"] for e in globbed["entities"]] == ["crew/t1"]
        refused, is_error = await agent.call("list", where={"p": {"lt": [1]}})
        assert is_error and refused["error"]["status"] == 400
        assert refused["error"]["message"].startswith("where.p")


async def test_mcp_wait_for_change_with_where_sees_entries_and_lefts(base_url: str) -> None:
    crew = {"namespaces": ["crew"]}
    open_tasks = {"state": "open"}
    async with http_agent(base_url) as agent, http_agent(base_url) as other:
        await other.ok(
            "publish",
            events=[
                {"entity_id": "crew/t1", "properties": {"state": "open", "n": 1}},
                {"entity_id": "crew/t2", "properties": {"state": "done"}},
            ],
        )
        start = await agent.ok("wait_for_change", filter=crew, where=open_tasks, timeout_seconds=0)
        await other.ok(
            "publish",
            events=[
                {"entity_id": "crew/t2", "properties": {"state": "open"}},  # enters
                {"entity_id": "crew/t1", "properties": {"n": 2}},  # a member changes
                {"entity_id": "crew/t1", "properties": {"state": "claimed"}},  # leaves
                {"entity_id": "crew/t3", "properties": {"state": "done"}},  # never matches
            ],
        )
        # From a cursor, a where subscription's catch-up gives each touched entity's
        # outcome: it entered (with its whole state) or left (also one that never
        # matched, crew/t3: a left for an entity one does not hold means nothing).
        seen: list[dict[str, Any]] = []
        cursor = start["cursor"]
        with anyio.fail_after(timeout(20)):
            while len(seen) < 3:
                found = await agent.ok(
                    "wait_for_change",
                    filter=crew,
                    where=open_tasks,
                    cursor=cursor,
                    timeout_seconds=5,
                )
                seen += found["changes"]
                cursor = found["cursor"]
        assert sorted((c["id"], c["kind"], c.get("set")) for c in seen) == [
            ("crew/t1", "left", None),
            ("crew/t2", "entered", {"state": "open"}),
            ("crew/t3", "left", None),
        ]
        # A wait in progress sees each change as it happens.
        async with anyio.create_task_group() as tg:

            async def later() -> None:
                await anyio.sleep(0.3)
                await other.ok("publish", events=[{"entity_id": "crew/t2", "properties": {"n": 5}}])

            tg.start_soon(later)
            live = await agent.ok(
                "wait_for_change", filter=crew, where=open_tasks, cursor=cursor, timeout_seconds=10
            )
        assert [(c["id"], c["kind"], c["set"]) for c in live["changes"]] == [
            ("crew/t2", "updated", {"n": 5})
        ]
        refused, is_error = await agent.call(
            "wait_for_change", filter=crew, where={"n": {"lt": [1]}}, timeout_seconds=0
        )
        assert is_error and refused["error"]["code"] == "bad_frame"
        assert "where.n" in refused["error"]["message"]


async def test_mcp_http_session_end_logs_no_error(
    base_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The client's DELETE ends the session while its event stream is open: the SDK
    # meets a closed stream there, which is the normal end, not an error to log.
    with caplog.at_level(logging.INFO):
        async with http_agent(base_url) as agent:
            await agent.session.subscribe_resource(AnyUrl("flux://entity/crew/x"))
        await anyio.sleep(0.5)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def test_mcp_http_bounds_sessions_and_bodies(hub: Hub, base_url: str) -> None:
    hub.mcp.manager.max_sessions = 2  # the live bound, lowered for the test
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout(10)) as http:
        sessions = []
        for _ in range(2):
            opened = await http.post("/mcp", json=INIT, headers=ACCEPT)
            assert opened.status_code == 200
            sessions.append(opened.headers["mcp-session-id"])
        refused = await http.post("/mcp", json=INIT, headers=ACCEPT)
        assert refused.status_code == 503 and refused.json()["code"] == "unavailable"
        # One ends: room for another.
        await http.delete("/mcp", headers={**ACCEPT, "mcp-session-id": sessions[0]})
        assert (await http.post("/mcp", json=INIT, headers=ACCEPT)).status_code == 200

        big = {**INIT, "params": {**INIT["params"], "pad": "x" * (2 * 1024 * 1024)}}
        too_large = await http.post("/mcp", json=big, headers=ACCEPT)
        assert too_large.status_code == 413 and too_large.json()["code"] == "payload_too_large"
