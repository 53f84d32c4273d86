"""Presence (docs/presence.md): heartbeats in the SDK (async and blocking), the CLI
(``flux heartbeat``, ``flux publish --ttl``), and every example of docs/presence.md run
as a user pastes it, against a real hub."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Any

import httpx
import pytest

from flux_client import FluxClient, Heartbeat, PublishError, SyncFluxClient
from hub.app import Hub
from hub.cli import main
from hub.config import Settings
from hub.core import format_ms
from hub.store.expiry import LeaseTable

from .conftest import make_settings, timeout
from .doc_blocks import addressed, doc_blocks, like
from .processes import process_group, tools_env

DOC = "docs/presence.md"
SWEEP = 0.05


@pytest.fixture
def settings(key_prefix: str) -> Settings:
    return make_settings(key_prefix, leases={"sweep_interval": SWEEP})


def _block(first_line: str) -> str:
    (block,) = [b for b in doc_blocks() if b.path == DOC and b.first_line.startswith(first_line)]
    return block.text


def _block_with(text: str) -> str:
    (block,) = [b for b in doc_blocks() if b.path == DOC and text in b.text]
    return block.text


def _env(base_url: str) -> dict[str, str]:
    return tools_env(FLUX_URL=base_url)


async def _exists(http: httpx.AsyncClient, entity: str) -> dict[str, Any] | None:
    reply = await http.get("/api/state/entities/" + entity.replace("/", "%2F"))
    return reply.json() if reply.status_code == 200 else None


async def _until(condition: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + timeout(within)
    while not await condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.02)


async def _lease_left(hub: Hub, entity: str) -> float:
    """Seconds left on an entity's lease (by the test's clock, close to Redis's)."""
    deadline = await LeaseTable(hub.store).deadline(entity)
    assert deadline is not None, f"{entity} has no lease"
    return deadline / 1000 - time.time()


# ---------------------------------------------------------------------- the SDK


async def test_sdk_heartbeat_keeps_an_entity_past_its_ttl_then_deletes_it(
    hub: Hub, base_url: str, http: httpx.AsyncClient
) -> None:
    async with (
        FluxClient(base_url, encoding="json") as flux,
        await flux.subscribe(prefixes=["crew/"], snapshot=False) as updates,
    ):
        async with flux.heartbeat("crew/agent-1", {"status": "online"}, ttl=0.3) as beat:
            assert isinstance(beat, Heartbeat) and beat.every == pytest.approx(0.1)
            await asyncio.sleep(0.9)  # three ttls
            assert await _exists(http, "crew/agent-1") is not None
            assert beat.beats >= 5
        assert await _exists(http, "crew/agent-1") is None
        seen = []
        async for update in updates:
            seen.append(update)
            if update.kind == "deleted":
                break
    # Created once; the beats changed nothing but the deadline, each later than the
    # last; the end was a departure, not a death.
    created, *beats, end = seen
    assert (created.kind, created.created, created.changes) == ("delta", True, {"status": "online"})
    assert len(beats) >= 4
    assert all((b.kind, b.changes, b.lease_news) == ("delta", {}, True) for b in beats)
    deadlines = [u.expires_at or "" for u in (created, *beats)]
    assert deadlines == sorted(deadlines) and len(set(deadlines)) == len(deadlines)
    assert (end.kind, end.reason) == ("deleted", "")


async def test_sdk_request_cancelled_as_its_reply_comes_is_cancelled(
    hub: Hub, base_url: str
) -> None:
    """A heartbeat is stopped by cancelling its task, often while a beat's publish is
    being answered. The reply and the cancellation in one turn of the loop: the caller
    must see the cancellation (on Python 3.11, asyncio.wait_for returned the reply and
    dropped it: the stopped heartbeat beat on, and its stop() never returned)."""
    async with FluxClient(base_url) as flux:
        task = asyncio.create_task(flux.publish("crew/agent-c", {"n": 1}, ttl=5))
        await asyncio.sleep(0)  # it runs up to the wait for its reply
        (pending,) = flux._pending.values()
        ack = {"type": "ack", "results": [{"eventId": "e", "status": "ok", "version": 1}]}
        pending.future.set_result(ack)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_sdk_heartbeat_left_to_expire_reports_the_reason(
    hub: Hub, base_url: str, http: httpx.AsyncClient
) -> None:
    async with FluxClient(base_url) as flux:
        updates = await flux.subscribe(ids=["crew/agent-2"], snapshot=False)
        beat = flux.heartbeat("crew/agent-2", {"n": 1}, ttl=0.3, delete_on_exit=False)
        async with beat:
            await beat.update({"status": "busy"})
        assert (await _exists(http, "crew/agent-2"))["properties"] == {"n": 1, "status": "busy"}  # type: ignore[index]
        seen = [await updates.__anext__() for _ in range(3)]
        assert [(u.kind, u.reason) for u in seen] == [
            ("delta", ""),
            ("delta", ""),
            ("deleted", "expired"),
        ]
        await updates.close()


