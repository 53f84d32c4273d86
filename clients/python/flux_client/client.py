"""The async client: one WebSocket to a hub, kept open, with everything on top.

Reliability, in short:

- The connection is re-opened with exponential backoff and full jitter whenever it
  drops; calls made meanwhile wait (up to ``request_timeout``).
- Every event gets its ``eventId`` here, before it is first sent: a publish whose reply
  was lost is sent again, identical, and the hub acknowledges it as a duplicate instead
  of applying it twice.
- Every subscription keeps its cursor (``synced``/``checkpoint`` frames, delta
  positions) and resumes from it; one that never had an exact cursor starts over with
  a snapshot (its consumers see a ``reset`` first).

Backpressure: each subscription buffers at most ``queue_size`` updates; past that the
client stops reading the socket, the hub conflates or closes with 1013, and the client
resumes — a slow consumer costs neither side unbounded memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import uuid
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import msgpack
import websockets
from websockets.typing import Subprotocol

from .errors import ClientClosed, ConflictError, PublishError, RequestError
from .model import Ack, Entity, Update
from .presence import Heartbeat

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Mapping

    from websockets.asyncio.client import ClientConnection

__all__ = ["FluxClient", "Subscription", "make_event"]

logger = logging.getLogger("flux_client")

JSON = "flux.v1"
MSGPACK = "flux.v1.msgpack"

State = Literal["idle", "connecting", "open", "reconnecting", "closed"]


def make_event(
    entity_id: str,
    properties: Mapping[str, Any],
    *,
    stream: str = "sdk",
    source: str = "python-sdk",
    event_id: str | None = None,
    if_version: int | None = None,
    timestamp: int | None = None,
    ttl: float | None = None,
) -> dict[str, Any]:
    """A Flux event envelope, with a fresh ``eventId`` unless one is given (``ttl``: a
    lease in seconds, docs/semantics.md "Leases"; 0 removes one)."""
    event: dict[str, Any] = {
        "eventId": event_id or str(uuid.uuid4()),
        "stream": stream,
        "source": source,
        "payload": {"entity_id": entity_id, "properties": dict(properties)},
    }
    if timestamp is not None:
        event["timestamp"] = timestamp
    if if_version is not None:
        event["if_version"] = if_version
    if ttl is not None:
        event["ttl"] = ttl
    return event


class _Pending:
    __slots__ = ("frame", "future", "generation", "reply")

    def __init__(
        self, frame: dict[str, Any], reply: str, future: asyncio.Future[dict[str, Any]]
    ) -> None:
        self.frame = frame
        self.reply = reply
        self.future = future
        self.generation = -1


class Subscription:
    """A live subscription: an async iterator of :class:`Update`.

    Use ``async with`` (or call :meth:`close`) to end it.
    """

    def __init__(
        self,
        client: FluxClient,
        sub: str,
        filter_: dict[str, Any],
        *,
        snapshot: bool,
        properties: list[str] | None,
        queue_size: int,
        where: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.sub = sub
        self.filter = filter_
        self.snapshot = snapshot
        self.properties = properties
        #: The value filter (docs/protocol.md, Value filters), or None.
        self.where = where
        #: Partition -> last position the subscription is known to be complete up to.
        self.cursor: dict[int, str] = {}
        #: True once the cursor is exact (after ``synced``); a resume needs it.
        self.synced = False
        self.closed = False
        #: Set once the hub answered the first subscribe; until then a reconnection
        #: resends that request itself, not the subscription.
        self.active = False
        self._queue: asyncio.Queue[Update | BaseException] = asyncio.Queue(queue_size)

    # ------------------------------------------------------------------ iteration

    def __aiter__(self) -> AsyncIterator[Update]:
        return self

    async def __anext__(self) -> Update:
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, StopAsyncIteration):
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Unsubscribe and end the iteration."""
        if self.closed:
            return
        self.closed = True
        self.client._subscriptions.pop(self.sub, None)
        with contextlib.suppress(RequestError, ClientClosed, TimeoutError):
            if self.client.state == "open":
                await self.client._request(
                    {"type": "unsubscribe", "sub": self.sub}, "unsubscribed", wait=5
                )
        self._queue.put_nowait(StopAsyncIteration())

    # ------------------------------------------------------------------ protocol

    def subscribe_frame(self) -> dict[str, Any]:
        """The frame that (re)starts this subscription where it is."""
        frame: dict[str, Any] = {"type": "subscribe", "sub": self.sub, "filter": self.filter}
        if self.properties is not None:
            frame["properties"] = self.properties
        if self.where is not None:
            frame["where"] = self.where
        if self.synced and self.cursor:
            frame["from"] = ",".join(self.cursor[p] for p in sorted(self.cursor))
        elif self.snapshot:
            frame["snapshot"] = True
        return frame

    async def restart(self) -> None:
        """Called on reconnect, before the subscribe frame is sent again."""
        if self.snapshot and not (self.synced and self.cursor):
            # The snapshot was interrupted: consumers must drop what they got of it.
            await self._queue.put(Update("reset"))

    async def on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "snapshot":
            for value in frame["entities"]:
                entity = Entity.from_frame(value)
                # ``changes`` is the whole state: an entity seen first in a snapshot
                # is, to this subscriber, all new (an empty dict read as an empty entity).
                await self._queue.put(
                    Update(
                        "snapshot",
                        entity.id,
                        changes=dict(entity.properties),
                        version=entity.version,
                        last_updated=entity.last_updated,
                        entity=entity,
                        expires_at=entity.expires_at,
                        lease_news=True,
                    )
                )
        elif kind in ("delta", "deleted", "left"):
            position = frame.get("position")
            conflated = bool(frame.get("conflated"))
            created = bool(frame.get("created"))
            await self._queue.put(
                Update(
                    kind,
                    frame["id"],
                    changes=dict(frame.get("set", {})),
                    base=frame["base"],
                    version=frame["version"],
                    created=created,
                    last_updated=frame.get("lastUpdated", ""),
                    position=position,
                    conflated=conflated,
                    reason=frame.get("reason", ""),
                    # Absent: as it was; null: removed; on a creation, absent is none.
                    expires_at=frame.get("expiresAt"),
                    lease_news=kind == "delta" and (created or "expiresAt" in frame),
                )
            )
            if position and not conflated and self.synced:
                self.cursor[_partition(position)] = position
        elif kind in ("synced", "checkpoint"):
            self.cursor = _parse_cursor(frame["cursor"])
            self.synced = True
            if kind == "synced":
                await self._queue.put(Update("synced"))
        elif kind == "subscribed" and frame.get("cursor"):
            self.cursor = _parse_cursor(frame["cursor"])
            self.synced = True
        elif kind == "reset":
            self.synced = False
            self.cursor = {}
            await self._queue.put(Update("reset"))
        elif kind == "error":
            await self._queue.put(
                RequestError(frame.get("code", "error"), frame.get("message", ""))
            )


