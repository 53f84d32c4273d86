"""A tiny real HTTP/1.1 server on 127.0.0.1 for connector tests (pollers, OAuth providers).

Each request is answered by a handler the test provides and recorded (with the loop
time it arrived), so tests can count polls and check what the hub sent. One request
per connection (``connection: close``): that is all the hub's HTTP client needs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .conftest import timeout


@dataclass
class Seen:
    """One request as the server read it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Reply:
    """What to answer; ``hang`` never answers, ``drop`` closes without answering."""

    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    drop: bool = False


def json_reply(value: Any, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(value), {"content-type": "application/json"})


Handler = Callable[[Seen], Awaitable[Reply] | Reply]

_REASONS = {
    200: "OK",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
}


class LocalServer:
    """Start with ``async with LocalServer(handler) as server``; ``server.url(path)``."""

    def __init__(self, handler: Handler, port: int = 0) -> None:
        self.handler = handler
        self.requested_port = port
        self.requests: list[Seen] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> LocalServer:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.requested_port, reuse_address=True
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
        seen = Seen(method, target, headers, body, asyncio.get_running_loop().time())
        self.requests.append(seen)
        reply = self.handler(seen)
        if not isinstance(reply, Reply):
            reply = await reply
        if reply.drop:
            return
        if reply.hang:
            await asyncio.Event().wait()
        reason = _REASONS.get(reply.status, "Whatever")
        out = [f"HTTP/1.1 {reply.status} {reason}"]
        out += [f"{k}: {v}" for k, v in reply.headers.items()]
        out += [f"content-length: {len(reply.body)}", "connection: close", "", ""]
        writer.write("\r\n".join(out).encode("latin-1") + reply.body)
        await writer.drain()


async def until(check: Callable[[], Awaitable[bool]], wait: float = 5.0) -> None:
    """Wait until ``check()`` is true (scaled timeout)."""
    # Polls: connector status lives in Redis and offers nothing to wait on.
    async with asyncio.timeout(timeout(wait)):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
