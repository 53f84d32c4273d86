"""The OpenAPI operations of ``/api/connectors`` (FLUX_COMPAT.md §1.10, docs/connectors.md).

Served by :mod:`hub.api.openapi` with the built-in routes' operations; the extension
hands them over through :meth:`ConnectorsExtension.openapi`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..api.openapi import errors, json_body, operation, path_param, query_param, ref, reply
from .api import GENERIC, PREFIX
from .base import CONNECTOR_NAME
from .poller import MAX_ENTITY_KEY, MAX_NAME, MAX_POLL_INTERVAL, MAX_TOKEN, MAX_URL

if TYPE_CHECKING:
    from ..api.openapi import JsonObject

__all__ = ["CONNECTOR_OPERATIONS", "CONNECTOR_SCHEMAS"]

_TIME: JsonObject = {"type": "string", "format": "date-time"}
_NULLABLE_TIME: JsonObject = {"type": ["string", "null"], "format": "date-time"}
_STATUS: JsonObject = {
    "type": "string",
    "enum": ["configured", "not_configured", "error", "not_available"],
    "description": "`configured`: credentials are stored for you and decrypt; `error`: "
    "stored but unreadable (the key changed), or storage is unavailable; "
    "`not_available`: the hub does not fetch from this service (gmail, linkedin, "
    "calendar): it takes no credentials and is never polled.",
}
_AUTH_TYPE: JsonObject = {
    "description": '`"none"` (the default), `"bearer"`, or `{"api_key_header": "<header>"}`.',
    "oneOf": [
        {"type": "string", "enum": ["none", "bearer"]},
        {
            "type": "object",
            "required": ["api_key_header"],
            "additionalProperties": False,
            "properties": {"api_key_header": {"type": "string", "minLength": 1}},
        },
    ],
}

#: A Singer tap's entry adds these (docs/connectors.md, "Singer taps").
_TAP_FIELDS: dict[str, JsonObject] = {
    "kind": {"type": "string", "enum": ["singer"], "description": "Singer taps only."},
    "tap": {"type": "string", "description": "The tap's executable name."},
    "state": {
        "type": "string",
        "enum": ["pending", "installing", "running", "ok", "error"],
        "description": "What the tap is doing, or how its last run went.",
    },
}

CONNECTOR_SCHEMAS: dict[str, JsonObject] = {
    "ConnectorList": {
        "type": "object",
        "required": ["connectors"],
        "properties": {
            "connectors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "enabled", "status"],
                    "description": "The catalogue, then the Singer taps, each with the "
                    "fields of `Connector` (docs/connectors.md).",
                    "properties": {
                        "name": {"type": "string"},
                        "enabled": {"type": "boolean"},
                        "status": _STATUS,
                        **_TAP_FIELDS,
                    },
                },
            }
        },
    },
    "Connector": {
        "type": "object",
        "required": ["name", "enabled", "status", "poll_interval_seconds"],
        "properties": {
            "name": {"type": "string"},
            "enabled": {"type": "boolean"},
            "status": _STATUS,
            "poll_interval_seconds": {"type": "number"},
            "last_poll": {**_TIME, "description": "Left out when unknown."},
            "last_error": {"type": "string", "description": "Left out after a success."},
            "next_poll": _TIME,
            "runs": {"type": "integer", "minimum": 0, "description": "Polls so far."},
            "failures": {"type": "integer", "minimum": 0, "description": "Failed polls."},
            "records": {
                "type": "integer",
                "minimum": 0,
                "description": "Events the last poll applied.",
            },
            "duplicates": {
                "type": "integer",
                "minimum": 0,
                "description": "Events of the last poll dropped as already applied.",
            },
            "rejected": {
                "type": "integer",
                "minimum": 0,
                "description": "Events of the last poll refused (envelope rules, limits).",
            },
            "records_total": {"type": "integer", "minimum": 0, "description": "All polls'."},
            "requests": {
                "type": "integer",
                "minimum": 0,
                "description": "HTTP requests of the last poll (github).",
            },
            "not_modified": {
                "type": "integer",
                "minimum": 0,
                "description": "Of those, answered 304 Not Modified (no quota used).",
            },
            "rate_limit": {
                "type": "object",
                "description": "The service's last rate-limit headers (github).",
                "properties": {
                    "limit": {"type": "integer"},
                    "remaining": {"type": "integer"},
                    "reset": _TIME,
                },
            },
            "available": {
                "type": "boolean",
                "const": False,
                "description": "Present (false) only for a connector that is not available.",
            },
            "reason": {"type": "string", "description": "Why it is not available."},
            **_TAP_FIELDS,
        },
    },
    "TokenRequest": {
        "type": "object",
        "required": ["token"],
        "properties": {"token": {"type": "string", "description": "The service's API token."}},
    },
    "Success": {
        "type": "object",
        "required": ["success"],
        "properties": {"success": {"type": "boolean", "const": True}},
    },
    "OAuthConnected": {
        "type": "object",
        "required": ["success", "message", "connector"],
        "properties": {
            "success": {"type": "boolean", "const": True},
            "message": {"type": "string"},
            "connector": {"type": "string"},
        },
    },
    "PollerRequest": {
        "type": "object",
        "description": "Unknown fields are ignored (Flux's `flux_namespace_token` among them).",
        "required": ["name", "url", "poll_interval_secs", "entity_key", "namespace"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
            "url": {
                "type": "string",
                "format": "uri",
                "maxLength": MAX_URL,
                "description": "`http` or `https`, with a host, without `user:password@`.",
            },
            "poll_interval_secs": {
                "type": "number",
                "maximum": MAX_POLL_INTERVAL,
                "description": "At least `FLUX_MIN_POLL_INTERVAL` (1 s by default).",
            },
            "entity_key": {"type": "string", "minLength": 1, "maxLength": MAX_ENTITY_KEY},
            "namespace": {
                "type": "string",
                "pattern": "^[a-z0-9_-]{3,32}$",
                "description": "Where the entity goes (`<namespace>/<entity_key>`); not "
                "`flux-core`.",
            },
            "auth_type": _AUTH_TYPE,
            "token": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_TOKEN,
                "description": "Required with `bearer` or `api_key_header`, refused with "
                "`none`. Stored encrypted, never shown again.",
            },
        },
    },
    "PollerCreated": {
        "type": "object",
        "required": ["source_id"],
        "properties": {"source_id": {"type": "string"}},
    },
    "Poller": {
        "type": "object",
        "required": [
            "source_id",
            "name",
            "url",
            "poll_interval_secs",
            "namespace",
            "entity_key",
            "entity_id",
            "auth_type",
            "status",
            "created_at",
            "last_poll",
            "last_success",
            "last_error",
            "next_poll",
            "polls",
            "failures",
            "consecutive_failures",
        ],
        "properties": {
            "source_id": {"type": "string"},
            "name": {"type": "string"},
            "url": {"type": "string"},
            "poll_interval_secs": {"type": "number"},
            "namespace": {"type": "string"},
            "entity_key": {"type": "string"},
            "entity_id": {"type": "string"},
            "auth_type": _AUTH_TYPE,
            "status": {"type": "string", "enum": ["pending", "ok", "error"]},
            "created_at": _TIME,
            "last_poll": _NULLABLE_TIME,
            "last_success": _NULLABLE_TIME,
            "last_error": {"type": ["string", "null"]},
            "next_poll": _NULLABLE_TIME,
            "polls": {"type": "integer", "minimum": 0},
            "failures": {"type": "integer", "minimum": 0},
            "consecutive_failures": {"type": "integer", "minimum": 0},
        },
    },
}

_TAG = "connectors"
_USER_401 = (
    "Public mode: `Invalid token: Authorization token not provided` (or `…format`, `…empty`)."
)
_ADMIN_401 = "Public mode with `FLUX_ADMIN_TOKEN` set: `Unauthorized`."
_NAME = path_param(
    "name",
    "A connector of the catalogue (`github`, `gmail`, `linkedin`, `calendar`); "
    f"`{GENERIC}` is the generic poller's.",
    # GENERIC matches the pattern, but a client never means it here: its paths are
    # the poller endpoints', which the router matches first.
    {"type": "string", "pattern": f"^{CONNECTOR_NAME.pattern}$"},
    example="github",
)
_SOURCE_ID = path_param("source_id", "The poller's `source_id`.")
_UNKNOWN = "`Connector '<name>' not found`."
_NO_KEY = "`Credential storage not available (FLUX_ENCRYPTION_KEY not set)`."
_NOT_AVAILABLE = (
    "`Connector '<name>' is not available: this hub does not fetch from <service> …; "
    "no credentials were stored` (gmail, linkedin, calendar)."
)

CONNECTOR_OPERATIONS: dict[tuple[str, str], JsonObject] = {
    (PREFIX, "GET"): operation(
        "listConnectors",
        "List connectors",
        "Every connector of the catalogue and whether you have configured it.",
        tag=_TAG,
        auth=True,
        responses={
            200: reply("The connectors.", ref("ConnectorList")),
            **errors({401: _USER_401}),
        },
    ),
    (f"{PREFIX}/{GENERIC}", "GET"): operation(
        "listPollers",
        "List generic pollers",
        "Every registered poller with its status, oldest first.",
        tag=_TAG,
        auth=True,
        responses={
            200: reply(
                "The pollers.",
                {
                    "type": "object",
                    "required": ["pollers"],
                    "properties": {"pollers": {"type": "array", "items": ref("Poller")}},
                },
            ),
            **errors({401: _ADMIN_401, 503: None}),
        },
    ),
    (f"{PREFIX}/{GENERIC}", "POST"): operation(
        "addPoller",
        "Register a generic poller",
        "The hub GETs `url` every `poll_interval_secs` and publishes the JSON it returns "
        "as the properties of `<namespace>/<entity_key>`. The first poll is due at once.",
        tag=_TAG,
        auth=True,
        body=json_body(
            ref("PollerRequest"),
            "The poller.",
            example={
                "name": "weather",
                "url": "https://api.example.com/now",
                "poll_interval_secs": 60,
                "entity_key": "weather-now",
                "namespace": "home",
            },
        ),
        responses={
            201: reply("Registered.", ref("PollerCreated")),
            **errors(
                {
                    400: "JSON syntax.",
                    401: _ADMIN_401,
                    409: "`poller limit reached: at most N pollers (FLUX_MAX_POLLERS); "
                    "delete one first`.",
                    413: None,
                    422: "`<field>: <problem>`.",
                    500: f"A token was given and {_NO_KEY}",
                    503: None,
                }
            ),
        },
    ),
    (f"{PREFIX}/{GENERIC}/{{source_id}}", "GET"): operation(
        "getPoller",
        "Read a generic poller",
        "Its configuration (never its token) and status.",
        tag=_TAG,
        auth=True,
        parameters=[_SOURCE_ID],
        responses={
            200: reply("The poller.", ref("Poller")),
            **errors({401: _ADMIN_401, 404: "`Poller '<id>' not found`.", 503: None}),
        },
    ),
    (f"{PREFIX}/{GENERIC}/{{source_id}}", "DELETE"): operation(
        "deletePoller",
        "Delete a generic poller",
        "Polling stops at once on this hub, within a second on the others.",
        tag=_TAG,
        auth=True,
        parameters=[_SOURCE_ID],
        responses={
            204: reply("Deleted."),
            **errors({401: _ADMIN_401, 404: "`Poller '<id>' not found`.", 503: None}),
        },
    ),
    (f"{PREFIX}/{{name}}", "GET"): operation(
        "getConnector",
        "Read a connector",
        "Its status for you, its poll interval, and when it last and next polls.",
        tag=_TAG,
        auth=True,
        parameters=[_NAME],
        responses={
            200: reply("The connector.", ref("Connector")),
            **errors({401: _USER_401, 404: _UNKNOWN}),
        },
    ),
    (f"{PREFIX}/{{name}}/token", "POST"): operation(
        "storeConnectorToken",
        "Store a connector's token",
        "Stores your API token for the service, encrypted; polling starts.",
        tag=_TAG,
        auth=True,
        parameters=[_NAME],
        body=json_body(ref("TokenRequest"), "The token.", example={"token": "ghp_…"}),
        responses={
            200: reply("Stored.", ref("Success")),
            **errors(
                {
                    400: "JSON syntax.",
                    401: _USER_401,
                    404: _UNKNOWN,
                    413: None,
                    422: "No `token` string.",
                    409: _NOT_AVAILABLE,
                    500: f"{_NO_KEY}, or `Failed to store credentials`.",
                    503: None,
                }
            ),
        },
    ),
    (f"{PREFIX}/{{name}}/token", "DELETE"): operation(
        "deleteConnectorToken",
        "Delete a connector's token",
        "Forgets your credentials for the service; polling stops.",
        tag=_TAG,
        auth=True,
        parameters=[_NAME],
        responses={
            200: reply("Deleted.", ref("Success")),
            **errors(
                {
                    401: _USER_401,
                    404: f"{_UNKNOWN[:-1]}, or `No credentials found for connector '<name>'`.",
                    500: f"{_NO_KEY}, or `Failed to delete credentials`.",
                }
            ),
        },
    ),
    (f"{PREFIX}/{{name}}/oauth/start", "GET"): operation(
        "startOAuth",
        "Start an OAuth flow",
        "Redirects (307) to the service's consent page; the service then sends the "
        "browser to the callback below.",
        tag=_TAG,
        auth=True,
        parameters=[_NAME],
        responses={
            307: reply(
                "To the service's authorization page.",
                headers={
                    "Location": {
                        "description": "The authorization URL.",
                        "schema": {"type": "string"},
                    }
                },
            ),
            **errors(
                {
                    401: _USER_401,
                    409: _NOT_AVAILABLE,
                    404: f"{_UNKNOWN[:-1]}, the connector has no OAuth, or "
                    "`FLUX_ENCRYPTION_KEY` is not set.",
                    500: "`OAuth not configured for connector '<name>'. Set "
                    "FLUX_OAUTH_<NAME>_CLIENT_ID and FLUX_OAUTH_<NAME>_CLIENT_SECRET …`.",
                    503: None,
                }
            ),
        },
    ),
    (f"{PREFIX}/{{name}}/oauth/callback", "GET"): operation(
        "finishOAuth",
        "Finish an OAuth flow",
        "Where the service sends the browser back: exchanges the code for a token and stores it.",
        tag=_TAG,
        parameters=[
            _NAME,
            query_param("code", "The authorization code.", {"type": "string"}),
            query_param("state", "The state `oauth/start` issued.", {"type": "string"}),
            query_param("error", "The service's refusal.", {"type": "string"}),
            query_param("error_description", "Why it refused.", {"type": "string"}),
        ],
        responses={
            200: reply("Connected.", ref("OAuthConnected")),
            **errors(
                {
                    400: "`OAuth authorization failed: …`, `Missing 'code' parameter`, "
                    "`Missing 'state' parameter` or `Connector name mismatch`.",
                    401: "`Invalid or expired OAuth state (possible CSRF attack)`.",
                    404: "`FLUX_ENCRYPTION_KEY` is not set.",
                    500: "`OAuth not configured for connector '<name>'`, or `Failed to "
                    "store credentials: …`.",
                    502: "`Failed to exchange authorization code: …`.",
                    503: None,
                }
            ),
        },
    ),
}
