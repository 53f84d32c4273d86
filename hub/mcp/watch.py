"""Resource subscriptions of one MCP session: ``notifications/resources/updated`` when a
subscribed entity changes.

The watcher holds one native WebSocket to the hub (opened at the first
``resources/subscribe``, with that request's token) and one native subscription per
subscribed entity (live, ``ids: [id]``). Each ``delta`` or ``deleted`` of one becomes a
notification of its URI. If the connection drops, it is opened again and every
subscription resumes from its cursor (native ``from``), so no change goes unnotified;
a ``reset`` (the log no longer reaches back) is notified too, since the entity may
have changed.

Bounds: :data:`MAX_RESOURCE_SUBSCRIPTIONS` per session (the native protocol's own
limit per connection); the SDK bounds the sessions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from typing import TYPE_CHECKING, Any

import anyio
import websockets
from pydantic import AnyUrl

from .backend import ToolError

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from mcp.server.session import ServerSession
    from websockets.asyncio.client import ClientConnection

    from .backend import Backend

__all__ = ["MAX_RESOURCE_SUBSCRIPTIONS", "Watcher"]

logger = logging.getLogger("hub.mcp")

#: Resource subscriptions one MCP session may hold.
MAX_RESOURCE_SUBSCRIPTIONS = 100
#: Longest pause between attempts to reopen the watcher's connection (seconds).
MAX_BACKOFF = 5.0


class _Sub:
    __slots__ = ("cursor", "entity_id", "name")

    def __init__(self, name: str, entity_id: str) -> None:
        self.name = name
        self.entity_id = entity_id
        #: Partition -> position: where a resumed subscription starts.
        self.cursor: dict[int, str] = {}

    def frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "type": "subscribe",
            "sub": self.name,
            "filter": {"ids": [self.entity_id]},
        }
        if self.cursor:
            frame["from"] = ",".join(self.cursor[p] for p in sorted(self.cursor))
        return frame


class Watcher:
    """One session's resource subscriptions (see the module docstring)."""

    def __init__(self, tg: TaskGroup) -> None:
        self.tg = tg
        self.subs: dict[str, _Sub] = {}
        self.backend: Backend | None = None
        self.session: ServerSession | None = None
        self._ws: ClientConnection | None = None
        self._running = False
        self._connected = anyio.Event()

    async def subscribe(
        self, uri: str, entity_id: str, backend: Backend, session: ServerSession
    ) -> None:
        """Start notifying ``uri``'s changes (idempotent)."""
        if uri in self.subs:
            return
        if len(self.subs) >= MAX_RESOURCE_SUBSCRIPTIONS:
            raise ToolError(
                f"too many resource subscriptions: at most {MAX_RESOURCE_SUBSCRIPTIONS} "
                "per session; unsubscribe some first",
                code="too_many_subscriptions",
            )
        try:
            await backend.get(entity_id)  # REST's answer to a reader without access
        except ToolError as exc:
            if exc.status != 404:  # one that does not exist yet may be watched
                raise
        if self.backend is None:
            self.backend = backend
            self.session = session
        sub = _Sub(uri, entity_id)
        self.subs[uri] = sub
        if not self._running:
            self._running = True
            self.tg.start_soon(self._run)
        with anyio.fail_after(15):
            await self._connected.wait()
        ws = self._ws
        if ws is not None:
            # Live from now: the subscription's cursor comes with ``subscribed``.
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(json.dumps(sub.frame()))

    async def unsubscribe(self, uri: str) -> None:
        sub = self.subs.pop(uri, None)
        ws = self._ws
        if sub is not None and ws is not None:
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(json.dumps({"type": "unsubscribe", "sub": sub.name}))

    async def close(self) -> None:
        self.subs.clear()
        if self._ws is not None:
            await self._ws.close()

    async def _run(self) -> None:
        attempt = 0
        assert self.backend is not None
        while self.subs:
            try:
                ws = await self.backend.connect()
            except ToolError as exc:
                delay = random.uniform(0, min(MAX_BACKOFF, 0.1 * 2**attempt))
                logger.info("resource watcher: %s; retrying in %.2f s", exc, delay)
                attempt += 1
                await anyio.sleep(delay)
                continue
            attempt = 0
            try:
                async with ws:
                    self._ws = ws
                    if self._connected.is_set():  # a reconnection: resume every subscription
                        for sub in list(self.subs.values()):
                            await ws.send(json.dumps(sub.frame()))
                    self._connected.set()
                    async for data in ws:
                        await self._on_frame(json.loads(data))
            except websockets.ConnectionClosed as exc:
                logger.info("resource watcher: connection lost: %s", exc)
            finally:
                self._ws = None
        self._running = False

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        sub = self.subs.get(frame.get("sub") or "")
        if sub is None:
            if frame.get("type") == "error":
                logger.info("resource watcher: %s: %s", frame.get("code"), frame.get("message"))
            return
        kind = frame["type"]
        if kind in ("subscribed", "synced", "checkpoint") and frame.get("cursor"):
            sub.cursor = _cursor(frame["cursor"])
        elif kind in ("delta", "deleted", "reset"):
            position = frame.get("position")
            if position and not frame.get("conflated") and sub.cursor:
                head, colon, _ = position.partition(":")
                sub.cursor[int(head) if colon else 0] = position
            if kind == "reset":
                sub.cursor = {}
            assert self.session is not None
            await self.session.send_resource_updated(AnyUrl(sub.name))
        elif kind == "error":
            # The hub ended this subscription (its token's namespace was deleted, …).
            self.subs.pop(sub.name, None)
            logger.info("resource subscription %s ended: %s", sub.name, frame.get("message"))


def _cursor(text: str) -> dict[int, str]:
    found: dict[int, str] = {}
    for part in text.split(","):
        if part:
            head, colon, _ = part.partition(":")
            found[int(head) if colon else 0] = part
    return found