async def test_sdk_heartbeat_refuses_bad_timing_and_raises_the_hubs_refusal(
    hub: Hub, base_url: str
) -> None:
    async with FluxClient(base_url) as flux:
        with pytest.raises(ValueError, match="ttl must be more than 0"):
            flux.heartbeat("crew/a", {"on": True}, ttl=0)
        with pytest.raises(ValueError, match="every must be more than 0 and less than ttl"):
            flux.heartbeat("crew/a", {"on": True}, ttl=3, every=3)
        with pytest.raises(ValueError, match="at least one property"):
            flux.heartbeat("crew/a", {}, ttl=3)
        with pytest.raises(PublishError, match="reserved for the hub|flux-core"):
            async with flux.heartbeat("flux-core/me", {"x": 1}, ttl=5):
                pass  # pragma: no cover - never entered


async def test_sdk_publish_with_ttl_and_zero_removes_it(hub: Hub, base_url: str) -> None:
    async with FluxClient(base_url) as flux:
        await flux.publish("crew/agent-3", {"x": 1}, ttl=30)
        assert 25 < await _lease_left(hub, "crew/agent-3") <= 30
        await flux.publish("crew/agent-3", {"x": 1}, ttl=0)
        assert await LeaseTable(hub.store).deadline("crew/agent-3") is None


async def test_sync_heartbeat_beats_on_the_clients_thread(hub: Hub, base_url: str) -> None:
    def script() -> tuple[int, object, dict[str, Any]]:
        with SyncFluxClient(base_url) as flux:
            with flux.heartbeat("crew/agent-4", {"status": "online"}, ttl=0.3) as beat:
                time.sleep(0.7)
                beats = beat.beats
                beat.update({"status": "busy"})
                status = flux.get("crew/agent-4")["crew/agent-4"].properties["status"]
            return beats, status, flux.get("crew/agent-4")

    beats, status, after = await asyncio.to_thread(script)
    assert beats >= 4 and status == "busy" and after == {}


# ---------------------------------------------------------------------- the CLI


