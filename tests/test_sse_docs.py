"""docs/sse.md's examples, run as a user runs them: the curl commands (real curl), and
the page with ``EventSource`` in a real headless Chromium (tests/browser.py).

The page is checked beyond what it shows: every event it received is applied to a
checking replica (tests/native_client.py ``Replica``: a gap or a duplicate fails), after
the hub closes the stream (the browser reconnects with ``Last-Event-ID``) and after the
hub restarts, with changes made while the page was away.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.app import Hub
from hub.store import Store

from .browser import DevTools
from .conftest import make_settings, running_hub, timeout
from .doc_blocks import addressed, like
from .native_client import Replica, event, rest_state
from .test_docs_examples import _background, _block, _line_with, _shell_env

SSE_MD = "docs/sse.md"
CURL = shutil.which("curl")

pytestmark = pytest.mark.skipif(CURL is None, reason="no curl")


async def publish(base_url: str, *events: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout(10)) as http:
        reply = await http.post("/api/events/batch", json={"events": list(events)})
        assert reply.status_code == 200, reply.text


async def _until_blank(process: asyncio.subprocess.Process, lines: list[str]) -> None:
    """Read lines up to the blank one that ends an event."""
    assert process.stdout is not None
    async with asyncio.timeout(timeout(10)):
        while True:
            line = (await process.stdout.readline()).decode().rstrip("\n")
            lines.append(line)
            if not line:
                return


async def test_the_curl_examples(base_url: str) -> None:
    """The first command prints what the page shows (a claim made while it runs);
    the resume command with that delta's id goes on with the next change only."""
    await publish(base_url, event("crew/task-7", state="open"))
    env = _shell_env(base_url)
    command = addressed(_block(SSE_MD, "curl -N 'localhost:3000/api/stream"), base_url)
    shown = _block(SSE_MD, "retry: 2000")
    async with _background(command, env) as curl:
        lines = await _line_with(curl, "event: synced", 10)
        await _until_blank(curl, lines)
        await publish(base_url, event("crew/task-7", owner="w3"))
        lines += await _line_with(curl, '"type":"delta"', 10)
        await _until_blank(curl, lines)
    printed = "\n".join(lines) + "\n"
    assert like(shown, printed), printed
    last_id = next(line for line in reversed(lines) if line.startswith("id: "))[4:]

    await publish(base_url, event("crew/task-7", state="done"))
    resume = addressed(_block(SSE_MD, 'curl -N -H "Last-Event-ID: $LAST_ID"'), base_url)
    async with _background(resume, {**env, "LAST_ID": last_id}) as curl:
        lines = await _line_with(curl, "event: synced", 10)
    text = "\n".join(lines)
    assert "event: snapshot" not in text
    [delta] = [json.loads(line[6:]) for line in lines if line.startswith('data: {"sub"')]
    assert (delta["base"], delta["version"], delta["set"]) == (2, 3, {"state": "done"})


async def _events(tools: DevTools) -> list[dict[str, Any]]:
    text = await tools.evaluate("JSON.stringify(window.seen ?? [])")
    found: list[dict[str, Any]] = json.loads(text)
    return found


