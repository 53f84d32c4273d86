"""``/mcp``: the MCP server on the hub itself, over streamable HTTP.

An :class:`~hub.app.Extension`: the route ``/mcp`` (``POST`` messages, ``GET`` the
server's event stream, ``DELETE`` the session) is served by the ``mcp`` SDK's
:class:`~mcp.server.streamable_http_manager.StreamableHTTPSessionManager` through the
hub's ASGI bridge (:mod:`hub.transport.asgi`). Answers to ``POST`` are JSON (the
SDK's ``json_response``); notifications (resource updates) go on the session's
``GET`` stream, streamed with the hub's streaming primitive.

**Tokens.** Each tool call acts with the ``Authorization`` header of the HTTP request
that carries it, through the same code as a client of the hub: REST reads and
deletes run in-process through the hub's own router (:class:`InProcessTransport`:
no socket, the very handlers and errors of REST), and native publishes and waits go
over a loopback WebSocket to this hub's ``/api/ws``. A token thus reaches exactly
what it reaches on REST and the native protocol, with the same errors, and a session
carries no authority of its own.

**Sessions belong to their credential.** A session is bound to the ``Authorization``
header of its ``initialize`` (its SHA-256, given to the SDK as the request's user): a
request on the session with another header (another token, or none) is answered 404
``Session not found``, as an unknown session. Without it, anyone holding a session's
id could read its event stream (the resource updates its owner subscribed to: ids
outside the reader's namespace under private reads) or end it.

**Bounds** (docs/mcp.md): :data:`MAX_SESSIONS` sessions (503 past it), closed after
:data:`SESSION_IDLE_SECONDS` without a request; request bodies up to the route's body
limit (``body_size_limit_single_bytes``, 413 from the HTTP layer; the SDK checks
``FLUX_MAX_BODY_BYTES`` again); :data:`MAX_WAITS`
``wait_for_change`` calls in progress on the hub (each holds a loopback connection;
one more is refused at once, the caller retries); 100 resource subscriptions per
session (:mod:`.watch`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from ..api.router import Route
from ..transport.asgi import AsgiBridge
from ..transport.h1 import Request
from ..transport.responses import error_code, error_response
from .backend import Backend
from .openapi import MCP_OPERATIONS
from .server import build_server

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, MutableMapping

    from ..api.openapi import JsonObject, Operations
    from ..config import GatewaySettings
    from ..transport.responses import Response

__all__ = [
    "MAX_SESSIONS",
    "MAX_WAITS",
    "SESSION_IDLE_SECONDS",
    "InProcessTransport",
    "McpExtension",
]

#: Streamable-HTTP sessions open at once on one hub.
MAX_SESSIONS = 500
#: A session with no request for this long is closed (its id then answers 404 and
#: the client initializes again).
SESSION_IDLE_SECONDS = 600.0
#: ``wait_for_change`` calls in progress on one hub's ``/mcp``.
MAX_WAITS = 64
#: Largest REST answer the in-process transport collects (tools ask for bounded pages).
MAX_INPROCESS_BODY = 16 * 1024 * 1024

_ALL_INTERFACES = frozenset({"0.0.0.0", ""})


class _ClosedStreamIsNotAnError(logging.Filter):
    """The SDK (1.30) logs, with a traceback at ERROR, the ``ClosedResourceError`` its
    session's event-stream writer meets when the session ends (a client's ``DELETE``,
    an idle session closed): the normal end of every HTTP session, not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        closed = record.exc_info is not None and isinstance(
            record.exc_info[1], anyio.ClosedResourceError
        )
        return not (closed and record.getMessage() == "Error in standalone SSE writer")


logging.getLogger("mcp.server.streamable_http").addFilter(_ClosedStreamIsNotAnError())