async def test_cli_publish_ttl_sets_a_lease_and_a_bad_one_is_refused(
    hub: Hub, base_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--url", base_url, "publish", "s", "cli", "crew/agent-5", '{"x": 1}']
    assert await asyncio.to_thread(main, [*args, "--ttl", "20"]) == 0
    assert 15 < await _lease_left(hub, "crew/agent-5") <= 20
    assert await asyncio.to_thread(main, [*args, "--ttl", "-1"]) == 1
    assert "ttl must be a number of seconds from 0 to 2592000" in capsys.readouterr().err


async def test_cli_heartbeat_counts_beats_and_keeps_or_deletes(
    hub: Hub, base_url: str, http: httpx.AsyncClient
) -> None:
    beat = ["flux", "--json", "heartbeat", "crew/agent-6", '{"s": 1}', "--ttl", "0.6"]

    async def flux(*args: str) -> tuple[int, str, str]:
        async with process_group(*beat, *args, env=_env(base_url)) as process:
            out, err = await asyncio.wait_for(process.communicate(), timeout(30))
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    status, out, _ = await flux("--every", "0.1", "--count", "3")
    assert status == 0
    assert [json.loads(line)["beat"] for line in out.splitlines()] == [1, 2, 3]
    assert await _exists(http, "crew/agent-6") is None  # deleted at the end
    assert (await flux("--count", "1", "--keep", "--ttl", "3"))[0] == 0  # the last --ttl
    assert await _exists(http, "crew/agent-6") is not None
    await _until(lambda: _gone(http, "crew/agent-6"))  # left to expire
    status, _, err = await flux("--every", "1")
    assert status == 2
    assert "--every must be more than 0 and less than --ttl" in err
    beat[4] = "{}"
    status, _, err = await flux()
    assert status == 2
    assert "PROPERTIES_JSON must be a JSON object with at least one property" in err


async def _gone(http: httpx.AsyncClient, entity: str) -> bool:
    return await _exists(http, entity) is None


# ---------------------------------------------------------------------- docs/presence.md


async def test_presence_doc_curl_beat(hub: Hub, base_url: str) -> None:
    script = addressed(_block("curl -s localhost:3000/api/events"), base_url)
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", script, env=_env(base_url), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0 and '"eventId"' in out.decode()
    assert 8 < await _lease_left(hub, "crew/agent-7") <= 10


async def test_presence_doc_curl_read_shows_when_the_lease_ends(
    hub: Hub, base_url: str, http: httpx.AsyncClient
) -> None:
    block = _block("curl -s localhost:3000/api/state/entities/crew%2Fagent-7")
    command, shown = block.splitlines()
    beat = addressed(_block("curl -s localhost:3000/api/events"), base_url)
    for script in (beat, addressed(command, base_url)):
        process = await asyncio.create_subprocess_exec(
            "bash", "-c", script, env=_env(base_url), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate()
        assert process.returncode == 0
    printed = out.decode().strip()
    assert like(shown.removeprefix("# "), printed), printed
    deadline = await LeaseTable(hub.store).deadline("crew/agent-7")
    assert deadline is not None and json.loads(printed)["expiresAt"] == format_ms(deadline)


async def test_presence_doc_flux_commands(hub: Hub, base_url: str, http: httpx.AsyncClient) -> None:
    publish, heartbeat = (
        line.split("  #")[0].strip() for line in _block("flux publish presence").splitlines()
    )
    async with process_group("bash", "-c", publish, env=_env(base_url)) as process:
        assert await process.wait() == 0
    assert 8 < await _lease_left(hub, "crew/agent-7") <= 10
    assert (await http.delete("/api/state/entities/crew%2Fagent-7")).status_code == 200
    async with process_group("bash", "-c", f"exec {heartbeat}", env=_env(base_url)) as process:
        await _until(lambda: _alive(http, "crew/agent-7"))
        assert 8 < await _lease_left(hub, "crew/agent-7") <= 10
        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert await asyncio.wait_for(process.wait(), timeout(10)) == 0
    assert await _exists(http, "crew/agent-7") is None


async def _alive(http: httpx.AsyncClient, entity: str) -> bool:
    return await _exists(http, entity) is not None


async def test_presence_doc_async_agent(hub: Hub, base_url: str, http: httpx.AsyncClient) -> None:
    code = addressed(_block_with("await beat.update("), base_url)
    async with process_group(sys.executable, "-c", code, env=_env(base_url)) as agent:
        await _until(lambda: _alive(http, "crew/agent-7"))
        assert 8 < await _lease_left(hub, "crew/agent-7") <= 10
        await _until(lambda: _busy(http, "crew/agent-7"))
        assert await asyncio.wait_for(agent.wait(), timeout(20)) == 0
    assert await _exists(http, "crew/agent-7") is None


async def _busy(http: httpx.AsyncClient, entity: str) -> bool:
    found = await _exists(http, entity)
    return found is not None and found["properties"]["status"] == "busy"


async def test_presence_doc_sync_agent(hub: Hub, base_url: str, http: httpx.AsyncClient) -> None:
    code = addressed(_block_with("SyncFluxClient("), base_url)
    async with process_group(sys.executable, "-c", code, env=_env(base_url)) as agent:
        assert await asyncio.wait_for(agent.wait(), timeout(20)) == 0
    history = (await http.get("/api/events", params={"entity": "crew/agent-8"})).json()
    assert [e["payload"]["properties"] for e in history] == [
        {"__deleted__": True},  # the SDK's deletion
        {"status": "busy"},
        {"status": "online"},
    ]


async def _subscribed(hub: Hub) -> bool:
    return hub.gateway.statistics().native_subscriptions > 0


async def test_presence_doc_observer_tells_departure_from_death(
    hub: Hub, base_url: str, http: httpx.AsyncClient
) -> None:
    observer = _block_with("present: set[str]")
    async with process_group(
        sys.executable, "-c", addressed(observer, base_url), env=_env(base_url)
    ) as process:
        assert process.stdout is not None
        await _until(lambda: _subscribed(hub))  # the observer's subscription is live
        for n, ttl in ((1, 60), (2, 0.2)):
            event = {
                "stream": "presence",
                "source": "test",
                "ttl": ttl,
                "payload": {"entity_id": f"crew/agent-{n}", "properties": {"on": True}},
            }
            assert (await http.post("/api/events", json=event)).status_code == 200
        died = await asyncio.wait_for(process.stdout.readline(), timeout(10))
        assert died.decode() == "crew/agent-2 timed out - present: ['crew/agent-1']\n"
        assert (await http.delete("/api/state/entities/crew%2Fagent-1")).status_code == 200
        left = await asyncio.wait_for(process.stdout.readline(), timeout(10))
        assert left.decode() == "crew/agent-1 left - present: []\n"


async def test_flux_watch_piped_says_why_an_entity_went(
    hub: Hub, base_url: str, http: httpx.AsyncClient
) -> None:
    async with process_group("flux", "watch", "crew/", env=_env(base_url)) as watch:
        assert watch.stdout is not None
        async with asyncio.timeout(timeout(20)):  # subscribed: its snapshot is read
            while json.loads(await watch.stdout.readline())["kind"] != "synced":
                pass
        event = {
            "stream": "presence",
            "source": "test",
            "ttl": 0.2,
            "payload": {"entity_id": "crew/agent-9", "properties": {"on": True}},
        }
        assert (await http.post("/api/events", json=event)).status_code == 200
        async with asyncio.timeout(timeout(10)):
            while True:
                line = json.loads(await watch.stdout.readline())
                if line["kind"] == "deleted":
                    break
    assert line == {"kind": "deleted", "id": "crew/agent-9", "version": 2, "reason": "expired"}