class FluxClient:
    """An async client of one hub.

    Args:
        url: the hub's base URL (``http://host:3000``; ``ws://`` works too).
        token: a namespace (or admin) token, sent on every connection and request.
        encoding: ``"msgpack"`` (default) or ``"json"``.
        source: the ``source`` of events published without one.
        request_timeout: seconds a call may wait for its reply, reconnections
            included; None waits as long as it takes.
        backoff: ``(first, longest)`` delay in seconds between reconnection attempts.
        queue_size: updates buffered per subscription.

    Use as ``async with FluxClient(url) as flux:``.
    """

    def __init__(
        self,
        url: str = "http://localhost:3000",
        *,
        token: str | None = None,
        encoding: Literal["msgpack", "json"] = "msgpack",
        source: str = "python-sdk",
        request_timeout: float | None = 60.0,
        backoff: tuple[float, float] = (0.1, 5.0),
        queue_size: int = 10_000,
    ) -> None:
        self.base_url, self.ws_url = _urls(url)
        self.token = token
        self.protocol = MSGPACK if encoding == "msgpack" else JSON
        self.source = source
        self.request_timeout = request_timeout
        self.backoff = backoff
        self.queue_size = queue_size
        self.state: State = "idle"
        #: Connections opened so far (the first is 1).
        self.generation = 0
        self._ws: ClientConnection | None = None
        self._open = asyncio.Event()
        self._pending: dict[int, _Pending] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._refs = itertools.count(1)
        self._subs = itertools.count(1)
        self._runner: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        #: Why the latest connection attempt failed (None once one succeeded).
        self._last_error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        return self.state == "closed"

    async def __aenter__(self) -> FluxClient:
        try:
            await self.connect()
        except BaseException:
            await self.close()  # else its runner would go on reconnecting, owned by no one
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Start connecting (and stay connected); returns once the first connection is open.

        Raises:
            TimeoutError: no connection within ``request_timeout``; its message says why
                the latest attempt failed (refused, unknown host, an HTTP status…).
        """
        if self._runner is None:
            self.state = "connecting"
            self._runner = asyncio.create_task(self._run(), name="flux-client")
        try:
            await asyncio.wait_for(self._open.wait(), self.request_timeout)
        except TimeoutError:
            why = f" (last attempt: {self._last_error})" if self._last_error else ""
            raise TimeoutError(
                f"no connection to {self.ws_url} within {self.request_timeout:g} s{why}"
            ) from None

    async def close(self) -> None:
        """Close the connection; waiting calls get :class:`ClientClosed`."""
        self.state = "closed"
        for subscription in list(self._subscriptions.values()):
            subscription.closed = True
            subscription._queue.put_nowait(StopAsyncIteration())
        self._subscriptions.clear()
        ws = self._ws  # the runner forgets it when cancelled
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        if ws is not None:
            await ws.close()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(ClientClosed("the client was closed"))
        self._pending.clear()
        if self._http is not None:
            await self._http.aclose()

    async def _run(self) -> None:
        attempt = 0
        while self.state != "closed":
            try:
                ws = await websockets.connect(
                    self.ws_url,
                    subprotocols=[Subprotocol(self.protocol)],
                    additional_headers=self._auth_headers(),
                    max_size=None,
                    max_queue=None,
                    open_timeout=10,
                )
            except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
                self._last_error = exc
                self.state = "reconnecting" if self.generation else "connecting"
                delay = random.uniform(0, min(self.backoff[1], self.backoff[0] * 2**attempt))
                logger.info(
                    "cannot connect to %s (%s); retrying in %.2f s", self.ws_url, exc, delay
                )
                attempt += 1
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self._last_error = None
            self._ws = ws
            self.generation += 1
            self.state = "open"
            try:
                await self._resume(ws)
                self._open.set()
                await self._read(ws)
            except websockets.ConnectionClosed as exc:
                logger.info("connection to %s lost: %s", self.ws_url, exc)
            finally:
                self._open.clear()
                self._ws = None
                if not self.closed:  # close() may have run meanwhile
                    self.state = "reconnecting"

    async def _resume(self, ws: ClientConnection) -> None:
        """On a new connection: subscriptions first, then requests left unanswered."""
        for subscription in list(self._subscriptions.values()):
            if subscription.active:
                await subscription.restart()
                await ws.send(self._encode(subscription.subscribe_frame()))
        for pending in list(self._pending.values()):
            if pending.generation != self.generation:
                pending.generation = self.generation
                await ws.send(self._encode(pending.frame))

    async def _read(self, ws: ClientConnection) -> None:
        async for data in ws:
            frame = msgpack.unpackb(data) if isinstance(data, bytes) else json.loads(data)
            ref = frame.get("ref")
            pending = self._pending.get(ref) if isinstance(ref, int) else None
            if pending is not None and frame["type"] in (pending.reply, "error"):
                del self._pending[ref]
                if not pending.future.done():
                    pending.future.set_result(frame)
                continue
            sub = frame.get("sub")
            subscription = self._subscriptions.get(sub) if isinstance(sub, str) else None
            if subscription is not None:
                await subscription.on_frame(frame)
            elif frame["type"] == "error":
                logger.warning("hub error: %s: %s", frame.get("code"), frame.get("message"))

    # ------------------------------------------------------------------ requests

    def _encode(self, frame: dict[str, Any]) -> bytes | str:
        if self.protocol == MSGPACK:
            return msgpack.packb(frame, use_bin_type=True)
        return json.dumps(frame)

    async def _request(
        self, frame: dict[str, Any], reply: str, wait: float | None = None
    ) -> dict[str, Any]:
        """Send a frame and wait for its reply, across reconnections."""
        if self.state == "closed":
            raise ClientClosed("the client is closed")
        if self._runner is None:
            await self.connect()
        ref = next(self._refs)
        frame = {**frame, "ref": ref}
        pending = _Pending(frame, reply, asyncio.get_running_loop().create_future())
        self._pending[ref] = pending

        async def deliver() -> dict[str, Any]:
            await self._open.wait()
            ws = self._ws
            if ws is not None and pending.generation != self.generation:
                pending.generation = self.generation
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws.send(self._encode(frame))
            return await pending.future

        try:
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for loses a
            # cancellation that comes as the reply does (the caller's task goes on as
            # if never cancelled: a heartbeat being stopped kept beating).
            async with asyncio.timeout(wait or self.request_timeout):
                answer = await deliver()
        finally:
            self._pending.pop(ref, None)
        if answer["type"] == "error":
            raise RequestError(answer.get("code", "error"), answer.get("message", ""))
        return answer

    async def publish(
        self,
        entity_id: str,
        properties: Mapping[str, Any],
        *,
        stream: str = "sdk",
        source: str | None = None,
        event_id: str | None = None,
        if_version: int | None = None,
        ttl: float | None = None,
    ) -> Ack:
        """Publish one event; returns once the hub applied it (or had before).

        ``ttl``: the entity is deleted (``reason: "expired"``) unless an event with a
        ``ttl`` refreshes it within that many seconds; 0 removes the lease; None leaves
        it as it is. For presence, see :meth:`heartbeat`.

        Raises:
            ConflictError: ``if_version`` did not match.
            PublishError: the hub refused the event.
        """
        event = make_event(
            entity_id,
            properties,
            stream=stream,
            source=source or self.source,
            event_id=event_id,
            if_version=if_version,
            ttl=ttl,
        )
        result = (await self.publish_many([event], raise_on_error=True))[0]
        assert isinstance(result, Ack)
        return result

    async def publish_many(
        self, events: Iterable[Mapping[str, Any]], *, raise_on_error: bool = False
    ) -> list[Ack | PublishError]:
        """Publish events in one frame, in order; one result per event.

        Events without an ``eventId`` get one here, so that a resend after a lost
        connection is recognised by the hub and not applied twice.
        """
        batch = []
        for event in events:
            item = dict(event)
            item.setdefault("eventId", str(uuid.uuid4()))
            item.setdefault("source", self.source)
            batch.append(item)
        answer = await self._request({"type": "publish", "events": batch}, "ack")
        results: list[Ack | PublishError] = []
        for event, result in zip(batch, answer["results"], strict=True):
            if "error" in result:
                error = result["error"]
                failure: PublishError
                if error["code"] == "conflict":
                    failure = ConflictError(
                        error["message"], result.get("eventId"), result.get("version", 0)
                    )
                else:
                    failure = PublishError(
                        error["code"], error["message"], result.get("eventId") or event["eventId"]
                    )
                if raise_on_error:
                    raise failure
                results.append(failure)
            else:
                results.append(
                    Ack(
                        result["eventId"],
                        result["version"],
                        result.get("position"),
                        result.get("status") == "duplicate",
                    )
                )
        return results

    async def delete(self, entity_id: str, *, event_id: str | None = None) -> Ack:
        """Delete an entity (a Flux tombstone event, deduplicated like any publish)."""
        return await self.publish(
            entity_id, {"__deleted__": True}, stream="flux.events.deletions", event_id=event_id
        )

    def heartbeat(
        self,
        entity_id: str,
        properties: Mapping[str, Any],
        *,
        ttl: float,
        every: float | None = None,
        delete_on_exit: bool = True,
        stream: str = "presence",
    ) -> Heartbeat:
        """Keep an entity alive while an ``async with`` block runs: published with
        ``ttl`` at once and every ``every`` seconds (``ttl / 3``), deleted at the end
        (or left to expire, with ``delete_on_exit=False``). See :class:`Heartbeat`."""
        return Heartbeat(
            self,
            entity_id,
            properties,
            ttl=ttl,
            every=every,
            delete_on_exit=delete_on_exit,
            stream=stream,
        )

    async def get(self, *entity_ids: str) -> dict[str, Entity]:
        """The entities that exist among ``entity_ids``."""
        answer = await self._request({"type": "get", "ids": list(entity_ids)}, "entities")
        return {e["id"]: Entity.from_frame(e) for e in answer["entities"]}

    async def list_entities(
        self,
        prefix: str = "",
        *,
        namespace: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> tuple[list[Entity], str | None]:
        """A page of entities in id order, and the cursor of the next page (None: last).

        ``where``: only entities whose values match (docs/protocol.md, Value filters);
        a page may then hold fewer than ``limit`` while the cursor says more may follow.
        """
        frame: dict[str, Any] = {"type": "list", "prefix": prefix, "limit": limit, "cursor": cursor}
        if namespace is not None:
            frame["namespace"] = namespace
        if where is not None:
            frame["where"] = dict(where)
        answer = await self._request(frame, "entities")
        return [Entity.from_frame(e) for e in answer["entities"]], answer.get("next")

    async def history(
        self, entity_id: str, *, limit: int = 100, since: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest events of an entity, newest first (REST ``GET /api/events``)."""
        params: dict[str, Any] = {"entity": entity_id, "limit": limit}
        if since is not None:
            params["since"] = since
        reply = await self._rest().get("/api/events", params=params)
        if reply.status_code != 200:
            raise RequestError(str(reply.status_code), reply.json().get("error", reply.text))
        events: list[dict[str, Any]] = reply.json()
        return events

    def _rest(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.base_url, headers=self._auth_headers(), timeout=30
            )
        return self._http

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    # ------------------------------------------------------------------ subscriptions

    async def subscribe(
        self,
        *,
        all: bool = False,
        ids: Iterable[str] = (),
        prefixes: Iterable[str] = (),
        namespaces: Iterable[str] = (),
        globs: Iterable[str] = (),
        properties: Iterable[str] | None = None,
        snapshot: bool = True,
        where: Mapping[str, Any] | None = None,
    ) -> Subscription:
        """Subscribe to a filter (the union of what is given).

        With ``snapshot`` (default) the subscription starts with every matching
        entity's state, then live updates; without, live updates from now on.

        ``where`` narrows it to entities whose property values match
        (``{"status": "open", "load": {"lt": 5}}``; docs/protocol.md, Value filters):
        an entity that starts matching arrives as a ``created`` delta with its whole
        state, one that stops matching as a ``left`` update.

        Raises:
            RequestError: the hub refused the filter.
        """
        filter_: dict[str, Any] = {}
        if all:
            filter_["all"] = True
        for key, values in (
            ("ids", ids),
            ("prefixes", prefixes),
            ("namespaces", namespaces),
            ("globs", globs),
        ):
            listed = list(values)
            if listed:
                filter_[key] = listed
        sub = f"s{next(self._subs)}"
        subscription = Subscription(
            self,
            sub,
            filter_,
            snapshot=snapshot,
            properties=list(properties) if properties is not None else None,
            queue_size=self.queue_size,
            where=dict(where) if where is not None else None,
        )
        self._subscriptions[sub] = subscription
        frame = subscription.subscribe_frame()
        try:
            answer = await self._request(frame, "subscribed")
        except BaseException:
            self._subscriptions.pop(sub, None)
            raise
        if answer.get("cursor"):
            subscription.cursor = _parse_cursor(answer["cursor"])
            subscription.synced = True
        subscription.active = True
        return subscription


def _urls(url: str) -> tuple[str, str]:
    """``(http base URL, WebSocket URL of /api/ws)`` from what the user gave."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    base = urlunsplit((scheme, parts.netloc, "", "", ""))
    ws_scheme = "wss" if scheme == "https" else "ws"
    return base, urlunsplit((ws_scheme, parts.netloc, "/api/ws", "", ""))


def _partition(position: str) -> int:
    head, colon, _ = position.partition(":")
    return int(head) if colon else 0


def _parse_cursor(text: str) -> dict[int, str]:
    return {_partition(part): part for part in text.split(",") if part}


def entity_path(entity_id: str) -> str:
    """The REST path of an entity (``/`` percent-encoded, as Flux clients do)."""
    return "/api/state/entities/" + quote(entity_id, safe="")
