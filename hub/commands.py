"""The ``flux`` command's client verbs: the Flux skill's ``flux.sh`` calls, and more.

Each verb makes the HTTP call ``flux.sh`` makes (FLUX_COMPAT.md, "The skill's
command-line client"), with the same environment: ``FLUX_URL`` (default
``http://localhost:3000``), ``FLUX_TOKEN``, ``FLUX_ADMIN_TOKEN``. Output is readable on
a terminal and pretty JSON when piped (or with ``--json``), as ``flux.sh`` prints.

Exit status: 0 success, 1 the hub refused or could not be reached, 2 bad arguments.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import quote

import httpx

from .core.timefmt import format_ms, parse_rfc3339_ms
from .core.where import WhereError, where_from_words

__all__ = ["CommandError", "Context", "run_verb"]

#: Columns of property values shown in tables before they are cut.
MAX_CELL = 60
#: ``--limit`` of ``flux history``: what the hub serves (hub/api/events.py).
HISTORY_LIMITS = (1, 500)
#: 9999-12-31T23:59:59.999Z: event timestamps past it are shown as given.
_LAST_MS = 253_402_300_799_999


class CommandError(Exception):
    """A verb failed; ``status`` is the exit status, the message says why."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Context:
    """What every verb needs."""

    url: str
    token: str | None
    admin_token: str | None
    json_output: bool
    out: TextIO = sys.stdout

    def client(self, *, admin: bool = False) -> httpx.Client:
        token = self.admin_token if admin else self.token
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{what} is not valid JSON: {exc}", 2) from None


def _entity_path(entity_id: str) -> str:
    return "/api/state/entities/" + quote(entity_id, safe="")


def _call(ctx: Context, method: str, path: str, *, admin: bool = False, **kwargs: Any) -> Any:
    try:
        with ctx.client(admin=admin) as http:
            reply = http.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise CommandError(f"cannot reach the hub at {ctx.url}: {exc}") from None
    if reply.status_code == 204:
        return None
    try:
        body = reply.json()
    except ValueError:
        body = reply.text
    if reply.status_code >= 400:
        message = body.get("error", body) if isinstance(body, dict) else body
        raise CommandError(f"{reply.status_code}: {message}")
    return body


def run_verb(ctx: Context, verb: str, args: Any) -> None:
    """Run one client verb.

    Raises:
        CommandError: with the exit status and a message for stderr.
    """
    if getattr(args, "entity_id", None) == "":
        # The hub would take "" for an id (as Flux does) and no verb could reach it again.
        raise CommandError("ENTITY_ID must not be empty", 2)
    handler = _VERBS[verb]
    handler(ctx, args)


# ---------------------------------------------------------------------- verbs


def _publish(ctx: Context, args: Any) -> None:
    properties = _json_arg(args.properties, "PROPERTIES_JSON")
    if not isinstance(properties, dict):
        # The hub acknowledges such an event and skips it (as Flux does): nothing changes.
        raise CommandError("PROPERTIES_JSON must be a JSON object: '{\"name\": value, …}'", 2)
    event = {
        "stream": args.stream,
        "source": args.source,
        "timestamp": int(time.time() * 1000),
        "payload": {"entity_id": args.entity_id, "properties": properties},
    }
    if args.if_version is not None:
        event["if_version"] = args.if_version
    if args.ttl is not None:
        event["ttl"] = args.ttl
    _show(ctx, _call(ctx, "POST", "/api/events", json=event))


