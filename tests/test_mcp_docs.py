"""The examples of docs/mcp.md, run as a user would: the two client configurations
(each used by the ``mcp`` SDK's client exactly as written, ``localhost:3000`` being the
test hub) and claim.py, two agents racing for tasks."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

import anyio
import httpx
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from .conftest import timeout
from .doc_blocks import doc_blocks

DOC = "docs/mcp.md"


def _block(first_line: str) -> str:
    (found,) = [b.text for b in doc_blocks() if b.path == DOC and first_line in b.text]
    return found


def _addressed(text: str, base_url: str) -> str:
    return text.replace("http://localhost:3000", base_url)


async def _publish_and_read(session: ClientSession) -> None:
    with anyio.fail_after(timeout(30)):
        await session.initialize()
        result = await session.call_tool(
            "publish", {"events": [{"entity_id": "docs/x", "properties": {"ok": True}}]}
        )
        assert not result.isError, result
        read = await session.call_tool("get", {"entity_id": "docs/x"})
        assert read.structuredContent is not None
        assert read.structuredContent["properties"] == {"ok": True}


async def test_stdio_configuration_starts_flux_mcp(base_url: str) -> None:
    config = json.loads(_addressed(_block('"command": "flux"'), base_url))
    server = config["mcpServers"]["flux"]
    # The client finds `flux` on its PATH: the project's, here.
    command = shutil.which(server["command"], path=str(Path(sys.executable).parent))
    assert command is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUX_")}
    params = StdioServerParameters(
        command=command, args=server["args"], env={**env, **server["env"]}
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await _publish_and_read(session)


async def test_http_configuration_reaches_the_hubs_endpoint(base_url: str) -> None:
    config = json.loads(_addressed(_block('"type": "http"'), base_url))
    server = config["mcpServers"]["flux"]
    assert server["url"] == f"{base_url}/mcp"
    # Internal mode: the placeholder token is sent and ignored, as the hub does.
    async with (
        httpx.AsyncClient(headers=server["headers"], timeout=timeout(30)) as http,
        streamable_http_client(server["url"], http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await _publish_and_read(session)


async def test_claim_py_two_agents_each_claim_one_task(
    base_url: str, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    script = tmp_path / "claim.py"
    script.write_text(_addressed(_block("# claim.py NAME"), base_url), encoding="utf-8")
    agents = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            name,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for name in ("agent-a", "agent-b")
    ]
    try:
        await asyncio.sleep(1)  # they wait (or are still starting): either way works
        for task in ("crew/task-1", "crew/task-2"):
            event = {
                "stream": "crew",
                "source": "planner",
                "payload": {"entity_id": task, "properties": {"state": "open"}},
            }
            assert (await http.post("/api/events", json=event)).status_code == 200
        outputs = []
        for agent in agents:
            out, err = await asyncio.wait_for(agent.communicate(), timeout(60))
            assert agent.returncode == 0, err.decode()
            outputs.append(out.decode())
    finally:
        for agent in agents:
            if agent.returncode is None:
                agent.kill()
                await agent.wait()
    claims = {}
    for output in outputs:
        lines = output.splitlines()
        assert lines and " claimed " in lines[-1], output
        name, _, task = lines[-1].split(" ")
        claims[task] = name
        for line in lines[:-1]:  # a loss names the winner
            assert " lost " in line and line.split(" ")[-1] in ("agent-a", "agent-b"), output
    assert sorted(claims) == ["crew/task-1", "crew/task-2"]
    for task, name in claims.items():
        entity = (await http.get(f"/api/state/entities/{task.replace('/', '%2F')}")).json()
        assert entity["properties"] == {"state": "claimed", "owner": name}
