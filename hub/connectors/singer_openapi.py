"""The OpenAPI operations of ``/api/connectors/singer`` (docs/connectors.md, "Singer taps")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..api.openapi import errors, json_body, operation, path_param, ref, reply
from .base import CONNECTOR_NAME
from .singer_api import MAX_TAPS

if TYPE_CHECKING:
    from ..api.openapi import JsonObject

__all__ = ["TAP_OPERATIONS", "TAP_SCHEMAS"]

_TAG = "Connectors"
_PATH = "/api/connectors/singer"
_ADMIN = (
    "Public mode: `Unauthorized` without the admin token (`Authorization: Bearer "
    "<FLUX_ADMIN_TOKEN>`)."
)
_NO_ADMIN = "Public mode on a hub without `FLUX_ADMIN_TOKEN`: taps cannot be managed."
_NAME = path_param(
    "name", "The tap's name.", {"type": "string", "pattern": f"^{CONNECTOR_NAME.pattern}$"}
)
_NOT_FOUND = "`Tap '<name>' not found`."
_TIME: JsonObject = {"type": ["string", "null"], "format": "date-time"}
_SECONDS: JsonObject = {"type": "number", "exclusiveMinimum": 0}
_STREAM: JsonObject = {
    "type": "object",
    "properties": {
        "entity_id": {
            "type": ["string", "null"],
            "description": "`{field}` placeholders filled from the record, under the "
            "namespace; default: `<stream>/<key values>`.",
        },
        "properties": {
            "type": ["array", "null"],
            "items": {"type": "string"},
            "description": "Fields kept; default: all but `_sdc_*`.",
        },
    },
}
_SETTINGS: dict[str, JsonObject] = {
    "name": {"type": "string", "pattern": f"^{CONNECTOR_NAME.pattern}$"},
    "tap": {"type": "string", "description": "The tap's executable name, e.g. `tap-jsonl`."},
    "pip": {
        "type": ["string", "null"],
        "description": "The pip requirement installed into the tap's own virtualenv "
        "(default: `tap`).",
    },
    "executable": {
        "type": ["string", "null"],
        "description": "An absolute path to run instead of installing.",
    },
    "namespace": {"type": "string"},
    "config": {"type": "object", "description": "The tap's configuration."},
    "streams": {"type": "object", "additionalProperties": _STREAM},
    "interval_secs": _SECONDS,
    "timeout_secs": _SECONDS,
    "idle_timeout_secs": _SECONDS,
}

TAP_SCHEMAS: dict[str, JsonObject] = {
    "TapRequest": {
        "type": "object",
        "required": ["name", "tap", "namespace", "streams"],
        "properties": {
            **_SETTINGS,
            "secrets": {
                "type": "object",
                "description": "Merged into `config` at run time; stored encrypted, never shown.",
            },
        },
    },
    "Tap": {
        "type": "object",
        "properties": {
            **_SETTINGS,
            "has_secrets": {"type": "boolean"},
            "state": {
                "type": "string",
                "enum": ["pending", "installing", "running", "ok", "error"],
            },
            "created_at": {"type": "string", "format": "date-time"},
            "last_run": _TIME,
            "last_success": _TIME,
            "last_error": {"type": ["string", "null"]},
            "next_run": _TIME,
            "runs": {"type": "integer"},
            "failures": {"type": "integer"},
            "consecutive_failures": {"type": "integer"},
            "records": {"type": "integer", "description": "Applied by the last run."},
            "duplicates": {"type": "integer", "description": "Already applied, last run."},
            "rejected": {"type": "integer", "description": "Refused, last run."},
            "records_total": {"type": "integer"},
        },
    },
}

TAP_OPERATIONS: dict[tuple[str, str], JsonObject] = {
    (_PATH, "GET"): operation(
        "listTaps",
        "List Singer taps",
        "Every registered tap with its configuration (never its secrets) and status.",
        tag=_TAG,
        auth=True,
        responses={
            200: reply(
                "The taps.",
                {
                    "type": "object",
                    "required": ["taps"],
                    "properties": {"taps": {"type": "array", "items": ref("Tap")}},
                },
            ),
            **errors({401: _ADMIN, 403: _NO_ADMIN, 503: None}),
        },
    ),
    (_PATH, "POST"): operation(
        "addTap",
        "Register a Singer tap",
        "One hub runs the tap every `interval_secs` (the first run at once) and publishes "
        "its records as entities of `namespace`.",
        tag=_TAG,
        auth=True,
        body=json_body(
            ref("TapRequest"),
            "The tap.",
            example={
                "name": "orders",
                "tap": "tap-jsonl",
                "namespace": "shop",
                "config": {"path": "/srv/orders/*.jsonl", "stream_name": "orders"},
                "streams": {"orders": {"entity_id": "order-{id}"}},
            },
        ),
        responses={
            201: reply(
                "Registered.",
                {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}},
                },
            ),
            **errors(
                {
                    400: "JSON syntax.",
                    401: _ADMIN,
                    403: _NO_ADMIN,
                    409: "`tap '<name>' exists: delete it first`, or `tap limit reached: at "
                    f"most N taps (FLUX_MAX_TAPS); delete one first` (default {MAX_TAPS}).",
                    413: None,
                    422: "`<field>: <problem>`.",
                    500: "`secrets` given without `FLUX_ENCRYPTION_KEY`.",
                    503: None,
                }
            ),
        },
    ),
    (f"{_PATH}/{{name}}", "GET"): operation(
        "getTap",
        "Read a Singer tap",
        "Its configuration (never its secrets) and status.",
        tag=_TAG,
        auth=True,
        parameters=[_NAME],
        responses={
            200: reply("The tap.", ref("Tap")),
            **errors({401: _ADMIN, 403: _NO_ADMIN, 404: _NOT_FOUND, 503: None}),
        },
    ),
    (f"{_PATH}/{{name}}", "DELETE"): operation(
        "deleteTap",
        "Delete a Singer tap",
        "With its bookmark and status; a run under way is stopped (the tap is killed).",
        tag=_TAG,
        auth=True,
        parameters=[_NAME],
        responses={
            204: reply("Deleted."),
            **errors({401: _ADMIN, 403: _NO_ADMIN, 404: _NOT_FOUND, 503: None}),
        },
    ),
}
