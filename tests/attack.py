"""What the hostile-input tests share: raw HTTP exchanges, and a keeper entity.

An attack test publishes a :class:`Keeper` before it starts and checks it after: the
hub must still answer a normal request, and the keeper must be exactly as it was.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx

from .conftest import timeout


async def exchange(port: int, data: bytes, *, read_all: bool = True) -> bytes:
    """Send ``data`` on a new connection; what the hub sends until it closes (or, with
    ``read_all=False``, the first read)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if read_all:
            return await asyncio.wait_for(reader.read(), timeout(10))
        return await asyncio.wait_for(reader.read(65536), timeout(10))
    finally:
        writer.close()


def status_and_body(response: bytes) -> tuple[int, Any]:
    """The status of a raw response and its JSON body (None if it has none)."""
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else None


class Keeper:
    """An entity published before an attack, that no attack may change."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.id = f"keeper/{uuid.uuid4().hex}"
        self.before: Any = None

    async def _get(self, http: httpx.AsyncClient) -> Any:
        reply = await http.get(f"/api/state/entities/{self.id}")
        assert reply.status_code == 200, reply.text
        return reply.json()

    async def publish(self) -> None:
        event = {
            "stream": "keeper",
            "source": "test",
            "payload": {"entity_id": self.id, "properties": {"v": "before", "n": 1}},
        }
        async with httpx.AsyncClient(base_url=self.base_url, timeout=timeout(10)) as http:
            reply = await http.post("/api/events", json=event)
            assert reply.status_code == 200, reply.text
            self.before = await self._get(http)

    async def check(self) -> None:
        """The hub answers a normal request, and the keeper is as it was."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=timeout(10)) as http:
            healthz = await http.get("/healthz")
            assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})
            assert await self._get(http) == self.before