def _heartbeat(ctx: Context, args: Any) -> None:
    """Publish with a ttl every ``--every`` s until stopped, then delete (docs/presence.md).

    A failed beat is reported on stderr and the next one tries again: a heartbeat
    outlives a hub restart. Only a refusal of the first beat (bad input) ends it.
    """
    properties = _json_arg(args.properties, "PROPERTIES_JSON")
    if not isinstance(properties, dict) or not properties:
        # An event without properties creates nothing: the entity would never exist.
        raise CommandError("PROPERTIES_JSON must be a JSON object with at least one property", 2)
    every = args.ttl / 3 if args.every is None else args.every
    if not 0 < every < args.ttl:
        raise CommandError(f"--every must be more than 0 and less than --ttl ({args.ttl})", 2)
    event = {
        "stream": args.stream,
        "source": args.source,
        "ttl": args.ttl,
        "payload": {"entity_id": args.entity_id, "properties": properties},
    }
    # SIGTERM stops it like Ctrl-C (a handler can only be set from the main thread).
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    beats = 0
    try:
        next_beat = time.monotonic()
        while args.count is None or beats < args.count:
            time.sleep(max(0.0, next_beat - time.monotonic()))
            next_beat = max(next_beat + every, time.monotonic())
            try:
                reply = _call(ctx, "POST", "/api/events", json=event)
            except CommandError as exc:
                if not beats:
                    raise
                sys.stderr.write(f"flux heartbeat: beat failed, retrying: {exc}\n")
                continue
            beats += 1
            if ctx.json_output:
                print(json.dumps({"beat": beats, **reply}), file=ctx.out, flush=True)
            else:
                print(f"{args.entity_id}: beat {beats}, alive for {args.ttl:g} s", file=ctx.out)
    except KeyboardInterrupt:
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    if not args.keep and beats:
        _call(ctx, "DELETE", _entity_path(args.entity_id))
        if not ctx.json_output:
            print(f"{args.entity_id}: stopped and deleted", file=ctx.out)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _get(ctx: Context, args: Any) -> None:
    entity = _call(ctx, "GET", _entity_path(args.entity_id))
    if ctx.json_output:
        _show(ctx, entity)
        return
    lease = ""
    if "expiresAt" in entity:  # only while it holds a lease (docs/presence.md)
        lease = f", expires {entity['expiresAt']} ({expires_in(entity['expiresAt'])})"
    print(
        f"{entity['id']}  (version {entity.get('version', '?')}, {entity['lastUpdated']}{lease})",
        file=ctx.out,
    )
    width = max((len(k) for k in entity["properties"]), default=0)
    for name, value in entity["properties"].items():
        print(f"  {name.ljust(width)}  {json.dumps(value)}", file=ctx.out)


def _list(ctx: Context, args: Any) -> None:
    params = {}
    if args.prefix is not None:
        params["prefix"] = args.prefix
    if args.namespace is not None:
        params["namespace"] = args.namespace
    if args.where:
        try:
            params["where"] = json.dumps(where_from_words(args.where))
        except WhereError as exc:
            raise CommandError(str(exc), 2) from None
    entities = _call(ctx, "GET", "/api/state/entities", params=params)
    if ctx.json_output:
        _show(ctx, entities)
        return
    print(format_table(entities), file=ctx.out)
    print(f"{len(entities)} entities", file=ctx.out)


def _delete(ctx: Context, args: Any) -> None:
    _show(ctx, _call(ctx, "DELETE", _entity_path(args.entity_id)))


def _batch_delete(ctx: Context, args: Any) -> None:
    body = _json_arg(args.filter, "FILTER_JSON")
    _show(ctx, _call(ctx, "POST", "/api/state/entities/delete", json=body))


def _batch(ctx: Context, args: Any) -> None:
    events = _json_arg(args.events, "EVENTS_JSON_ARRAY")
    if not isinstance(events, list):
        raise CommandError("EVENTS_JSON_ARRAY must be a JSON array of events", 2)
    _show(ctx, _call(ctx, "POST", "/api/events/batch", json={"events": events}))


def _connectors(ctx: Context, args: Any) -> None:
    listed = _call(ctx, "GET", "/api/connectors")
    if ctx.json_output:
        _show(ctx, listed)
        return
    rows = []
    for entry in listed.get("connectors", []):
        if entry.get("status") in ("configured", "error") and "kind" not in entry:
            # A catalogue connector's poll times are in its own entry.
            entry = {**entry, **_call(ctx, "GET", f"/api/connectors/{quote(entry['name'])}")}
        rows.append(entry)
    print(format_connectors(rows), file=ctx.out)


def _admin_config(ctx: Context, args: Any) -> None:
    if args.update is None:
        _show(ctx, _call(ctx, "GET", "/api/admin/config"))
        return
    body = _json_arg(args.update, "UPDATE_JSON")
    if isinstance(body, dict):
        # The hub ignores a field it does not know (as Flux does): a misspelt setting
        # would look applied. The settings are the fields it shows.
        known = _call(ctx, "GET", "/api/admin/config")
        unknown = sorted(set(body) - set(known))
        if unknown:
            raise CommandError(
                f"unknown setting {', '.join(unknown)}; the settings are {', '.join(known)}", 2
            )
    # flux.sh refuses to send without FLUX_ADMIN_TOKEN; we let the hub decide (it is
    # open when it has no admin token) and show its answer.
    _show(ctx, _call(ctx, "PUT", "/api/admin/config", admin=True, json=body))


def _health(ctx: Context, args: Any) -> None:
    entities = _call(ctx, "GET", "/api/state/entities")
    if ctx.json_output:
        _show(ctx, {"reachable": True, "url": ctx.url, "entities": len(entities)})
    else:
        print(f"hub at {ctx.url} is reachable: {len(entities)} entities", file=ctx.out)


