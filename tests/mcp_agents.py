"""MCP clients for the tests: the ``mcp`` SDK's own client over stdio (``flux mcp``
spawned against a real hub) and over streamable HTTP (the hub's ``/mcp``)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import mcp.types as types
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.session import RequestResponder

from .conftest import timeout

#: What an MCP client over streamable HTTP accepts (the hub may answer with SSE).
MCP_ACCEPT = {"Accept": "application/json, text/event-stream"}


def mcp_initialize(client: str) -> dict[str, Any]:
    """The JSON-RPC ``initialize`` request a client named ``client`` opens with."""
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": client, "version": "1"},
        },
    }


class Agent:
    """An MCP client session, plus what it was notified of."""

    def __init__(
        self, session: ClientSession, updates: list[str], signal: list[anyio.Event]
    ) -> None:
        self.session = session
        #: URIs of ``notifications/resources/updated`` received, in order.
        self.updates = updates
        #: One event, set (and replaced by the waiter) at each notification.
        self._signal = signal

    async def call(self, tool: str, **arguments: Any) -> tuple[dict[str, Any], bool]:
        """Call a tool: ``(structured result, is_error)``; checks the text matches."""
        with anyio.fail_after(timeout(90)):
            result = await self.session.call_tool(tool, arguments)
        assert result.content and isinstance(result.content[0], types.TextContent)
        text = result.content[0].text
        if result.structuredContent is None:  # the SDK's own refusals: text only
            return {"text": text}, result.isError
        assert json.loads(text) == result.structuredContent
        return result.structuredContent, result.isError

    async def ok(self, tool: str, **arguments: Any) -> dict[str, Any]:
        value, is_error = await self.call(tool, **arguments)
        assert not is_error, value
        return value

    async def wait_update(self, count: int) -> None:
        """Until at least ``count`` updates were notified."""
        with anyio.fail_after(timeout(10)):
            while len(self.updates) < count:
                await self._signal[0].wait()
                self._signal[0] = anyio.Event()


@asynccontextmanager
async def _agent(read: Any, write: Any) -> AsyncIterator[Agent]:
    updates: list[str] = []
    holder = [anyio.Event()]

    async def on_message(
        message: RequestResponder[types.ServerRequest, types.ClientResult]
        | types.ServerNotification
        | Exception,
    ) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ResourceUpdatedNotification
        ):
            updates.append(str(message.root.params.uri))
            holder[0].set()

    async with ClientSession(read, write, message_handler=on_message) as session:
        with anyio.fail_after(timeout(20)):
            await session.initialize()
        yield Agent(session, updates, holder)


@asynccontextmanager
async def stdio_agent(base_url: str, token: str | None = None) -> AsyncIterator[Agent]:
    """``flux mcp`` as an agent's MCP client spawns it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUX_")}
    env["FLUX_URL"] = base_url
    if token is not None:
        env["FLUX_TOKEN"] = token
    params = StdioServerParameters(command=sys.executable, args=["-m", "hub.cli", "mcp"], env=env)
    async with stdio_client(params) as (read, write), _agent(read, write) as agent:
        yield agent


@asynccontextmanager
async def http_agent(base_url: str, token: str | None = None) -> AsyncIterator[Agent]:
    """An MCP client of the hub's ``/mcp`` endpoint."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(timeout(30), read=300)) as http,
        streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write, _),
        _agent(read, write) as agent,
    ):
        yield agent
