"""A minimal native-protocol client for tests: frames in and out, a checked replica.

:class:`Replica` applies snapshot and delta frames the way a correct client must, and
*asserts* the protocol's promises while doing so: every delta's ``base`` equals the
version held; an entity not held is only ever created; no delta arrives twice.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack
import websockets
from websockets.asyncio.client import ClientConnection

from .conftest import timeout

if TYPE_CHECKING:
    import httpx

JSON_PROTOCOL = "flux.v1"
MSGPACK_PROTOCOL = "flux.v1.msgpack"


class Native:
    """One native connection, in either encoding."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.binary = ws.subprotocol == MSGPACK_PROTOCOL
        #: Frames read while waiting for a reply, returned first by recv().
        self.backlog: deque[dict[str, Any]] = deque()

    @classmethod
    async def connect(cls, url: str, protocol: str = JSON_PROTOCOL, **kwargs: Any) -> Native:
        ws = await websockets.connect(url, subprotocols=[protocol], **kwargs)  # type: ignore[list-item]
        assert ws.subprotocol == protocol
        return cls(ws)

    async def send(self, frame: dict[str, Any]) -> None:
        if self.binary:
            await self.ws.send(msgpack.packb(frame, use_bin_type=True))
        else:
            await self.ws.send(json.dumps(frame))

    async def recv(self, wait: float = 5.0) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.popleft()
        return await self._read(wait)

    async def _read(self, wait: float) -> dict[str, Any]:
        data = await asyncio.wait_for(self.ws.recv(), timeout(wait))
        frame: dict[str, Any] = (
            msgpack.unpackb(data) if isinstance(data, bytes) else json.loads(data)
        )
        return frame

    async def recv_type(self, kind: str, wait: float = 5.0) -> dict[str, Any]:
        """The next frame of a type (others are dropped, and so are deltas of the
        hub's own ``flux-core/…`` entities, which any hub may write at any moment)."""
        while True:
            frame = await self.recv(wait)
            if frame["type"] == kind and not str(frame.get("id", "")).startswith("flux-core/"):
                return frame

    async def request(self, frame: dict[str, Any], reply: str) -> dict[str, Any]:
        """Send a frame with a fresh ref; return the reply of that type and ref."""
        ref = frame.setdefault("ref", id(frame))
        await self.send(frame)
        while True:
            got = await self._read(5.0)
            if got["type"] in (reply, "error") and got.get("ref") == ref:
                return got
            self.backlog.append(got)

    async def publish(self, *events: dict[str, Any]) -> list[dict[str, Any]]:
        ack = await self.request({"type": "publish", "events": list(events)}, "ack")
        assert ack["type"] == "ack", ack
        results: list[dict[str, Any]] = ack["results"]
        return results

    async def close(self) -> None:
        await self.ws.close()


def event(entity: str, **props: Any) -> dict[str, Any]:
    return {"stream": "t", "source": "test", "payload": {"entity_id": entity, "properties": props}}


@dataclass
class Held:
    version: int
    properties: dict[str, Any]


@dataclass
class Replica:
    """A client-side copy of a subscription's entities, checking every step."""

    entities: dict[str, Held] = field(default_factory=dict)
    #: partition -> position text, as the cursor the client would resume from.
    cursor: dict[int, str] = field(default_factory=dict)
    deltas: int = 0
    resets: int = 0
    #: Whether a ``synced`` (or ``checkpoint``) came: only then does the cursor name
    #: every partition, so that a resume from it can succeed.
    synced: bool = False

    def cursor_text(self) -> str:
        return ",".join(self.cursor[p] if p == 0 else self.cursor[p] for p in sorted(self.cursor))

    def set_cursor(self, text: str) -> None:
        self.cursor = {}
        for part in text.split(","):
            self.cursor[_partition(part)] = part

    def apply(self, frame: dict[str, Any]) -> None:
        """Apply one server frame (others than these are ignored)."""
        kind = frame["type"]
        if kind == "reset":
            self.resets += 1
            self.entities.clear()
        elif kind == "snapshot":
            for e in frame["entities"]:
                self.entities[e["id"]] = Held(e["version"], dict(e["properties"]))
        elif kind in ("synced", "checkpoint"):
            self.set_cursor(frame["cursor"])
            self.synced = True
        elif kind == "delta":
            self.deltas += 1
            held = self.entities.get(frame["id"])
            if held is None:
                assert frame.get("created"), (
                    f"gap: delta for {frame['id']} that is not held: {frame}"
                )
                self.entities[frame["id"]] = Held(frame["version"], dict(frame["set"]))
            else:
                assert frame["base"] == held.version, (
                    f"gap or duplicate: held {held.version}, got {frame}"
                )
                if frame.get("created"):
                    held.properties = dict(frame["set"])
                else:
                    held.properties.update(frame["set"])
                held.version = frame["version"]
            if not frame.get("conflated"):
                self.cursor[_partition(frame["position"])] = frame["position"]
        elif kind == "deleted":
            self.deltas += 1
            held = self.entities.pop(frame["id"], None)
            assert held is not None, f"deletion of {frame['id']}, which is not held"
            assert frame["base"] == held.version, (
                f"gap or duplicate: held {held.version}, got {frame}"
            )
            if not frame.get("conflated"):
                self.cursor[_partition(frame["position"])] = frame["position"]

    def state(self) -> dict[str, tuple[int, dict[str, Any]]]:
        return {i: (h.version, h.properties) for i, h in self.entities.items()}


def _partition(position: str) -> int:
    head, colon, _ = position.partition(":")
    return int(head) if colon else 0


async def rest_state(base_url: str, prefix: str = "") -> dict[str, tuple[int, dict[str, Any]]]:
    """Every entity the REST API shows (id -> (version, properties))."""
    import httpx

    async with httpx.AsyncClient(base_url=base_url, timeout=timeout(30)) as http:
        reply = await http.get("/api/state/entities", params={"prefix": prefix})
    return {e["id"]: (e["version"], e["properties"]) for e in reply.json()}


async def rest_publish(
    http: httpx.AsyncClient,
    entity_id: str,
    properties: dict[str, Any],
    *,
    stream: str = "s",
    source: str = "t",
) -> None:
    """Publish one event with ``POST /api/events``; asserts the hub took it."""
    event = {
        "stream": stream,
        "source": source,
        "payload": {"entity_id": entity_id, "properties": properties},
    }
    reply = await http.post("/api/events", json=event)
    assert reply.status_code == 200, reply.text
