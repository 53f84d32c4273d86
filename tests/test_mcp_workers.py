"""``/mcp`` under ``flux serve --workers 2``: without sessions, any worker answers.

An MCP session lives in the process that created it, and the kernel spreads a
client's connections over the workers (SO_REUSEPORT): with sessions, a request
reaching the other worker failed with "Session terminated". Under ``--workers`` the
hub serves ``/mcp`` without sessions (``FLUX_MCP_STATELESS``), so every tool works
from any worker; resource subscriptions, which need a session to notify, are refused
with a message that says what to use instead.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import mcp.types as types
import pytest
from mcp.shared.exceptions import McpError
from pydantic import AnyUrl

from .conftest import timeout
from .mcp_agents import http_agent
from .test_workers import Workers

AGENTS = 8


@pytest.mark.slow
async def test_mcp_tools_work_from_any_worker(tmp_path: Path) -> None:
    workers = Workers(tmp_path, 2)
    workers.start()
    try:
        serving = await workers.serving()
        assert len(serving) == 2

        async def agent(n: int) -> None:
            async with http_agent(workers.url) as session:
                init = session.session.get_server_capabilities()
                assert init is not None and init.resources is not None
                assert init.resources.subscribe is False
                for step in range(3):  # several requests: several connections, workers
                    entity = f"crew/task-{n}"
                    published = await session.ok(
                        "publish", events=[{"entity_id": entity, "properties": {"step": step}}]
                    )
                    assert published["results"][0]["version"] == step + 1, published
                    got = await session.ok("get", entity_id=entity)
                    assert got["properties"] == {"step": step}
                with pytest.raises(McpError) as refused:
                    await session.session.subscribe_resource(
                        AnyUrl(f"flux://entity/crew%2Ftask-{n}")
                    )
                assert "wait_for_change" in refused.value.error.message
                assert refused.value.error.code == types.INVALID_REQUEST

        with anyio.fail_after(timeout(120)):
            async with anyio.create_task_group() as tg:
                for n in range(AGENTS):
                    tg.start_soon(agent, n)
    finally:
        workers.stop()
    assert "Traceback" not in workers.log, workers.log
