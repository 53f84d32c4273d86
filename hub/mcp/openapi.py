"""The OpenAPI operations of ``/mcp`` (docs/mcp.md): the streamable-HTTP transport of
the Model Context Protocol, whose messages are JSON-RPC (the MCP specification, not
this document, describes them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..api.openapi import errors, json_body, operation, reply

if TYPE_CHECKING:
    from ..api.openapi import JsonObject, Operations

__all__ = ["MCP_OPERATIONS"]

_SPEC = "https://modelcontextprotocol.io/specification/2025-06-18/basic/transports"
_MESSAGE: JsonObject = {
    "type": "object",
    "description": "A JSON-RPC 2.0 message of MCP (or, from older clients, a batch of them).",
    "required": ["jsonrpc"],
    "properties": {"jsonrpc": {"const": "2.0"}},
}
_SESSION = {
    "mcp-session-id": {
        "description": "The session's id: send it back on every later request.",
        "schema": {"type": "string"},
    }
}
_406 = "The `Accept` header does not allow `application/json` and `text/event-stream`."

MCP_OPERATIONS: Operations = {
    ("/mcp", "POST"): operation(
        "mcpPost",
        "Send an MCP message",
        "The streamable-HTTP transport of the Model Context Protocol "
        f"([specification]({_SPEC})): `initialize` opens a session (its id comes back in "
        "`Mcp-Session-Id`), then tools (`publish`, `get`, `list`, `history`, `delete`, "
        "`wait_for_change`) and resources (`flux://entity/{id}`). Each call acts with "
        "this request's bearer token, as REST would. Send `Accept: application/json, "
        "text/event-stream`. See docs/mcp.md.",
        tag="mcp",
        auth=True,
        body=json_body(_MESSAGE, "A JSON-RPC message."),
        responses={
            200: reply("The JSON-RPC response.", _MESSAGE, headers=_SESSION),
            202: reply("A notification or response was accepted (no body)."),
            **errors(
                {
                    400: "Not a JSON-RPC message, or no/unknown session id where one is needed.",
                    404: "The session is over (closed or idle): initialize again.",
                    406: _406,
                    413: None,
                    415: "The body is not `application/json`.",
                    503: "The hub holds as many MCP sessions as it may; retry later.",
                }
            ),
        },
    ),
    ("/mcp", "GET"): operation(
        "mcpStream",
        "Listen for MCP notifications",
        "The session's event stream (`text/event-stream`): the server's notifications, "
        "such as `notifications/resources/updated` for subscribed entities. Needs the "
        "`Mcp-Session-Id` of an open session and `Accept: text/event-stream`.",
        tag="mcp",
        auth=True,
        responses={
            200: reply(
                "Server-Sent Events, one JSON-RPC message per event.",
                {"type": "string"},
                media_type="text/event-stream",
            ),
            **errors(
                {
                    400: "No session id.",
                    404: "The session is over (closed or idle): initialize again.",
                    406: "The `Accept` header does not allow `text/event-stream`.",
                    409: "The session already has its event stream open.",
                }
            ),
        },
    ),
    ("/mcp", "DELETE"): operation(
        "mcpClose",
        "End an MCP session",
        "Closes the session named by `Mcp-Session-Id` and its resource subscriptions.",
        tag="mcp",
        auth=True,
        responses={
            200: reply("The session is closed."),
            **errors({400: "No session id.", 404: "No such session."}),
        },
    ),
}
