"""The shared schemas of the built-in routes' OpenAPI operations (:mod:`.openapi_ops`).

Shapes are Flux's (FLUX_COMPAT.md §1) plus the hub's extensions (docs/compat.md);
limits and patterns are read from the modules that enforce them, so the document
cannot drift from the code that checks them.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING

from ..core.lease import MAX_TTL_SECONDS
from ..engine.runtime import BOUNDS, RuntimeValues
from ..wire.envelope import STREAM_PATTERN
from ..wire.names import RESERVED_NAMESPACE
from .openapi import ref

if TYPE_CHECKING:
    from .openapi import JsonObject

__all__ = ["CORE_SCHEMAS"]

_NULLABLE_STRING: JsonObject = {"type": ["string", "null"]}
_TIME: JsonObject = {
    "type": "string",
    "format": "date-time",
    "description": "RFC 3339, UTC, milliseconds (`2026-02-25T20:04:27.638Z`).",
}
_NAMESPACE_NAME: JsonObject = {
    "type": "string",
    "pattern": "^[a-z0-9_-]{3,32}$",
    "description": "3 to 32 characters of `a-z`, `0-9`, `-` and `_`.",
}


def _admin_config(update: bool) -> JsonObject:
    """The runtime config, or an update of it, from :class:`RuntimeValues` and its bounds."""
    properties: dict[str, JsonObject] = {}
    for field in fields(RuntimeValues):
        if field.name in BOUNDS:
            low, high = BOUNDS[field.name]
            schema: JsonObject = {"type": "integer", "minimum": low, "maximum": high}
        else:
            schema = {"type": "boolean"}
        if update:
            schema["type"] = [schema["type"], "null"]
        properties[field.name] = schema
    result: JsonObject = {"type": "object", "properties": properties}
    if update:
        result["description"] = (
            "Any subset of the fields; `null` or a missing field leaves it unchanged, "
            "unknown fields are ignored."
        )
    else:
        result["required"] = list(properties)
    return result


CORE_SCHEMAS: dict[str, JsonObject] = {
    "Event": {
        "type": "object",
        "description": "A Flux event. Unknown top-level fields are ignored.",
        "required": ["stream", "source", "payload"],
        "properties": {
            "eventId": {
                **_NULLABLE_STRING,
                "description": "Your id for the event; missing, null or empty: the hub makes "
                "a UUIDv7. The same id sent again within the de-duplication window is "
                "acknowledged again and not applied twice.",
            },
            "stream": {
                "type": "string",
                "pattern": f"^{STREAM_PATTERN.pattern}$",
                "description": "Lowercase letters and digits, in parts joined by dots "
                "(`sensors`, `home.climate`).",
            },
            "source": {
                "type": "string",
                "minLength": 1,
                "description": "Who publishes (an agent, a device).",
            },
            "timestamp": {
                "type": ["integer", "null"],
                "minimum": 1,
                "maximum": 2**63 - 1,
                "description": "Milliseconds since 1970; missing or null: the hub's time.",
            },
            "key": _NULLABLE_STRING,
            "schema": _NULLABLE_STRING,
            "payload": {
                "type": "object",
                "description": "`entity_id` and `properties` are what changes state; other "
                "fields are stored with the event.",
                "properties": {
                    "entity_id": {
                        "type": "string",
                        "description": "The entity (`namespace/name` in Public mode). "
                        f"`{RESERVED_NAMESPACE}/…` belongs to the hub.",
                    },
                    "properties": {
                        "type": "object",
                        "description": "Merged into the entity: each top-level key is "
                        "replaced whole; `null` is stored. `__deleted__: true` deletes it.",
                    },
                },
            },
            "if_version": {
                "type": ["integer", "null"],
                "minimum": 0,
                "description": "Apply only if the entity is at this version (0: it must not "
                "exist); otherwise 409. A hub extension.",
            },
            "ttl": {
                "type": ["number", "null"],
                "minimum": 0,
                "maximum": MAX_TTL_SECONDS,
                "description": "A lease, in seconds (30 days at most): the hub deletes the "
                "entity (reason `expired`) unless an event with a `ttl` refreshes it in "
                "time. 0 removes the lease; absent or null leaves it as it is "
                "(docs/semantics.md#leases). A hub extension.",
            },
        },
    },
    "Published": {
        "type": "object",
        "required": ["eventId", "stream"],
        "properties": {"eventId": {"type": "string"}, "stream": {"type": "string"}},
    },
    "BatchResult": {
        "type": "object",
        "description": "One event's outcome; all three keys are always present.",
        "required": ["eventId", "stream", "error"],
        "properties": {
            "eventId": {
                **_NULLABLE_STRING,
                "description": "null when the event failed validation.",
            },
            "stream": _NULLABLE_STRING,
            "error": {
                **_NULLABLE_STRING,
                "description": "null on success; else `validation failed: …`, "
                "`authorization failed: …`, `rate limit exceeded`, `conflict: …` or "
                "`publish failed: …`.",
            },
        },
    },
    "BatchReply": {
        "type": "object",
        "required": ["successful", "failed", "results"],
        "properties": {
            "successful": {"type": "integer", "minimum": 0},
            "failed": {"type": "integer", "minimum": 0},
            "results": {
                "type": "array",
                "description": "In the order of the request's events.",
                "items": ref("BatchResult"),
            },
        },
    },
    "StoredEvent": {
        "type": "object",
        "description": "An event as stored: `key` and `schema` only when given.",
        "required": ["eventId", "stream", "source", "timestamp", "payload"],
        "properties": {
            "eventId": {"type": "string"},
            "stream": {"type": "string"},
            "source": {"type": "string"},
            "timestamp": {"type": "integer"},
            "key": {"type": "string"},
            "schema": {"type": "string"},
            "payload": {"type": "object"},
        },
    },
    "Entity": {
        "type": "object",
        "required": ["id", "properties", "lastUpdated", "version"],
        "properties": {
            "id": {"type": "string"},
            "properties": {"type": "object"},
            "lastUpdated": _TIME,
            "version": {
                "type": "integer",
                "minimum": 1,
                "description": "Counts the events applied to the entity (a hub extension).",
            },
            "expiresAt": {
                **_TIME,
                "description": "When the entity's lease runs out unless an event with a "
                "`ttl` renews it; present only while it holds one (a hub extension). "
                "RFC 3339, UTC, milliseconds.",
            },
        },
    },
    "Deleted": {
        "type": "object",
        "required": ["entity_id", "eventId"],
        "properties": {
            "entity_id": {"type": "string"},
            "eventId": {"type": "string", "description": "The tombstone event's id."},
        },
    },
    "DeleteFilter": {
        "type": "object",
        "description": "One of `namespace`, `prefix` or `entity_ids`; when several are given, "
        "the first of that order with the right type wins.",
        "properties": {
            "namespace": {"type": "string"},
            "prefix": {"type": "string", "description": '`""` matches every entity.'},
            "entity_ids": {"type": "array", "items": {"type": "string"}},
        },
        "anyOf": [
            {"required": ["namespace"]},
            {"required": ["prefix"]},
            {"required": ["entity_ids"]},
        ],
    },
    "DeleteReport": {
        "type": "object",
        "required": ["deleted", "failed", "errors"],
        "properties": {
            "deleted": {
                "type": "integer",
                "minimum": 0,
                "description": "Entities that existed and were deleted.",
            },
            "failed": {"type": "integer", "minimum": 0},
            "errors": {"type": "array", "items": {"type": "string"}},
        },
    },
    "NamespaceRequest": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": _NAMESPACE_NAME},
    },
    "NamespaceCreated": {
        "type": "object",
        "required": ["namespaceId", "name", "token"],
        "properties": {
            "namespaceId": {"type": "string", "pattern": "^ns_[0-9a-z]{8}$"},
            "name": {"type": "string"},
            "token": {
                "type": "string",
                "description": "The namespace's token: shown this once, keep it.",
            },
        },
    },
    "Namespace": {
        "type": "object",
        "required": ["namespaceId", "name", "createdAt", "entityCount"],
        "properties": {
            "namespaceId": {"type": "string"},
            "name": {"type": "string"},
            "createdAt": _TIME,
            "entityCount": {"type": "integer", "minimum": 0},
        },
    },
    "AdminConfig": _admin_config(update=False),
    "AdminConfigUpdate": _admin_config(update=True),
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok", "ready"]}},
    },
}
