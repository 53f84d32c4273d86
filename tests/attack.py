"""What the hostile-input tests share: raw HTTP exchanges, and a keeper entity.

An attack test publishes a :class:`Keeper` before it starts and checks it after: the
hub must still answer a normal request, and the keeper must be exactly as it was.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx

from .conftest import timeout

if TYPE_CHECKING:
    from hub.transport.http import HttpConnection, Request, Response


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


class StubApp:
    """The smallest ``http.App`` for driving ``HttpConnection`` alone; a test
    subclasses it with its own :meth:`handle` and timeouts."""

    request_timeout = 5.0
    keepalive_timeout = 5.0
    max_body_bytes = 1024

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()

    def body_limit(self, method: str, path: str) -> tuple[int, str]:
        return self.max_body_bytes, "payload too large"

    async def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            await fn()

        task = asyncio.get_running_loop().create_task(run())  # a test's stand-in for a task group
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def upgrade(self, request: Request, transport: asyncio.Transport) -> None:
        return None

    def connection_opened(self, conn: HttpConnection) -> str | None:
        return None

    def connection_closed(self, conn: HttpConnection) -> None:
        pass
