"""The OpenAPI operation of ``GET /api/stream`` (Server-Sent Events, docs/sse.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .openapi import errors, operation, query_param, reply

if TYPE_CHECKING:
    from .openapi import JsonObject, Operations

__all__ = ["STREAM_OPERATIONS"]


def _list(name: str, description: str) -> JsonObject:
    param = query_param(name, description, {"type": "array", "items": {"type": "string"}})
    param.update(style="form", explode=True)
    return param


def _flag(name: str, description: str) -> JsonObject:
    return query_param(name, description, {"type": "boolean"})


_CURSOR = {"type": "string", "description": "A cursor (docs/protocol.md)."}

STREAM_OPERATIONS: Operations = {
    ("/api/stream", "GET"): operation(
        "streamEvents",
        "Subscribe as Server-Sent Events",
        "A native subscription (docs/protocol.md) as `text/event-stream`, for `curl -N` "
        "and the browser's `EventSource`: a snapshot of the matching entities, then their "
        "deltas as they happen, for as long as the client reads. Each event is named after "
        "the native frame it carries (`subscribed`, `snapshot`, `synced`, `delta`, "
        "`deleted`, `checkpoint`, `reset`, `error`; `close` ends the stream, naming why) "
        "and its `data` is that frame's JSON. An event after which the stream can be "
        "resumed has an `id`: reconnect with it in `Last-Event-ID` (browsers do) and the "
        "stream goes on with nothing missed or doubled. Give at least one filter: "
        "`all`, `ids`, `prefixes`, `namespaces` or `globs` (repeat a parameter for "
        "several values). Auth as REST reads: with private reads, a namespace token as a "
        "bearer header, or `token` in the query for `EventSource` (docs/security.md). "
        "See docs/sse.md.",
        tag="state",
        auth=True,
        parameters=[
            _flag("all", "Every entity."),
            _list("ids", "Entities with exactly these ids."),
            _list("prefixes", "Entities whose id starts with one of these."),
            _list("namespaces", "Entities of these namespaces (`<namespace>/…`)."),
            _list("globs", "Ids matching these shell-style patterns (`*` also matches `/`)."),
            _list(
                "properties",
                "Only deltas changing one of these properties, carrying only these.",
            ),
            _flag("snapshot", "Send the matching entities first (default true)."),
            _flag("touches", "Also deltas of events that changed no value."),
            query_param("from", "Resume after this cursor instead of a snapshot.", _CURSOR),
            query_param(
                "lastEventId",
                "As the `Last-Event-ID` header, for clients that cannot set one.",
                _CURSOR,
            ),
            query_param(
                "where",
                "A value filter, as JSON (docs/protocol.md, Value filters).",
                {"type": "string"},
            ),
            query_param(
                "sub",
                "The subscription name the frames carry (default `stream`).",
                {"type": "string", "minLength": 1, "maxLength": 128},
            ),
            query_param(
                "token",
                "With private reads, a namespace token, for `EventSource` (which cannot "
                "set headers). Prefer the `Authorization` header where possible.",
                {"type": "string"},
            ),
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "description": "Resume after this event id (a cursor); browsers send it "
                "when they reconnect. Wins over `from` and `snapshot`.",
                "schema": {"type": "string"},
            },
        ],
        responses={
            200: reply(
                "The event stream: it ends only when the client leaves, the hub stops, "
                "or the client cannot keep up (a `close` event says which).",
                {"type": "string"},
                media_type="text/event-stream",
            ),
            **errors(
                {
                    400: "A parameter is unknown, repeated or malformed (the message names "
                    "it), or no filter was given.",
                    401: "Private reads: no token, or an unknown one.",
                    403: "Private reads: the filter matches nothing this token may read.",
                }
            ),
        },
    ),
}
