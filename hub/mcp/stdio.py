"""``flux mcp``: the MCP server on stdin/stdout, a client of a running hub."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import httpx
from mcp.server.stdio import stdio_server

from .backend import Backend
from .server import build_server, initialization_options

__all__ = ["hub_urls", "serve_stdio"]


def hub_urls(url: str) -> tuple[str, str]:
    """``(http base URL, WebSocket URL of /api/ws)`` from the hub's URL."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    base = urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    ws_scheme = "wss" if scheme == "https" else "ws"
    return base, urlunsplit((ws_scheme, parts.netloc, parts.path.rstrip("/") + "/api/ws", "", ""))


async def serve_stdio(url: str, token: str | None) -> None:
    """Serve MCP on stdin/stdout until stdin closes; every call goes to the hub at
    ``url`` with ``token``."""
    base, ws_url = hub_urls(url)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        backend = Backend(http, ws_url, f"Bearer {token}" if token else None)
        server = build_server(lambda _request: backend)
        async with stdio_server() as (read, write):
            await server.run(read, write, initialization_options(server))