class InProcessTransport(httpx.AsyncBaseTransport):
    """An httpx transport that hands each request to the hub's router, in-process."""

    def __init__(self, handle: Callable[[Request], Awaitable[Response]]) -> None:
        self._handle = handle

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raw = request.url.raw_path.decode("ascii")
        path, _, query = raw.partition("?")
        body = await request.aread()
        raw_headers = [(k.lower(), v) for k, v in request.headers.raw]
        hub_request = Request(
            method=request.method,
            path=path,
            query_string=query,
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers},
            body=body,
            client="mcp",
            raw_headers=raw_headers,
            target=raw,
        )
        response = await self._handle(hub_request)
        content = response.body
        if response.stream is not None:
            parts = []
            size = 0
            async for chunk in response.stream:
                size += len(chunk)
                if size > MAX_INPROCESS_BODY:
                    raise httpx.DecodingError(f"answer over {MAX_INPROCESS_BODY} bytes")
                parts.append(chunk)
            content = b"".join(parts)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers]
        if response.content_type is not None:
            headers.append(("content-type", response.content_type.decode("latin-1")))
        return httpx.Response(response.status, headers=headers, content=content)


class McpExtension:
    """``/mcp`` on this hub (see the module docstring).

    Args:
        gateway: the hub's gateway settings (host, body limit).
        handle: the hub's HTTP API (``HttpApi.handle``), for in-process REST calls.
        port: the port the hub listens on, once it does.
    """

    def __init__(
        self,
        gateway: GatewaySettings,
        handle: Callable[[Request], Awaitable[Response]],
        port: Callable[[], int],
    ) -> None:
        self.gateway = gateway
        self.port = port
        stateless = gateway.mcp_stateless
        self.server = build_server(self._backend_for, subscriptions=not stateless)
        self.manager = StreamableHTTPSessionManager(
            self.server,
            json_response=True,
            stateless=stateless,
            session_idle_timeout=SESSION_IDLE_SECONDS,
            max_sessions=MAX_SESSIONS,
            max_request_body_size=gateway.max_body_bytes,
        )
        self.bridge = AsgiBridge(self._as_caller)
        self.http = httpx.AsyncClient(
            transport=InProcessTransport(handle), base_url="http://hub.internal"
        )
        self.waits = anyio.CapacityLimiter(MAX_WAITS)

    def routes(self) -> list[Route]:
        methods = {"GET": self.serve, "POST": self.serve, "DELETE": self.serve}
        return [Route("/mcp", methods)]

    def openapi(self) -> tuple[Operations, Mapping[str, JsonObject]]:
        return MCP_OPERATIONS, {}

    async def run(self) -> None:
        async with self.http, self.manager.run():
            await self.bridge.run()

    async def serve(self, request: Request) -> Response:
        response = await self.bridge.handle(request)
        if response.status < 400 or response.producer is not None:
            return response
        # The SDK's refusals carry a JSON-RPC error (or text): the hub's error shape
        # instead, like every error of the hub, with the SDK's message.
        return error_response(response.status, _message(response.body), code=_code(response))

    async def _as_caller(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        """The SDK's handler, the request's credential as its user (binds sessions)."""
        scope["user"] = caller(scope)
        await self.manager.handle_request(scope, receive, send)

    def _backend_for(self, request: Any) -> Backend:
        host = self.gateway.host
        if host in _ALL_INTERFACES:
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        authorization = request.headers.get("authorization") if request is not None else None
        return Backend(
            self.http,
            f"ws://{host}:{self.port()}/api/ws",
            authorization,
            waits=self.waits,
        )


def caller(scope: MutableMapping[str, Any]) -> AuthenticatedUser:
    """Who sends a request, for the SDK's session binding: the SHA-256 of its
    ``Authorization`` header (no header: of nothing). Never the token itself."""
    header = b""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"authorization":
            header = value
            break
    identity = hashlib.sha256(header).hexdigest()
    return AuthenticatedUser(AccessToken(token=identity, client_id=identity, scopes=[]))


def _message(body: bytes) -> str:
    try:
        value = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip() or "refused"
    if isinstance(value, dict) and isinstance(value.get("error"), dict):
        return str(value["error"].get("message", "refused"))
    return str(value)


def _code(response: Response) -> str:
    return error_code(response.status)
