"""Native subscriptions with a value filter (``where``): entries, ``left``, resume.

Real hub, real Redis, real websockets. A :class:`View` folds the frames as
docs/protocol.md tells a client to, and is compared with REST's ``?where=`` listing.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import TYPE_CHECKING, Any

import pytest

from hub.transport import native_sync

from .native_client import Native, event

if TYPE_CHECKING:
    import httpx

WHERE = {"status": "open", "load": {"lt": 5}}


class View:
    """A client's view of a where subscription."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[int, dict[str, Any]]] = {}
        self.cursor: str | None = None
        self.frames: list[dict[str, Any]] = []

    def apply(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        self.frames.append(frame)
        if kind == "reset":
            self.held.clear()
        elif kind == "snapshot":
            for e in frame["entities"]:
                self.held[e["id"]] = (e["version"], e["properties"])
        elif kind in ("synced", "checkpoint"):
            self.cursor = frame["cursor"]
        elif kind == "delta":
            if frame.get("created"):
                self.held[frame["id"]] = (frame["version"], dict(frame["set"]))
            else:
                version, props = self.held[frame["id"]]
                assert version == frame["base"], frame
                self.held[frame["id"]] = (frame["version"], {**props, **frame["set"]})
        elif kind in ("deleted", "left"):
            self.held.pop(frame["id"], None)
        if kind in ("delta", "deleted", "left") and not frame.get("conflated"):
            self.cursor = frame["position"]  # (one partition in these tests)

    async def read_until_synced(self, client: Native) -> None:
        while True:
            frame = await client.recv()
            self.apply(frame)
            if frame["type"] == "synced":
                return

    async def read_quiet(self, client: Native, wait: float = 0.3) -> None:
        """Every frame until none comes for ``wait`` seconds."""
        while True:
            try:
                frame = await client.recv(wait)
            except TimeoutError:
                return
            self.apply(frame)


async def rest_view(http: httpx.AsyncClient, where: Any, prefix: str) -> dict[str, Any]:
    reply = await http.get(
        "/api/state/entities", params={"where": json.dumps(where), "prefix": prefix}
    )
    assert reply.status_code == 200, reply.text
    return {e["id"]: (e["version"], e["properties"]) for e in reply.json()}


async def test_where_subscription_sends_entries_and_lefts(ws_url: str) -> None:
    writer = await Native.connect(ws_url)
    reader = await Native.connect(ws_url)
    try:
        await writer.publish(
            event("crew/t1", status="open", load=1),
            event("crew/t2", status="done", load=1),
            event("crew/t3", status="open", load=9),
        )
        await reader.send(
            {
                "type": "subscribe",
                "sub": "open",
                "filter": {"namespaces": ["crew"]},
                "where": WHERE,
                "snapshot": True,
            }
        )
        view = View()
        await view.read_until_synced(reader)
        assert [f["type"] for f in view.frames] == ["subscribed", "snapshot", "snapshot", "synced"]
        assert view.held == {"crew/t1": (1, {"status": "open", "load": 1})}

        await writer.publish(event("crew/t2", status="open"))  # enters
        frame = await reader.recv_type("delta")
        assert frame["id"] == "crew/t2"
        assert (frame["created"], frame["entered"]) == (True, True)
        assert frame["set"] == {"status": "open", "load": 1}
        assert (frame["base"], frame["version"]) == (1, 2)

        await writer.publish(event("crew/t3", owner="w1"))  # a non-member: nothing
        await writer.publish(event("crew/t1", load=7))  # leaves
        frame = await reader.recv()
        assert frame["type"] == "left", frame
        assert {k: frame[k] for k in ("sub", "id", "base", "version")} == {
            "sub": "open",
            "id": "crew/t1",
            "base": 1,
            "version": 2,
        }
        assert "position" in frame
        await writer.publish(event("crew/t2", owner="w2"))  # a member: the delta as is
        frame = await reader.recv()
        assert frame["type"] == "delta"
        assert (frame["id"], frame["set"], "created" in frame) == (
            "crew/t2",
            {"owner": "w2"},
            False,
        )
    finally:
        await writer.close()
        await reader.close()


async def test_where_subscription_refuses_a_bad_where(ws_url: str) -> None:
    client = await Native.connect(ws_url)
    try:
        frame = {"type": "subscribe", "sub": "s", "filter": {"all": True}}
        reply = await client.request({**frame, "where": {"load": {"lt": [1]}}}, "subscribed")
        assert reply["type"] == "error"
        assert (reply["code"], reply["message"]) == (
            "bad_frame",
            "where.load.lt: 'lt' needs a number or a string",
        )
        # Nothing was registered: the name is free.
        reply = await client.request({**frame, "where": {"load": {"lt": 1}}}, "subscribed")
        assert reply["type"] == "subscribed"
        assert "cursor" not in reply  # a live where subscription gets it with synced
        assert (await client.recv_type("synced"))["sub"] == "s"
    finally:
        await client.close()


async def test_where_subscription_over_its_bound_ends_with_too_large(
    ws_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(native_sync, "MAX_VIEW_ENTITIES", 2)
    client = await Native.connect(ws_url)
    try:
        await client.publish(event("big/a", n=1), event("big/b", n=1))
        await client.send(
            {"type": "subscribe", "sub": "s", "filter": {"prefixes": ["big/"]}, "where": {"n": 1}}
        )
        assert (await client.recv_type("synced"))["sub"] == "s"
        await client.publish(event("big/c", n=1))
        error = await client.recv_type("error")
        assert (error["code"], error["sub"]) == ("too_large", "s")
        assert "at most 2; narrow the filter" in error["message"]
        await client.publish(event("big/d", n=1), event("big/e", n=1), event("big/f", n=1))
        await client.send(
            {"type": "subscribe", "sub": "t", "filter": {"prefixes": ["big/"]}, "where": {"n": 1}}
        )
        error = await client.recv_type("error")
        assert (error["code"], error["sub"]) == ("too_large", "t")
    finally:
        await client.close()


async def test_where_view_equals_the_query_live_and_after_resume(
    ws_url: str, http: httpx.AsyncClient
) -> None:
    rng = random.Random(13)
    ids = [f"rnd/e{i}" for i in range(12)]

    def random_events(count: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(count):
            entity = rng.choice(ids)
            if rng.random() < 0.1:
                out.append(event(entity, __deleted__=True))
            else:
                props = {
                    "status": rng.choice(["open", "done"]),
                    "load": rng.randrange(10),
                    "x": rng.randrange(3),
                }
                keys = rng.sample(sorted(props), rng.randint(1, 3))
                out.append(event(entity, **{k: props[k] for k in keys}))
        return out

    writer = await Native.connect(ws_url)
    reader = await Native.connect(ws_url)
    try:
        await writer.publish(*random_events(30))
        subscribe = {
            "type": "subscribe",
            "sub": "q",
            "filter": {"prefixes": ["rnd/"]},
            "where": WHERE,
        }
        await reader.send({**subscribe, "snapshot": True})
        view = View()
        # Writes go on while the snapshot is read.
        await asyncio.gather(view.read_until_synced(reader), writer.publish(*random_events(40)))
        for _ in range(5):
            await writer.publish(*random_events(10))
        await view.read_quiet(reader)
        assert view.held == await rest_view(http, WHERE, "rnd/")
        kinds = {f["type"] for f in view.frames}
        assert {"left", "delta"} <= kinds

        # Disconnect at the last cursor; the world moves on; resume.
        cursor = view.cursor
        assert cursor is not None
        await reader.close()
        before = len(view.frames)
        for _ in range(4):
            await writer.publish(*random_events(10))
        reader = await Native.connect(ws_url)
        await reader.send({**subscribe, "from": cursor})
        await asyncio.gather(view.read_until_synced(reader), writer.publish(*random_events(20)))
        await view.read_quiet(reader)
        assert view.held == await rest_view(http, WHERE, "rnd/")
        refreshed = [f for f in view.frames[before:] if f.get("entered") or f["type"] == "left"]
        assert refreshed, view.frames[before:]
    finally:
        await writer.close()
        await reader.close()


async def test_subscriptions_sharing_a_where_each_get_their_frames(
    ws_url: str, http: httpx.AsyncClient
) -> None:
    # Equal filters share one object on the hub (its answers remembered per entity
    # version); each subscription still gets exactly its own view.
    writer = await Native.connect(ws_url)
    readers = [await Native.connect(ws_url) for _ in range(3)]
    try:
        await writer.publish(event("sh/a", status="open", load=1))
        views = [View() for _ in readers]
        subscribe = {"type": "subscribe", "sub": "s", "filter": {"prefixes": ["sh/"]}}
        for n, reader in enumerate(readers):
            # The second subscribes with the same filter written otherwise (key order).
            where = {"load": {"lt": 5}, "status": "open"} if n == 1 else WHERE
            await reader.send({**subscribe, "where": where, "snapshot": n != 2})
            await views[n].read_until_synced(reader)
        await writer.publish(event("sh/b", status="open", load=2))
        await writer.publish(event("sh/a", load=6))
        await writer.publish(event("sh/b", load=3))
        for reader, view in zip(readers, views, strict=True):
            await view.read_quiet(reader)
        expected = await rest_view(http, WHERE, "sh/")
        assert views[0].held == views[1].held == expected
        # The live one (no snapshot) holds what arrived since: b's entry and delta.
        assert views[2].held == expected
        assert [f["type"] for f in views[2].frames if f["type"] in ("delta", "left")] == [
            "delta",
            "left",
            "delta",
        ]
    finally:
        await writer.close()
        for reader in readers:
            await reader.close()
