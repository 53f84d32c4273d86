"""A slow subscriber's ``synced`` never overtakes the merged deltas its cursor covers.

The snapshot fills the socket, deltas arrive and are merged while it is full, and the
hand-off to live happens meanwhile. Were ``synced`` sent at once, its cursor would be
past merged deltas still waiting to go out: a client dropping the connection right
after it and resuming from that cursor would never get them. The hub holds ``synced``
until they are sent (:meth:`hub.core.session.outbox.Outbox.may_send_synced`).
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx
import websockets

from hub.store import Store

from .conftest import make_settings, running_hub, timeout
from .native_client import JSON_PROTOCOL, Native, Replica, rest_state

ENTITIES = 4000
#: A property of about 1 KB: the snapshot, one page of ~4 MB, is past what the kernel
#: buffers on loopback, so the hub's socket is still full when the hand-off happens.
FILLER = "x" * 1000


def _event(n: int, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "stream": "s",
        "source": "t",
        "payload": {"entity_id": f"big/{n:04}", "properties": properties},
    }


async def test_synced_comes_after_the_deltas_merged_while_the_snapshot_was_read(
    store: Store, key_prefix: str
) -> None:
    settings = make_settings(
        key_prefix, fanout={"conflate_after_bytes": 16_384, "snapshot_page": ENTITIES}
    )
    async with running_hub(settings, store) as hub:
        base = f"http://127.0.0.1:{hub.port}"
        async with httpx.AsyncClient(base_url=base, timeout=timeout(30)) as http:
            for start in range(0, ENTITIES, 1000):
                batch = [_event(n, {"f": FILLER, "n": 0}) for n in range(start, start + 1000)]
                reply = await http.post("/api/events/batch", json={"events": batch})
                assert reply.is_success, reply.text
            stop = asyncio.Event()

            async def publish() -> None:
                """Updates all along: some land while the snapshot is read (held, then
                merged behind the full socket)."""
                n = 0
                while not stop.is_set():
                    n += 1
                    batch = [_event(k, {"n": n}) for k in range(0, ENTITIES, 40)]
                    await http.post("/api/events/batch", json={"events": batch})
                    await asyncio.sleep(0.01)

            publisher = asyncio.create_task(publish())
            # A client that reads nothing for now, behind a small receive buffer.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", hub.port))
            ws = await websockets.connect(
                f"ws://127.0.0.1:{hub.port}/api/ws",
                sock=sock,
                subprotocols=[JSON_PROTOCOL],  # type: ignore[list-item]
                max_size=None,
                max_queue=None,
            )
            ws.transport.pause_reading()
            frame = {"type": "subscribe", "sub": "big", "filter": {"prefixes": ["big/"]}}
            await ws.send(json.dumps({**frame, "snapshot": True}))
            await asyncio.sleep(1.0)  # the snapshot is read and the hand-off done meanwhile
            ws.transport.resume_reading()
            # Read up to synced, then drop the connection, as a client may at any point.
            replica = Replica()
            conflated = 0
            async with asyncio.timeout(timeout(30)):
                while True:
                    received = json.loads(await ws.recv())
                    replica.apply(received)
                    conflated += bool(received.get("conflated"))
                    if received["type"] == "synced":
                        break
            await ws.close()
            await asyncio.sleep(0.3)
            stop.set()
            await publisher
            # Resume from synced's cursor: exactly what followed it, with no gap.
            client = await Native.connect(f"ws://127.0.0.1:{hub.port}/api/ws")
            await client.send({**frame, "from": replica.cursor_text()})
            async with asyncio.timeout(timeout(30)):
                while (received := await client.recv(wait=30))["type"] != "synced":
                    replica.apply(received)  # asserts each delta's base is the version held
            await client.close()
        assert replica.state() == await rest_state(base, "big/")
    assert conflated, "nothing was merged before synced: the test saw no stall"
