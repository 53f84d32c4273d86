"""``flux mcp``: the MCP server on stdio, driven by the ``mcp`` SDK's own client, against
a real hub on port 0."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
from pydantic import AnyUrl

from hub.store import Keys, Store

from .conftest import hub_on_own_store, make_settings, running_hub
from .mcp_agents import http_agent, stdio_agent
from .processes import free_port


async def test_mcp_stdio_lists_tools_with_schemas_and_resource_template(base_url: str) -> None:
    async with stdio_agent(base_url) as agent:
        tools = {t.name: t for t in (await agent.session.list_tools()).tools}
        assert set(tools) == {"publish", "get", "list", "history", "delete", "wait_for_change"}
        for tool in tools.values():
            assert "Example" in (tool.description or ""), tool.name
            assert tool.inputSchema["additionalProperties"] is False
        assert tools["get"].annotations and tools["get"].annotations.readOnlyHint
        templates = (await agent.session.list_resource_templates()).resourceTemplates
        assert [t.uriTemplate for t in templates] == ["flux://entity/{id}"]
        capabilities = agent.session.get_server_capabilities()
        assert capabilities and capabilities.resources and capabilities.resources.subscribe


async def test_mcp_stdio_tools_publish_get_list_history_delete(
    base_url: str, http: httpx.AsyncClient
) -> None:
    async with stdio_agent(base_url) as agent:
        published = await agent.ok(
            "publish",
            events=[
                {"entity_id": "crew/task-1", "properties": {"state": "open", "n": 1}},
                {"entity_id": "crew/task-2", "properties": {"state": "open"}},
                {"entity_id": "ops/alarm", "properties": {"on": True}},
            ],
        )
        assert published["published"] == 3 and published["failed"] == 0
        assert [r["version"] for r in published["results"]] == [1, 1, 1]
        assert published["results"][0]["position"]
        # What REST shows is what the tool wrote.
        rest = (await http.get("/api/state/entities/crew%2Ftask-1")).json()
        assert rest["properties"] == {"state": "open", "n": 1}

        entity = await agent.ok("get", entity_id="crew/task-1")
        assert entity == rest
        missing, is_error = await agent.call("get", entity_id="crew/none")
        assert is_error and missing["error"]["status"] == 404
        assert missing["error"]["code"] == "not_found"

        page = await agent.ok("list", namespace="crew", limit=1)
        assert [e["id"] for e in page["entities"]] == ["crew/task-1"]
        page = await agent.ok("list", namespace="crew", limit=1, cursor=page["next_cursor"])
        assert [e["id"] for e in page["entities"]] == ["crew/task-2"]
        assert (await agent.ok("list", prefix="crew/task-2"))["next_cursor"] is None
        globbed = await agent.ok("list", glob="*/task-*")
        assert [e["id"] for e in globbed["entities"]] == ["crew/task-1", "crew/task-2"]
        first = await agent.ok("list", glob="crew/*", limit=1)
        rest_of = await agent.ok("list", glob="crew/*", cursor=first["next_cursor"])
        assert [e["id"] for e in first["entities"] + rest_of["entities"]] == [
            "crew/task-1",
            "crew/task-2",
        ]
        both, is_error = await agent.call("list", prefix="a", namespace="b")
        assert is_error and "at most one of prefix, namespace, glob" in both["error"]["message"]

        await agent.ok("publish", events=[{"entity_id": "crew/task-1", "properties": {"n": 2}}])
        history = await agent.ok("history", entity_id="crew/task-1", limit=5)
        assert [e["payload"]["properties"] for e in history["events"]] == [
            {"n": 2},
            {"state": "open", "n": 1},
        ]
        deleted = await agent.ok("delete", entity_id="crew/task-1")
        assert deleted["entity_id"] == "crew/task-1"
        assert (await http.get("/api/state/entities/crew%2Ftask-1")).status_code == 404


async def test_mcp_stdio_refuses_bad_arguments_naming_the_field(base_url: str) -> None:
    async with stdio_agent(base_url) as agent:
        refused, is_error = await agent.call("publish", events=[{"entity_id": "x"}])
        assert is_error and "'properties' is a required property" in refused["text"]
        refused, is_error = await agent.call("list", limit=1000)
        assert is_error and "1000 is greater than the maximum of 100" in refused["text"]
        refused, is_error = await agent.call("wait_for_change", filter={})
        assert is_error and "filter needs at least one of" in refused["error"]["message"]
        refused, is_error = await agent.call(
            "publish", events=[{"entity_id": "", "properties": {"a": 1}}]
        )
        assert is_error and "'' should be non-empty" in refused["text"]
        # A rule of the hub's: the hub's own namespace is not for clients.
        refused, is_error = await agent.call(
            "publish", events=[{"entity_id": "flux-core/x", "properties": {"a": 1}}]
        )
        assert is_error, refused
        assert refused["results"][0]["error"]["code"] == "forbidden", refused


async def test_two_agents_claim_one_task_with_compare_and_set(
    base_url: str, http: httpx.AsyncClient
) -> None:
    task = {"entity_id": "crew/task-7", "properties": {"state": "open"}}
    async with stdio_agent(base_url) as planner:
        await planner.ok("publish", events=[task])
    results: dict[str, tuple[dict[str, Any], bool]] = {}
    # Both read the open task before either claims it (one agent's process may start
    # seconds before the other's on a busy machine): then exactly one claim may win.
    have_read: list[str] = []
    both_read = anyio.Event()

    async def claim(name: str) -> None:
        async with stdio_agent(base_url) as agent:
            current = await agent.ok("get", entity_id="crew/task-7")
            assert current["properties"] == {"state": "open"}
            have_read.append(name)
            if len(have_read) == 2:
                both_read.set()
            await both_read.wait()
            claim = {
                "entity_id": "crew/task-7",
                "properties": {"state": "claimed", "owner": name},
                "if_version": current["version"],
                "source": name,
            }
            results[name] = await agent.call("publish", events=[claim])

    async with anyio.create_task_group() as tg:
        tg.start_soon(claim, "agent-a")
        tg.start_soon(claim, "agent-b")
    winners = [name for name, (_, is_error) in results.items() if not is_error]
    assert len(winners) == 1, results
    (winner,) = winners
    (loser,) = set(results) - {winner}
    won, _ = results[winner]
    assert won["results"][0]["version"] == 2
    lost, _ = results[loser]
    refusal: dict[str, Any] = lost["results"][0]
    assert refusal["error"]["code"] == "conflict"
    assert refusal["version"] == 2
    # The loser sees who won.
    assert refusal["current"]["properties"] == {"state": "claimed", "owner": winner}
    entity = (await http.get("/api/state/entities/crew%2Ftask-7")).json()
    assert entity["properties"]["owner"] == winner and entity["version"] == 2


async def test_wait_for_change_times_out_empty_then_returns_each_change_once(
    base_url: str,
) -> None:
    crew = {"prefixes": ["crew/"]}
    async with stdio_agent(base_url) as agent, stdio_agent(base_url) as other:
        started = anyio.current_time()
        empty = await agent.ok("wait_for_change", filter=crew, timeout_seconds=0.5)
        waited = anyio.current_time() - started
        assert empty["changes"] == [] and empty["timed_out"] is True
        assert 0.5 <= waited < 5, waited
        cursor = empty["cursor"]
        assert cursor

        # Changes made between calls are not missed: they come from the cursor.
        await other.ok(
            "publish",
            events=[
                {"entity_id": "crew/a", "properties": {"v": 1}},
                {"entity_id": "elsewhere/b", "properties": {"v": 1}},
                {"entity_id": "crew/a", "properties": {"v": 2}},
            ],
        )
        found = await agent.ok("wait_for_change", filter=crew, cursor=cursor, timeout_seconds=5)
        assert found["timed_out"] is False
        assert [(c["id"], c["kind"], c["set"], c["version"]) for c in found["changes"]] == [
            ("crew/a", "created", {"v": 1}, 1),
            ("crew/a", "updated", {"v": 2}, 2),
        ]
        # Passed back, the cursor gives nothing twice.
        again = await agent.ok(
            "wait_for_change", filter=crew, cursor=found["cursor"], timeout_seconds=0.3
        )
        assert again["changes"] == [] and again["timed_out"] is True

        # A wait in progress returns when a change comes, long before its timeout.
        async def later() -> None:
            await anyio.sleep(0.5)
            await other.ok("delete", entity_id="crew/a")

        async with anyio.create_task_group() as tg:
            tg.start_soon(later)
            started = anyio.current_time()
            live = await agent.ok(
                "wait_for_change", filter=crew, cursor=again["cursor"], timeout_seconds=30
            )
            assert anyio.current_time() - started < 10
        assert [(c["id"], c["kind"]) for c in live["changes"]] == [("crew/a", "deleted")]

        # At most max_changes at a time; the cursor goes on from the last one returned.
        await other.ok(
            "publish",
            events=[{"entity_id": f"crew/n{i}", "properties": {"i": i}} for i in range(5)],
        )
        ids: list[str] = []
        cursor = live["cursor"]
        while len(ids) < 5:
            page = await agent.ok(
                "wait_for_change", filter=crew, cursor=cursor, max_changes=2, timeout_seconds=5
            )
            assert 1 <= len(page["changes"]) <= 2
            ids += [c["id"] for c in page["changes"]]
            cursor = page["cursor"]
        assert ids == [f"crew/n{i}" for i in range(5)]


async def test_wait_for_change_with_a_malformed_cursor_is_refused(base_url: str) -> None:
    async with stdio_agent(base_url) as agent:
        refused, is_error = await agent.call(
            "wait_for_change", filter={"all": True}, cursor="not a cursor"
        )
        assert is_error and refused["error"]["code"] == "bad_cursor"


async def test_wait_for_change_with_a_cursor_older_than_the_log_says_reset(
    redis_url: str, key_prefix: str
) -> None:
    settings = make_settings(key_prefix, log={"delta_log_maxlen": 1000})
    async with (
        hub_on_own_store(redis_url, settings) as hub,
        http_agent(f"http://127.0.0.1:{hub.port}") as agent,
    ):
        crew = {"prefixes": ["crew/"]}
        stale = (await agent.ok("wait_for_change", filter=crew, timeout_seconds=0))["cursor"]
        for n in range(30):
            events = [{"entity_id": f"crew/{n}-{i}", "properties": {"i": i}} for i in range(100)]
            await agent.ok("publish", events=events)
        started = anyio.current_time()
        found = await agent.ok("wait_for_change", filter=crew, cursor=stale, timeout_seconds=30)
        assert anyio.current_time() - started < 10  # at once, not at the timeout
        assert found["reset"] is True and "no longer reaches back" in found["reason"]
        assert found["changes"] == [] and found["timed_out"] is False
        assert found["cursor"] != stale
        # From the new cursor, waits go on as before.
        again = await agent.ok(
            "wait_for_change", filter=crew, cursor=found["cursor"], timeout_seconds=0.2
        )
        assert again["changes"] == [] and again["timed_out"] is True


async def test_resource_read_and_subscription_notify_on_change(base_url: str) -> None:
    uri = AnyUrl("flux://entity/crew/task-9")
    async with stdio_agent(base_url) as agent, stdio_agent(base_url) as other:
        await other.ok("publish", events=[{"entity_id": "crew/task-9", "properties": {"a": 1}}])
        read = await agent.session.read_resource(uri)
        (content,) = read.contents
        assert content.mimeType == "application/json"
        listed = await agent.session.list_resources()
        assert "flux://entity/crew/task-9" in [str(r.uri) for r in listed.resources]

        await agent.session.subscribe_resource(uri)
        await agent.session.subscribe_resource(AnyUrl("flux://entity/crew/not-yet"))
        await other.ok("publish", events=[{"entity_id": "crew/task-9", "properties": {"a": 2}}])
        await agent.wait_update(1)
        assert agent.updates == ["flux://entity/crew/task-9"]
        await other.ok("publish", events=[{"entity_id": "crew/not-yet", "properties": {"b": 1}}])
        await agent.wait_update(2)
        assert agent.updates[1] == "flux://entity/crew/not-yet"

        await agent.session.unsubscribe_resource(uri)
        await other.ok("delete", entity_id="crew/task-9")
        await other.ok("delete", entity_id="crew/not-yet")
        await agent.wait_update(3)
        assert agent.updates[2:] == ["flux://entity/crew/not-yet"]


async def test_mcp_stdio_without_a_hub_answers_each_call_with_unavailable() -> None:
    async with stdio_agent("http://127.0.0.1:9") as agent:
        value, is_error = await agent.call("get", entity_id="crew/a")
        assert is_error and value["error"]["code"] == "unavailable"
        assert "cannot reach the hub" in value["error"]["message"]
        value, is_error = await agent.call(
            "publish", events=[{"entity_id": "crew/a", "properties": {"v": 1}}]
        )
        assert is_error and value["error"]["code"] == "unavailable"


async def test_resource_subscription_resumes_after_the_hub_restarts(
    redis_url: str, key_prefix: str
) -> None:
    # A change made while the agent's hub was away is notified once it is back: the
    # watcher reconnects and resumes each subscription from its cursor.
    port = free_port()
    settings = make_settings(key_prefix, gateway={"port": port})
    base_url = f"http://127.0.0.1:{port}"
    uri = AnyUrl("flux://entity/crew/watched")
    async with await Store.connect(redis_url, Keys(key_prefix), settings.log) as store:
        async with stdio_agent(base_url) as agent:
            async with running_hub(settings, store):
                await agent.ok(
                    "publish", events=[{"entity_id": "crew/watched", "properties": {"v": 1}}]
                )
                await agent.session.subscribe_resource(uri)
                await agent.ok(
                    "publish", events=[{"entity_id": "crew/watched", "properties": {"v": 2}}]
                )
                await agent.wait_update(1)
            # While the agent's hub is down, another hub on the same Redis takes a change.
            other = make_settings(key_prefix)
            async with running_hub(other, store) as hub:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}") as http:
                    event = {
                        "stream": "s",
                        "source": "t",
                        "payload": {"entity_id": "crew/watched", "properties": {"v": 3}},
                    }
                    assert (await http.post("/api/events", json=event)).status_code == 200
            assert agent.updates == ["flux://entity/crew/watched"]
            async with running_hub(settings, store):
                await agent.wait_update(2)
                assert agent.updates == ["flux://entity/crew/watched"] * 2
                read = await agent.session.read_resource(uri)
                assert '"v": 3' in read.contents[0].text  # type: ignore[union-attr]