async def _until(tools: DevTools, predicate: Any, what: str, wait: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout(wait)
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: page saw {await _events(tools)}; {tools.page_errors()}")
        await asyncio.sleep(0.05)


async def _page_matches_rest(tools: DevTools, base_url: str) -> None:
    want = {k: props for k, (_, props) in (await rest_state(base_url, "crew/")).items()}

    async def same() -> bool:
        # (Polled from the first moment: the page may not be loaded yet.)
        text = await tools.evaluate("document.getElementById('view')?.textContent ?? ''")
        return bool(text) and json.loads(text) == want

    await _until(tools, same, f"the page shows {want}")


async def _sessions(hub: Hub, count: int) -> None:
    async with asyncio.timeout(timeout(15)):
        while len(hub.streams.sessions) != count:  # noqa: ASYNC110 - the hub's own state
            await asyncio.sleep(0.02)


@pytest.mark.timeout(120)
async def test_the_page_with_event_source(
    devtools: DevTools, store: Store, key_prefix: str, tmp_path: Path
) -> None:
    """docs/sse.md's page, opened as a file: it shows the crew's tasks; when the hub
    closes the stream the browser reconnects with Last-Event-ID and misses nothing;
    likewise across a hub restart."""
    fast = {"fanout": {"sse_retry_ms": 300}}
    async with running_hub(make_settings(key_prefix, **fast), store) as hub:
        port = hub.port
        base_url = f"http://127.0.0.1:{port}"
        await publish(base_url, event("crew/task-1", state="open"), event("other/x", v=1))
        page = tmp_path / "crew.html"
        # The page as written, and a recorder of every event it gets (for the replica).
        recorder = (
            "<script>window.seen = [];"
            " for (const name of ['subscribed', 'snapshot', 'synced', 'delta', 'deleted',"
            " 'left', 'checkpoint', 'reset', 'close'])"
            " source.addEventListener(name, (e) => window.seen.push("
            "{event: name, lastEventId: e.lastEventId, data: JSON.parse(e.data)}));</script>"
        )
        page.write_text(addressed(_block(SSE_MD, "<!doctype html>"), base_url) + recorder)
        await devtools.send("Page.navigate", {"url": page.as_uri()})
        await _page_matches_rest(devtools, base_url)
        await publish(
            base_url, event("crew/task-1", owner="w3"), event("crew/task-2", state="open")
        )
        await _page_matches_rest(devtools, base_url)

        # The hub closes the stream; changes happen before the browser is back.
        [session] = hub.streams.sessions
        assert session.body is not None
        session.body.stop("closed by the test")
        await _sessions(hub, 0)
        await publish(base_url, event("crew/task-2", owner="w4"), event("crew/task-3", state="new"))
        async with httpx.AsyncClient(base_url=base_url) as http:
            await http.delete("/api/state/entities/crew/task-1")
        await _sessions(hub, 1)
        [resumed] = hub.streams.sessions
        seen = await _events(devtools)
        closed = [e for e in seen if e["event"] == "close"]
        assert closed[0]["data"]["reason"] == "closed by the test"
        # The browser sent the last id it had: the stream resumes rather than restarts.
        assert resumed.frame.from_ == closed[0]["lastEventId"] != ""
        await _page_matches_rest(devtools, base_url)
        last = (await _events(devtools))[-1]["lastEventId"]

    # The hub is gone; a change made meanwhile through another hub of the same Redis.
    async with running_hub(make_settings(key_prefix), store) as other:
        await publish(f"http://127.0.0.1:{other.port}", event("crew/task-3", state="open"))
    restarted = make_settings(key_prefix, gateway={"port": port}, **fast)
    async with running_hub(restarted, store) as hub:
        await _sessions(hub, 1)
        [resumed] = hub.streams.sessions
        assert resumed.frame.from_ == last
        await _page_matches_rest(devtools, base_url)
        await publish(base_url, event("crew/task-3", owner="w5"))
        await _page_matches_rest(devtools, base_url)

    # Every event, applied in order, without a gap or a duplicate.
    seen = await _events(devtools)
    replica = Replica()
    for found in seen:
        replica.apply(found["data"])
    names = [e["event"] for e in seen]
    assert names.count("snapshot") == 2  # one page and done: once, never again
    assert names.count("reset") == 0
    # The test's close, then each hub's shutdown.
    assert [e["data"]["code"] for e in seen if e["event"] == "close"] == [
        "closed",
        "shutting_down",
        "shutting_down",
    ]
    async with running_hub(make_settings(key_prefix), store) as check:
        want = await rest_state(f"http://127.0.0.1:{check.port}", "crew/")
    assert replica.state() == want
    assert devtools.page_errors() == []
