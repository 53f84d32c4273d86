"""What the MCP tools do, as a client of a hub: its REST API and native protocol.

Every call carries the caller's token, and goes through the endpoint a client of the
hub would use, so authorization, namespaces, rate limits, limits and the error
messages are those of REST and of the native protocol by construction:

============================  ==============================================
tool                          endpoint
============================  ==============================================
``get``                       ``GET /api/state/entities/{id}``
``list``                      ``GET /api/state/entities?prefix|namespace&limit&cursor``
``history``                   ``GET /api/events?entity&limit&since``
``delete``                    ``DELETE /api/state/entities/{id}``
``publish``                   native ``publish`` frame (its ``ack`` gives versions)
``wait_for_change``           native ``subscribe`` with ``from`` (resume catch-up)
============================  ==============================================

``publish`` uses the native protocol because its acknowledgement carries each event's
new version and position (REST's answers carry neither), which a compare-and-set
loop needs; both ways share one publish policy (``hub/engine/publish.py``).

The REST side is an :class:`httpx.AsyncClient`: over the network for ``flux mcp``,
or with an in-process transport for the hub's own ``/mcp`` endpoint (:mod:`.http`).
"""

from __future__ import annotations

import base64
import fnmatch
import json
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import httpx
import websockets
from websockets.typing import Subprotocol

if TYPE_CHECKING:
    from collections.abc import Mapping

    from websockets.asyncio.client import ClientConnection

__all__ = [
    "GLOB_SCAN_LIMIT",
    "MAX_DELTAS",
    "MAX_WAIT_SECONDS",
    "Backend",
    "ToolError",
    "Wait",
]

#: The loopback connections' websockets logger. At DEBUG websockets logs every header
#: of the upgrade (``Authorization: Bearer …``) and every frame: never below INFO,
#: whatever the root logger's level (on the hub's ``/mcp`` and in ``flux mcp``).
_ws_logger = logging.getLogger("hub.mcp.ws")
_ws_logger.setLevel(logging.INFO)

#: Longest ``wait_for_change`` (seconds): MCP clients time requests out at about a
#: minute; an agent calls again with the cursor it got.
MAX_WAIT_SECONDS = 60.0
#: Most changes one ``wait_for_change`` returns; the rest come with the next call.
MAX_DELTAS = 500
#: After the first change arrives, how long a wait keeps collecting what follows
#: (a burst of related writes comes back in one answer).
SETTLE_SECONDS = 0.05
#: Ids a ``list`` by glob examines per call, at most; it returns the matches among
#: them and a cursor to go on from.
GLOB_SCAN_LIMIT = 2000
#: Ids read per page while scanning for a glob.
GLOB_PAGE = 500
#: Seconds to open the native connection and get an answer to a request.
NATIVE_TIMEOUT = 10.0


