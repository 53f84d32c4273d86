"""The OpenAPI operations of the built-in routes, as data (see :mod:`.openapi`).

Each is keyed by its route's ``(template, method)``; the schemas they refer to are
in :mod:`.openapi_schemas`. Statuses and messages are the handlers' (FLUX_COMPAT.md
§1 and docs/compat.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..wire.names import RESERVED_NAMESPACE
from .events import HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT
from .openapi import PATH, errors, json_body, operation, path_param, query_param, ref, reply
from .openapi_schemas import CORE_SCHEMAS
from .state import LIST_MAX_LIMIT

if TYPE_CHECKING:
    from .openapi import JsonObject

__all__ = ["CORE_OPERATIONS", "CORE_SCHEMAS"]

_AUTH_WRITE = (
    "Public mode: no token, or the namespace is not registered (messages of Flux's "
    "ingestion: `Authorization token not provided`, `Invalid authorization token format`…)."
)
_FORBIDDEN_WRITE = (
    "The token does not own the entity's namespace, or the entity is the hub's own "
    f"(`{RESERVED_NAMESPACE}/…`)."
)
_PRIVATE_READS = "`FLUX_PRIVATE_READS=true` and no valid token."
_PRIVATE_SCOPE = "`FLUX_PRIVATE_READS=true` and the entity is outside the token's namespace."
_ENTITY_ID = path_param(
    "entity_id",
    "The entity id, percent-encoded (`room%2F1`); a plain `/` works too (`room/1`).",
    example="room/1",
)
_NAMESPACE = path_param("name", "The namespace name.", example="crew")
_NOT_INTERNAL = "Internal mode: `Namespace registration not available (auth disabled)`."
_EXAMPLE_EVENT = {
    "stream": "sensors",
    "source": "agent-01",
    "payload": {"entity_id": "room/1", "properties": {"temperature": 22.5}},
}
_STATIC_TYPES = (
    "text/html",
    "text/javascript",
    "text/css",
    "image/svg+xml",
    "application/json",
)


def _static(operation_id: str, summary: str, *, head: bool, file: bool) -> JsonObject:
    description = (
        "The dashboard's files, revalidated by `ETag` on every load."
        if file
        else "The dashboard (a page that shows the world live)."
    )
    if head:
        description += " `HEAD`: the same head, no body."
    types = _STATIC_TYPES if file else ("text/html",)
    ok: JsonObject = {
        "description": "The file.",
        "headers": {"ETag": {"description": "Its version.", "schema": {"type": "string"}}},
        "content": {media: {"schema": {"type": "string"}} for media in types},
    }
    params = [
        {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "The `ETag` of the copy you have.",
            "schema": {"type": "string"},
        }
    ]
    if file:
        params.insert(0, path_param("name", "A file of the dashboard (`dashboard.js`)."))
    return operation(
        operation_id,
        summary,
        description,
        tag="dashboard",
        parameters=params,
        responses={
            200: ok,
            304: reply("Your copy is current (`If-None-Match` matched)."),
            **errors({404: "No such file."}),
        },
    )


CORE_OPERATIONS: dict[tuple[str, str], JsonObject] = {
    ("/api/events", "POST"): operation(
        "publishEvent",
        "Publish one event",
        "Validates the event, checks the token (Public mode) and the namespace's rate "
        "limit, then applies it: the reply comes once the entity's state is updated, so "
        "a read that follows sees it.",
        tag="events",
        auth=True,
        body=json_body(ref("Event"), "The event.", example=_EXAMPLE_EVENT),
        responses={
            200: reply("Applied.", ref("Published")),
            409: reply(
                "`if_version` was not met: `conflict: entity is at version N`.",
                ref("Conflict"),
            ),
            **errors(
                {
                    400: "Not a valid event: JSON syntax, a type, or an envelope rule "
                    "(`stream is required`, `invalid stream format …`, `timestamp must be "
                    "positive, got N`, `payload must be a JSON object`); code "
                    "`invalid_event`.",
                    401: _AUTH_WRITE,
                    403: _FORBIDDEN_WRITE,
                    413: "The body is over `body_size_limit_single_bytes` "
                    "(`payload too large`), or a property is over its limit (count, size, "
                    "nesting).",
                    429: None,
                    503: None,
                }
            ),
        },
    ),
    ("/api/events", "GET"): operation(
        "eventHistory",
        "An entity's recent events",
        "The newest `limit` events of one entity since `since`, newest first (tombstones "
        "included).",
        tag="events",
        auth=True,
        parameters=[
            query_param(
                "entity",
                "The entity id (exact).",
                {"type": "string", "minLength": 1},
                required=True,
            ),
            query_param(
                "since",
                "Only events after this time (RFC 3339); default: the last 24 hours.",
                {"type": "string", "format": "date-time"},
            ),
            query_param(
                "limit",
                f"How many, at most (default {HISTORY_DEFAULT_LIMIT}; clamped to "
                f"1–{HISTORY_MAX_LIMIT}).",
                {"type": "integer", "minimum": 1, "maximum": HISTORY_MAX_LIMIT},
            ),
        ],
        responses={
            200: reply("The events, newest first.", {"type": "array", "items": ref("StoredEvent")}),
            **errors(
                {
                    400: "`entity parameter is required`, an invalid `since`, or a "
                    "`limit` that is not an integer.",
                    401: _PRIVATE_READS,
                    403: _PRIVATE_SCOPE,
                    503: None,
                }
            ),
        },
    ),
    ("/api/events/batch", "POST"): operation(
        "publishBatch",
        "Publish several events",
        "Each event is validated, authorized, rate-limited and applied on its own: the "
        "reply is 200 with one result per event, in order, even when some fail. The whole "
        "batch fails (400) only when the body is not JSON, an event is not even shaped "
        "like one (a wrong type, a missing field), or the list is empty.",
        tag="events",
        auth=True,
        body=json_body(
            {
                "type": "object",
                "required": ["events"],
                "properties": {"events": {"type": "array", "minItems": 1, "items": ref("Event")}},
            },
            "The events (at most `FLUX_MAX_EVENTS_PER_BATCH`, 10,000 by default).",
            example={"events": [_EXAMPLE_EVENT]},
        ),
        responses={
            200: reply("One result per event.", ref("BatchReply")),
            **errors(
                {
                    400: "The batch fails whole: JSON syntax, an event of the wrong shape, "
                    "`Batch request must contain at least one event`, or too many events.",
                    413: "The body is over `body_size_limit_batch_bytes`.",
                    503: None,
                }
            ),
        },
    ),
    ("/api/state/entities", "GET"): operation(
        "listEntities",
        "List entities",
        "Every entity matching the filters, in id order. Without `limit`, all of them "
        "(streamed); with `limit`, one page, and an `X-Next-Cursor` header to pass back "
        "as `cursor` while more may follow.",
        tag="state",
        auth=True,
        parameters=[
            query_param("prefix", "Ids that start with this.", {"type": "string"}),
            query_param(
                "namespace", "Ids in this namespace (`<namespace>/…`).", {"type": "string"}
            ),
            query_param(
                "limit",
                f"A page of at most this many (1–{LIST_MAX_LIMIT}).",
                {"type": "integer", "minimum": 1, "maximum": LIST_MAX_LIMIT},
            ),
            query_param(
                "cursor", "Where the previous page ended (its `X-Next-Cursor`).", {"type": "string"}
            ),
            query_param(
                "where",
                "A value filter, as JSON: property -> value or operators (`eq`, `ne`, `lt`, "
                '`lte`, `gt`, `gte`, `in`, `exists`), all must hold; `{"status": "open", '
                '"load": {"lt": 5}}`. With `limit`, a page reads at most 10,000 entities and '
                "may hold fewer than `limit` matches while `X-Next-Cursor` says more may "
                "follow (docs/protocol.md, Value filters).",
                {"type": "string"},
            ),
        ],
        responses={
            200: reply(
                "The entities.",
                {"type": "array", "items": ref("Entity")},
                headers={
                    "X-Next-Cursor": {
                        "description": "With `limit`: the `cursor` of the next page, "
                        "while more may follow.",
                        "schema": {"type": "string"},
                    }
                },
            ),
            **errors(
                {
                    400: "`limit` is not an integer between 1 and the maximum, "
                    "`cursor` is not one the hub gave, or `where` does not parse (the "
                    "message names the part: `where.load: 'lt' needs a number or a string`).",
                    401: _PRIVATE_READS,
                    503: None,
                }
            ),
        },
    ),
    ("/api/state/entities/delete", "POST"): operation(
        "deleteEntities",
        "Delete many entities",
        "Deletes every entity of a namespace, with a prefix, or in a list. In Public mode "
        "every one is authorized first: one refusal and nothing is deleted. The hub's own "
        f"entities (`{RESERVED_NAMESPACE}/…`) are never matched.",
        tag="state",
        auth=True,
        body=json_body(ref("DeleteFilter"), "What to delete.", example={"prefix": "room/"}),
        responses={
            200: reply("What was deleted.", ref("DeleteReport")),
            **errors(
                {
                    400: "JSON syntax, or `Batch too large: N entities requested, max is M`.",
                    401: "Public mode: a missing or malformed token.",
                    403: "Public mode: the token does not own an entity's namespace.",
                    413: "The body is over `body_size_limit_batch_bytes`.",
                    422: "Not one of the three filters.",
                    503: None,
                }
            ),
        },
    ),
    ("/api/state/entities/{entity_id:path}", "GET"): operation(
        "getEntity",
        "Read an entity",
        "The entity's current state.",
        tag="state",
        auth=True,
        parameters=[_ENTITY_ID],
        responses={
            200: reply("The entity.", ref("Entity")),
            **errors(
                {
                    401: _PRIVATE_READS,
                    403: _PRIVATE_SCOPE,
                    404: "`Entity not found`.",
                    503: None,
                }
            ),
        },
    ),
    ("/api/state/entities/{entity_id:path}", "DELETE"): operation(
        "deleteEntity",
        "Delete an entity",
        "Publishes a tombstone: subscribers hear of the deletion. Deleting an entity "
        "that does not exist succeeds too.",
        tag="state",
        auth=True,
        parameters=[_ENTITY_ID],
        responses={
            200: reply("Deleted (or already absent).", ref("Deleted")),
            **errors(
                {
                    400: "Public mode: the id does not parse.",
                    401: "Public mode: `Missing Authorization header`, `Invalid "
                    "Authorization format` or `Entity has no namespace`.",
                    403: "`Token does not own namespace`, or the entity is the hub's own.",
                    503: None,
                }
            ),
        },
    ),
    ("/api/admin/config", "GET"): operation(
        "getConfig",
        "Read the runtime limits",
        "The limits `PUT` can change, shared by every hub.",
        tag="admin",
        responses={200: reply("The limits.", ref("AdminConfig"))},
    ),
    ("/api/admin/config", "PUT"): operation(
        "putConfig",
        "Change the runtime limits",
        "Changes the limits on every hub at once (within a second), and keeps them across "
        "restarts. Needs the admin token when `FLUX_ADMIN_TOKEN` is set.",
        tag="admin",
        auth=True,
        body=json_body(
            ref("AdminConfigUpdate"),
            "The fields to change.",
            example={"rate_limit_per_namespace_per_minute": 600},
        ),
        responses={
            200: reply("The limits now.", ref("AdminConfig")),
            **errors(
                {
                    400: "JSON syntax.",
                    401: "`Unauthorized`: not the admin token.",
                    413: None,
                    422: "A field of the wrong type or out of its bounds.",
                    503: None,
                }
            ),
        },
    ),
    ("/healthz", "GET"): operation(
        "healthz",
        "Liveness",
        "The process answers.",
        tag="health",
        responses={200: reply('Alive: `{"status": "ok"}`.', ref("Status"))},
    ),
    ("/readyz", "GET"): operation(
        "readyz",
        "Readiness",
        "Redis answers, the reduce script is loaded and the hub is not shutting down: "
        "it can serve. From a SIGTERM on, 503 while the hub still serves for "
        "`FLUX_SHUTDOWN_DRAIN_SECONDS` (docs/scaling.md), so that load balancers stop "
        "routing to it first.",
        tag="health",
        responses={
            200: reply('Ready: `{"status": "ready"}`.', ref("Status")),
            **errors({503: "Not ready: Redis does not answer, or shutting down."}),
        },
    ),
    ("/api/namespaces", "POST"): operation(
        "registerNamespace",
        "Register a namespace",
        "Public mode only. Creates a namespace and returns its token, shown this once. "
        "Needs the admin token when `FLUX_ADMIN_TOKEN` is set.",
        tag="namespaces",
        auth=True,
        body=json_body(ref("NamespaceRequest"), "The name.", example={"name": "crew"}),
        responses={
            200: reply("Registered.", ref("NamespaceCreated")),
            **errors(
                {
                    400: "JSON syntax, or the name breaks a rule (`Namespace name too short "
                    "(minimum 3 characters)`, …).",
                    401: "`Admin token required`.",
                    404: _NOT_INTERNAL,
                    409: "`Namespace name already exists`, or the name is the hub's own.",
                    413: None,
                    422: "No `name` string.",
                    503: None,
                }
            ),
        },
    ),
    ("/api/namespaces/{name}", "GET"): operation(
        "getNamespace",
        "Read a namespace",
        "Public mode only: when it was created and how many entities it holds.",
        tag="namespaces",
        auth=True,
        parameters=[_NAMESPACE],
        responses={
            200: reply("The namespace.", ref("Namespace")),
            **errors(
                {
                    401: _PRIVATE_READS,
                    403: "`FLUX_PRIVATE_READS=true` and the token is neither the "
                    "namespace's nor the admin's.",
                    404: f"`Namespace not found`, or {_NOT_INTERNAL}",
                    503: None,
                }
            ),
        },
    ),
    ("/api/namespaces/{name}", "DELETE"): operation(
        "deleteNamespace",
        "Delete a namespace",
        "Its token stops working and its entities are deleted. Needs the admin token when "
        "`FLUX_ADMIN_TOKEN` is set.",
        tag="namespaces",
        auth=True,
        parameters=[_NAMESPACE],
        responses={
            204: reply("Deleted."),
            **errors({401: "`Admin token required`.", 404: "`Namespace not found`.", 503: None}),
        },
    ),
    ("/metrics", "GET"): operation(
        "metrics",
        "Prometheus metrics",
        "This hub's figures in the Prometheus text format (0.0.4): events, connections, "
        "queues, Redis latency.",
        tag="metrics",
        responses={
            200: reply("The metrics.", {"type": "string"}, media_type="text/plain"),
        },
    ),
    (PATH, "GET"): operation(
        "openapi",
        "This document",
        "The OpenAPI 3.1 document of every REST route of this hub.",
        tag="meta",
        responses={200: reply("The document.", {"type": "object"})},
    ),
    ("/", "GET"): _static("dashboard", "The dashboard", head=False, file=False),
    ("/", "HEAD"): _static("dashboardHead", "The dashboard (head)", head=True, file=False),
    ("/index.html", "GET"): _static("dashboardIndex", "The dashboard", head=False, file=False),
    ("/index.html", "HEAD"): _static(
        "dashboardIndexHead", "The dashboard (head)", head=True, file=False
    ),
    ("/static/{name:path}", "GET"): _static(
        "staticFile", "A dashboard file", head=False, file=True
    ),
    ("/static/{name:path}", "HEAD"): _static(
        "staticFileHead", "A dashboard file (head)", head=True, file=True
    ),
}