def _history(ctx: Context, args: Any) -> None:
    low, high = HISTORY_LIMITS
    if not low <= args.limit <= high:
        raise CommandError(f"--limit must be from {low} to {high}, got {args.limit}", 2)
    params: dict[str, Any] = {"entity": args.entity_id, "limit": args.limit}
    if args.since is not None:
        params["since"] = args.since
    events = _call(ctx, "GET", "/api/events", params=params)
    if ctx.json_output:
        _show(ctx, events)
        return
    for event in events:
        props = event.get("payload", {}).get("properties")
        when = _event_time(event.get("timestamp"))
        print(f"{when}  {event.get('source')}  {json.dumps(props)}", file=ctx.out)
    print(f"{len(events)} events, newest first", file=ctx.out)


def _event_time(timestamp: Any) -> str:
    """An event's ``timestamp`` (ms since the epoch) as RFC 3339, like ``lastUpdated``;
    one that is not such a number (Flux accepts any positive integer) as given."""
    if isinstance(timestamp, int) and not isinstance(timestamp, bool) and 0 < timestamp <= _LAST_MS:
        return format_ms(timestamp)
    return str(timestamp)


def _namespace(ctx: Context, args: Any) -> None:
    if args.action == "register":
        _show(ctx, _call(ctx, "POST", "/api/namespaces", admin=True, json={"name": args.name}))
        if not ctx.json_output:
            print("Keep the token: it is shown only this once.", file=ctx.out)
    elif args.action == "get":
        _show(ctx, _call(ctx, "GET", f"/api/namespaces/{quote(args.name, safe='')}"))
    else:
        _call(ctx, "DELETE", f"/api/namespaces/{quote(args.name, safe='')}", admin=True)
        if not ctx.json_output:
            print(f"namespace {args.name} deleted", file=ctx.out)


_VERBS = {
    "publish": _publish,
    "heartbeat": _heartbeat,
    "get": _get,
    "list": _list,
    "delete": _delete,
    "batch-delete": _batch_delete,
    "batch": _batch,
    "connectors": _connectors,
    "admin-config": _admin_config,
    "health": _health,
    "history": _history,
    "namespace": _namespace,
}

CLIENT_VERBS = frozenset(_VERBS)


# ---------------------------------------------------------------------- output


def _show(ctx: Context, value: Any) -> None:
    """JSON, pretty-printed (``flux.sh`` pipes through ``jq``)."""
    print(json.dumps(value, indent=2, ensure_ascii=False), file=ctx.out)


def cell(value: Any, width: int = MAX_CELL) -> str:
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    )
    return text if len(text) <= width else text[: width - 1] + "…"


def expires_in(expires_at: str, now_ms: int | None = None) -> str:
    """How long until a lease's deadline (``expiresAt``): ``in 8s``, ``in 2m05s``, or
    ``due`` once it passed (the hub deletes the entity at its next sweep)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    seconds = math.ceil((parse_rfc3339_ms(expires_at) - now) / 1000)
    if seconds <= 0:
        return "due"
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"in {hours}h{minutes:02}m"
    return f"in {minutes}m{seconds:02}s" if minutes else f"in {seconds}s"


def format_table(entities: list[dict[str, Any]], now_ms: int | None = None) -> str:
    """Entities as an aligned table: id, version, last update, when the lease runs out
    (empty without one), properties."""
    rows = [("ID", "VERSION", "LAST UPDATED", "EXPIRES", "PROPERTIES")]
    rows += [
        (
            e["id"],
            str(e.get("version", "")),
            e.get("lastUpdated", ""),
            expires_in(e["expiresAt"], now_ms) if "expiresAt" in e else "",
            cell(e.get("properties", {}), 80),
        )
        for e in entities
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        f"{row[0].ljust(widths[0])}  {row[1].rjust(widths[1])}  {row[2].ljust(widths[2])}  "
        f"{row[3].ljust(widths[3])}  {row[4]}"
        for row in rows
    )


def format_connectors(connectors: list[dict[str, Any]]) -> str:
    """Connectors as an aligned table: status, last and next run, records, last error."""
    rows = [("NAME", "KIND", "STATUS", "LAST RUN", "RECORDS", "NEXT RUN", "LAST ERROR")]
    for c in connectors:
        status = c.get("status", "")
        if c.get("state") in ("installing", "running", "pending"):
            status += f" ({c['state']})"
        records = f"{c['records']}/{c.get('records_total', '')}" if "records" in c else ""
        rows.append(
            (
                c.get("name", ""),
                c.get("kind", "builtin"),
                status,
                c.get("last_poll", ""),
                records,
                c.get("next_poll", ""),
                cell(c.get("last_error", ""), MAX_CELL),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    return "\n".join(
        "  ".join(row[i].ljust(widths[i]) for i in range(6)) + "  " + row[6] for row in rows
    )