class ToolError(Exception):
    """A tool call the hub refused, or that cannot be made: the message says why.

    ``status`` and ``code`` are the hub's (the HTTP status and the ``code`` slug of
    REST errors, or the native error code); ``details`` any other fields it sent.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "bad_request",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = dict(details or {})

    def as_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.status is not None:
            error["status"] = self.status
        error.update(self.details)
        return {"error": error}


@dataclass(frozen=True, slots=True)
class Wait:
    """What ``wait_for_change`` found."""

    changes: list[dict[str, Any]]
    cursor: str
    timed_out: bool
    reset: bool = False
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "changes": self.changes,
            "cursor": self.cursor,
            "timed_out": self.timed_out,
        }
        if self.reset:
            out["reset"] = True
            out["reason"] = self.reason
        return out


class Backend:
    """One caller's view of a hub.

    Args:
        http: a client whose ``base_url`` is the hub (its transport may be in-process).
        ws_url: the hub's ``/api/ws``.
        authorization: the caller's ``Authorization`` header (None: none), sent as
            is with every call, so the hub parses it as it parses any.
        waits: bounds the ``wait_for_change`` calls in progress (each holds a
            connection); one over it is refused at once. None: no bound.
        source: the ``source`` of events published without one.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        ws_url: str,
        authorization: str | None,
        *,
        waits: anyio.CapacityLimiter | None = None,
        source: str = "mcp",
    ) -> None:
        self.http = http
        self.ws_url = ws_url
        self.authorization = authorization
        self.waits = waits
        self.source = source

    def headers(self) -> dict[str, str]:
        return {"Authorization": self.authorization} if self.authorization else {}

    # ------------------------------------------------------------------ REST

    async def _rest(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            reply = await self.http.request(method, path, headers=self.headers(), **kwargs)
        except httpx.HTTPError as exc:
            raise ToolError(f"cannot reach the hub: {exc}", code="unavailable") from None
        if reply.status_code >= 400:
            try:
                body = reply.json()
            except ValueError:
                body = {"error": reply.text}
            if not isinstance(body, dict):
                body = {"error": str(body)}
            message = str(body.pop("error", reply.reason_phrase))
            code = str(body.pop("code", "error"))
            raise ToolError(message, status=reply.status_code, code=code, details=body)
        return reply

    async def get(self, entity_id: str) -> dict[str, Any]:
        reply = await self._rest("GET", _entity_path(entity_id))
        entity: dict[str, Any] = reply.json()
        return entity

    async def list_entities(
        self,
        *,
        prefix: str | None = None,
        namespace: str | None = None,
        glob: str | None = None,
        limit: int,
        cursor: str | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A page of entities in id order and the cursor of the next (None: the last)."""
        extra = {} if where is None else {"where": json.dumps(where)}
        if glob is None:
            params: dict[str, Any] = {"limit": limit, **extra}
            if prefix is not None:
                params["prefix"] = prefix
            if namespace is not None:
                params["namespace"] = namespace
            if cursor:
                params["cursor"] = cursor
            reply = await self._rest("GET", "/api/state/entities", params=params)
            return {"entities": reply.json(), "next_cursor": reply.headers.get("x-next-cursor")}
        return await self._list_glob(glob, limit, cursor, extra)

    async def _list_glob(
        self, glob: str, limit: int, cursor: str | None, extra: dict[str, str]
    ) -> dict[str, Any]:
        """Scan the glob's literal prefix (at most :data:`GLOB_SCAN_LIMIT` ids per call)."""
        literal = _literal_prefix(glob)
        found: list[dict[str, Any]] = []
        scanned = 0
        while True:
            params: dict[str, Any] = {"prefix": literal, "limit": GLOB_PAGE, **extra}
            if cursor:
                params["cursor"] = cursor
            reply = await self._rest("GET", "/api/state/entities", params=params)
            page: list[dict[str, Any]] = reply.json()
            following = reply.headers.get("x-next-cursor")
            scanned += len(page)
            for index, entity in enumerate(page, 1):
                if fnmatch.fnmatchcase(entity["id"], glob):
                    found.append(entity)
                    if len(found) == limit:
                        more = index < len(page) or following is not None
                        after = _list_cursor(entity["id"])
                        return {"entities": found, "next_cursor": after if more else None}
            if following is None or scanned >= GLOB_SCAN_LIMIT:
                return {"entities": found, "next_cursor": following}
            cursor = following

    async def history(self, entity_id: str, *, limit: int, since: str | None) -> Any:
        params: dict[str, Any] = {"entity": entity_id, "limit": limit}
        if since is not None:
            params["since"] = since
        return (await self._rest("GET", "/api/events", params=params)).json()

    async def delete(self, entity_id: str) -> Any:
        return (await self._rest("DELETE", _entity_path(entity_id))).json()

    # ------------------------------------------------------------------ native

    async def connect(self) -> ClientConnection:
        try:
            return await websockets.connect(
                self.ws_url,
                subprotocols=[Subprotocol("flux.v1")],
                additional_headers=self.headers(),
                open_timeout=NATIVE_TIMEOUT,
                max_size=None,
                logger=_ws_logger,
            )
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            raise ToolError(f"cannot reach the hub: {exc}", code="unavailable") from None

    async def publish(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Publish in one native frame; one result per event, in order."""
        batch = [{"source": self.source, "stream": "mcp", **e} for e in events]
        for event in batch:
            event.setdefault("eventId", str(uuid.uuid4()))
        async with await self.connect() as ws:
            await ws.send(json.dumps({"type": "publish", "ref": 1, "events": batch}))
            answer = await _reply(ws, 1)
        return list(answer["results"])

    async def wait_for_change(
        self,
        filter_: dict[str, Any],
        cursor: str | None,
        wait_seconds: float,
        max_changes: int,
        where: Any = None,
    ) -> Wait:
        """The changes matching ``filter_`` after ``cursor`` (or after now), waiting up
        to ``wait_seconds`` for the first, and the cursor to pass next time."""
        frame: dict[str, Any] = {"type": "subscribe", "ref": 1, "sub": "w", "filter": filter_}
        if cursor:
            frame["from"] = cursor
        if where is not None:
            frame["where"] = where
        if self.waits is None:
            return await self._wait(frame, cursor, wait_seconds, max_changes)
        try:
            self.waits.acquire_nowait()
        except anyio.WouldBlock:
            raise ToolError(
                f"too many wait_for_change calls in progress on this hub "
                f"({self.waits.total_tokens:g}); retry in a moment",
                code="unavailable",
            ) from None
        try:
            return await self._wait(frame, cursor, wait_seconds, max_changes)
        finally:
            self.waits.release()

    async def _wait(
        self, frame: dict[str, Any], cursor: str | None, wait_seconds: float, max_changes: int
    ) -> Wait:
        async with await self.connect() as ws:
            await ws.send(json.dumps(frame))
            return await _collect(ws, cursor, wait_seconds, max_changes)


async def _reply(ws: ClientConnection, ref: int) -> dict[str, Any]:
    """The answer to request ``ref``; an ``error`` frame raises :class:`ToolError`."""
    with anyio.fail_after(NATIVE_TIMEOUT):
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("ref") != ref:
                continue
            if frame["type"] == "error":
                raise ToolError(frame.get("message", ""), code=frame.get("code", "error"))
            return dict(frame)


async def _collect(
    ws: ClientConnection, cursor: str | None, wait_seconds: float, max_changes: int
) -> Wait:
    """Read a ``from`` (or live) subscription's frames until there is something to say.

    The catch-up (everything after ``cursor``) comes first and ends with ``synced``;
    if it had changes they are the answer. Otherwise the first live change ends the
    wait (plus what comes within :data:`SETTLE_SECONDS`), or ``wait_seconds`` does.
    The returned cursor is exact: the last ``synced``/``checkpoint`` cursor advanced
    by the position of each change returned, per partition.
    """
    positions: dict[int, str] = _parse_cursor(cursor or "")
    changes: list[dict[str, Any]] = []
    reset = ""
    synced = False
    deadline = anyio.current_time() + wait_seconds
    settle_at: float | None = None
    try:
        while len(changes) < max_changes:
            now = anyio.current_time()
            until = deadline if settle_at is None else min(deadline, settle_at)
            if synced and now >= until:
                break
            # Before ``synced`` the catch-up is still coming: wait for it whatever
            # the timeout (bounded by the native timeout).
            wait = until - now if synced else NATIVE_TIMEOUT
            with anyio.move_on_after(max(wait, 0)):
                frame = json.loads(await ws.recv())
                kind = frame["type"]
                if kind == "error":
                    raise ToolError(frame.get("message", ""), code=frame.get("code", "error"))
                if kind == "subscribed" and frame.get("cursor"):
                    positions = _parse_cursor(frame["cursor"])
                    synced = True
                elif kind in ("synced", "checkpoint"):
                    positions = _parse_cursor(frame["cursor"])
                    if kind == "synced":
                        synced = True
                        if (changes or reset) and settle_at is None:
                            settle_at = anyio.current_time()  # the catch-up is the answer
                elif kind == "reset":
                    reset = frame.get("reason", "reset")
                    changes.clear()
                elif kind in ("delta", "deleted", "left") and not reset:
                    changes.append(_change(frame))
                    position = frame.get("position")
                    if position and not frame.get("conflated"):
                        positions[_partition(position)] = position
                    if synced and settle_at is None:
                        settle_at = anyio.current_time() + SETTLE_SECONDS
                continue
            if not synced:
                raise ToolError("the hub did not answer the subscription", code="unavailable")
    except websockets.ConnectionClosed as exc:
        raise ToolError(f"the hub closed the connection: {exc}", code="unavailable") from None
    next_cursor = ",".join(positions[p] for p in sorted(positions))
    timed_out = not changes and not reset
    return Wait(changes, next_cursor, timed_out, bool(reset), reset)


def _change(frame: dict[str, Any]) -> dict[str, Any]:
    """A delta frame as a tool reports it."""
    if frame["type"] in ("deleted", "left"):
        kind = frame["type"]
    elif frame.get("entered"):
        kind = "entered"  # started matching a where: ``set`` is its whole state
    elif frame.get("created"):
        kind = "created"
    else:
        kind = "updated"
    change: dict[str, Any] = {"id": frame["id"], "kind": kind}
    if kind not in ("deleted", "left"):
        change["set"] = frame.get("set", {})
    change.update(
        base=frame.get("base"),
        version=frame.get("version"),
        lastUpdated=frame.get("lastUpdated"),
    )
    if "expiresAt" in frame:  # the event moved the lease: a deadline, or None (removed)
        change["expiresAt"] = frame["expiresAt"]
    if frame.get("reason"):
        change["reason"] = frame["reason"]
    return change


def _partition(position: str) -> int:
    head, colon, _ = position.partition(":")
    return int(head) if colon else 0


def _parse_cursor(text: str) -> dict[int, str]:
    return {_partition(part): part for part in text.split(",") if part}


def _entity_path(entity_id: str) -> str:
    if not entity_id:
        raise ToolError("entity_id must not be empty", code="invalid")
    return "/api/state/entities/" + quote(entity_id, safe="")


def _list_cursor(entity_id: str) -> str:
    """REST's listing cursor after ``entity_id`` (``X-Next-Cursor``: base64url of the
    last id, hub/api/common.py ``encode_cursor``)."""
    return base64.urlsafe_b64encode(entity_id.encode()).rstrip(b"=").decode()


def _literal_prefix(glob: str) -> str:
    """The part of a glob before its first wildcard: every match starts with it."""
    for index, char in enumerate(glob):
        if char in "*?[":
            return glob[:index]
    return glob
