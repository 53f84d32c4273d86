"""The MCP tools: names, descriptions and JSON schemas written for a model, and the
call of each on a :class:`~.backend.Backend`.

The descriptions say what a tool does, when to use it, and show an example call,
because that is all a model reads before calling it. The schemas are strict
(``additionalProperties: false``, bounds on every number and list), so the SDK
refuses a malformed call with a message naming the field before anything is sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .backend import GLOB_SCAN_LIMIT, MAX_DELTAS, MAX_WAIT_SECONDS, ToolError

if TYPE_CHECKING:
    from .backend import Backend

__all__ = ["MAX_EVENTS", "MAX_PAGE", "TOOLS", "call_tool"]

#: Events one ``publish`` call may carry.
MAX_EVENTS = 100
#: Entities one ``list`` call returns at most.
MAX_PAGE = 100
#: Events one ``history`` call returns at most.
MAX_HISTORY = 100

_ID = {"type": "string", "minLength": 1, "maxLength": 512, "description": "An entity id."}

_FILTER: dict[str, Any] = {
    "type": "object",
    "description": "Which entities to watch: the union of what is given (at least one).",
    "properties": {
        "ids": {"type": "array", "items": _ID, "maxItems": 100, "description": "Exact ids."},
        "prefixes": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "maxItems": 100,
            "description": 'Id prefixes, e.g. ["crew/task-"].',
        },
        "namespaces": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "maxItems": 100,
            "description": 'Namespaces: "crew" means every id starting "crew/".',
        },
        "globs": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "maxItems": 100,
            "description": 'Shell-style patterns; "*" also matches "/", e.g. ["*/temperature"].',
        },
        "all": {"type": "boolean", "description": "Every entity."},
    },
    "additionalProperties": False,
}

_WHERE: dict[str, Any] = {
    "type": "object",
    "description": "Only entities whose property values match; every condition must hold. "
    "A condition is a value (equality) or operators: eq, ne, lt, lte, gt, gte (numbers or "
    'strings), in (a list), exists (true/false). E.g. {"state": "open", "priority": '
    '{"gte": 2}, "owner": {"exists": false}}.',
}

_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "entity_id": _ID | {"description": 'The entity to change, e.g. "crew/task-7".'},
        "properties": {
            "type": "object",
            "description": "Properties to set (top-level keys overwrite; the rest stay). "
            "Values are any JSON.",
        },
        "if_version": {
            "type": "integer",
            "minimum": 0,
            "description": "Compare-and-set: apply only if the entity is at this version "
            "(0: only if it does not exist yet). Otherwise the event fails with code "
            "'conflict' and the entity's current state.",
        },
        "ttl": {
            "type": "number",
            "minimum": 0,
            "maximum": 2_592_000,
            "description": "A lease, in seconds: unless another event with a ttl comes "
            "within this time, the hub deletes the entity (watchers see it deleted with "
            "reason 'expired'). The way to say 'I am alive': publish your presence entity "
            "with ttl 30 every 10 seconds. 0 removes the lease; without ttl it stays as is.",
        },
        "stream": {"type": "string", "minLength": 1, "description": 'Default "mcp".'},
        "source": {"type": "string", "minLength": 1, "description": "Who publishes."},
        "event_id": {
            "type": "string",
            "minLength": 1,
            "maxLength": 128,
            "description": "Your id for the event: repeating it never applies it twice.",
        },
    },
    "required": ["entity_id", "properties"],
    "additionalProperties": False,
}

TOOLS: list[dict[str, Any]] = [
    {
        "name": "publish",
        "description": "Publish one or more events: each sets properties on an entity of the "
        "shared world state (creating it if needed). Events apply in order; each gets its own "
        "result with the entity's new version, or an error. Use if_version to claim or lock "
        "something safely: of several agents publishing with the same if_version, exactly one "
        "succeeds; the others get code 'conflict' with the entity's current state (who won).\n"
        "Example, claim a task only if nobody has (it is at version 1):\n"
        '{"events": [{"entity_id": "crew/task-7", "properties": {"owner": "agent-b", '
        '"state": "claimed"}, "if_version": 1}]}',
        "inputSchema": {
            "type": "object",
            "properties": {
                "events": {
                    "type": "array",
                    "items": _EVENT,
                    "minItems": 1,
                    "maxItems": MAX_EVENTS,
                }
            },
            "required": ["events"],
            "additionalProperties": False,
        },
    },
    {
        "name": "get",
        "description": "Read one entity's current state: its properties, version and "
        "lastUpdated, and expiresAt while it holds a lease (when the hub deletes it unless "
        'a publish with a ttl renews it). Example: {"entity_id": "crew/task-7"}. An entity '
        "that does not exist is an error with code 'not_found'.",
        "inputSchema": {
            "type": "object",
            "properties": {"entity_id": _ID},
            "required": ["entity_id"],
            "additionalProperties": False,
        },
    },
    {
        "name": "list",
        "description": "List entities in id order, a page at a time. Narrow by one of prefix "
        "(ids starting with it), namespace (ids starting 'namespace/') or glob (shell pattern, "
        f"'*' also matches '/'; scans at most {GLOB_SCAN_LIMIT} ids per call). If next_cursor "
        "is not null, call again with it for the next page (a page may hold fewer than "
        "limit entities, even none, while next_cursor says more may follow). where keeps "
        "only entities whose values match.\n"
        'Example: {"namespace": "crew", "where": {"state": "open"}, "limit": 20}, then the '
        'same with "cursor": "<next_cursor>".',
        "inputSchema": {
            "type": "object",
            "properties": {
                "prefix": {"type": "string"},
                "namespace": {"type": "string", "minLength": 1},
                "glob": {"type": "string", "minLength": 1},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50},
                "cursor": {
                    "type": "string",
                    "minLength": 1,
                    "description": "The next_cursor of the previous page.",
                },
                "where": _WHERE,
            },
            "additionalProperties": False,
        },
    },
    {
        "name": "history",
        "description": "An entity's newest events, newest first (what was published, by "
        'whom, when). Example: {"entity_id": "crew/task-7", "limit": 10}.',
        "inputSchema": {
            "type": "object",
            "properties": {
                "entity_id": _ID,
                "limit": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_HISTORY,
                    "default": 20,
                },
                "since": {
                    "type": "string",
                    "description": "Only events stored since this RFC 3339 time "
                    '(default: the last 24 hours), e.g. "2026-12-06T10:00:00Z".',
                },
            },
            "required": ["entity_id"],
            "additionalProperties": False,
        },
    },
    {
        "name": "delete",
        "description": "Delete an entity (watchers see it deleted). "
        'Example: {"entity_id": "crew/task-7"}.',
        "inputSchema": {
            "type": "object",
            "properties": {"entity_id": _ID},
            "required": ["entity_id"],
            "additionalProperties": False,
        },
    },
    {
        "name": "wait_for_change",
        "description": "Long-poll for changes: returns the changes to entities matching filter "
        "since cursor, waiting up to timeout_seconds for the first one, and the cursor to pass "
        "to the next call. Nothing is missed or repeated between calls that pass the returned "
        "cursor. Without a cursor it waits for changes from now. Each change has id, kind "
        "(created, updated, deleted; with where also entered: it now matches, set is its whole "
        "state, and left: it does not match now; changes made before the call come as each "
        "entity's outcome, and a left may name one you never saw match: ignore it), set (the "
        "properties that changed), version.\n"
        "Pattern: r = wait_for_change({filter, timeout_seconds: 0}) to get a cursor; read what "
        "you need with get/list; then loop: r = wait_for_change({filter, cursor: r.cursor}). "
        "timed_out true means nothing changed. reset true means the cursor was too old: read "
        "again with get/list and go on with the new cursor.\n"
        'Example: {"filter": {"prefixes": ["crew/task-"]}, "cursor": "1796003592903-0", '
        '"timeout_seconds": 30}',
        "inputSchema": {
            "type": "object",
            "properties": {
                "filter": _FILTER,
                "cursor": {
                    "type": "string",
                    "minLength": 1,
                    "description": "The cursor a previous call returned.",
                },
                "timeout_seconds": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": MAX_WAIT_SECONDS,
                    "default": 25,
                },
                "where": _WHERE,
                "max_changes": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_DELTAS,
                    "default": 100,
                },
            },
            "required": ["filter"],
            "additionalProperties": False,
        },
    },
]


async def call_tool(backend: Backend, name: str, args: dict[str, Any]) -> tuple[Any, bool]:
    """Run a tool; ``(structured result, is_error)``.

    Raises:
        ToolError: the hub refused, or the arguments make no sense together.
    """
    if name == "publish":
        return await _publish(backend, args["events"])
    if name == "get":
        return await backend.get(args["entity_id"]), False
    if name == "list":
        scopes = [k for k in ("prefix", "namespace", "glob") if k in args]
        if len(scopes) > 1:
            raise ToolError(f"give at most one of prefix, namespace, glob (got {scopes})")
        return (
            await backend.list_entities(
                prefix=args.get("prefix"),
                namespace=args.get("namespace"),
                glob=args.get("glob"),
                limit=args.get("limit", 50),
                cursor=args.get("cursor"),
                where=args.get("where"),
            ),
            False,
        )
    if name == "history":
        events = await backend.history(
            args["entity_id"], limit=args.get("limit", 20), since=args.get("since")
        )
        return {"events": events}, False
    if name == "delete":
        return await backend.delete(args["entity_id"]), False
    if name == "wait_for_change":
        filter_ = args["filter"]
        if not any(filter_.get(k) for k in ("ids", "prefixes", "namespaces", "globs", "all")):
            raise ToolError("filter needs at least one of ids, prefixes, namespaces, globs, all")
        found = await backend.wait_for_change(
            filter_,
            args.get("cursor"),
            float(args.get("timeout_seconds", 25)),
            int(args.get("max_changes", 100)),
            args.get("where"),
        )
        return found.as_dict(), False
    raise ToolError(f"unknown tool {name!r}", code="not_found")


async def _publish(backend: Backend, events: list[dict[str, Any]]) -> tuple[Any, bool]:
    frames = []
    for event in events:
        frame: dict[str, Any] = {
            "payload": {"entity_id": event["entity_id"], "properties": event["properties"]}
        }
        for key, wire in (
            ("if_version", "if_version"),
            ("stream", "stream"),
            ("source", "source"),
            ("event_id", "eventId"),
            ("ttl", "ttl"),
        ):
            if key in event:
                frame[wire] = event[key]
        frames.append(frame)
    results: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = await backend.publish(frames)
    for event, answer in zip(events, answers, strict=True):
        result: dict[str, Any] = {"entity_id": event["entity_id"]}
        if "error" in answer:
            result["ok"] = False
            result["error"] = answer["error"]
            if answer["error"].get("code") == "conflict":
                result["version"] = answer.get("version", 0)
                result["current"] = await _current(backend, event["entity_id"])
        else:
            result.update(
                ok=True,
                eventId=answer.get("eventId"),
                version=answer.get("version"),
                position=answer.get("position"),
                duplicate=answer.get("status") == "duplicate",
            )
        results.append(result)
    failed = sum(1 for r in results if not r["ok"])
    summary = {"published": len(results) - failed, "failed": failed, "results": results}
    return summary, failed == len(results)


async def _current(backend: Backend, entity_id: str) -> dict[str, Any] | None:
    """The entity's state as read just after a conflict (None: it does not exist)."""
    try:
        return await backend.get(entity_id)
    except ToolError:
        return None
