"""An ASGI 3 application served by the hub's own HTTP server (one route's worth).

The hub's HTTP layer is not ASGI (hub/transport/http.py says why); a library that
speaks ASGI — the ``mcp`` SDK's streamable-HTTP session manager — is reached through
:class:`AsgiBridge`: the parsed request becomes an ASGI ``http`` scope and one
``http.request`` message (the body is already complete: h1.py bounded it), and what
the application sends becomes a :class:`~hub.transport.responses.Response`:

- a response that is not ``text/event-stream`` is collected whole (at most
  ``max_body`` bytes, else 502) and sent with a length;
- an event stream is streamed with the hub's streaming primitive
  (:mod:`hub.transport.streaming`): each ``http.response.body`` becomes one chunk,
  written as fast as the client reads (``drain``); the application's ``send`` waits
  when :data:`MAX_QUEUED` messages are waiting (backpressure).

The application runs in the bridge's own task group (:meth:`AsgiBridge.run`), since
a stream outlives the handler that answered its head. Its ``receive`` answers
``http.disconnect`` once the response is complete, or the stream was stopped (the
client left, the hub shuts down, a slow consumer): the application then ends.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import anyio

from .responses import Response, error_response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream

    from .h1 import Request
    from .streaming import BodyWriter

    Message = MutableMapping[str, Any]
    AsgiApp = Callable[
        [
            MutableMapping[str, Any],
            Callable[[], Awaitable[Message]],
            Callable[[Message], Awaitable[None]],
        ],
        Awaitable[None],
    ]

__all__ = ["MAX_QUEUED", "AsgiBridge"]

logger = logging.getLogger("hub.gateway")

#: ASGI messages the application may send ahead of the client before its ``send``
#: waits.
MAX_QUEUED = 16
#: Hop-by-hop and framing headers the hub's serializer writes itself.
_OWN_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"connection", b"content-type"})


class AsgiBridge:
    """Serve ``app`` (ASGI 3, ``http`` scopes) for the requests given to :meth:`handle`.

    Args:
        app: the application.
        max_body: the largest non-streamed response body collected.
    """

    def __init__(self, app: AsgiApp, *, max_body: int = 16 * 1024 * 1024) -> None:
        self.app = app
        self.max_body = max_body
        self._tg: TaskGroup | None = None

    async def run(self) -> None:
        """Own the applications' tasks until cancelled (the hub's task group runs it)."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                await anyio.sleep_forever()
            finally:
                self._tg = None

    async def handle(self, request: Request) -> Response:
        """Run the application on ``request``; its response."""
        tg = self._tg
        if tg is None:
            return error_response(503, "not ready: the hub is starting or stopping")
        sender, receiver = anyio.create_memory_object_stream[Any](MAX_QUEUED)
        done = anyio.Event()  # the response is over: receive() says disconnect
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if done.is_set():
                return  # nobody reads any more
            try:
                await sender.send(message)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                done.set()

        async def call() -> None:
            async with sender:
                try:
                    await self.app(_scope(request), receive, send)
                except Exception:
                    logger.exception(
                        "ASGI application failed on %s %s", request.method, request.path
                    )

        tg.start_soon(call)
        try:
            return await self._respond(receiver, done)
        except BaseException:
            done.set()
            receiver.close()
            raise

    async def _respond(
        self, receiver: MemoryObjectReceiveStream[Any], done: anyio.Event
    ) -> Response:
        try:
            start = await receiver.receive()
        except anyio.EndOfStream:
            done.set()
            return error_response(502, "the application ended without a response")
        if start.get("type") != "http.response.start":
            done.set()
            receiver.close()
            return error_response(502, "the application sent a body before its head")
        status = int(start["status"])
        headers: list[tuple[bytes, bytes]] = []
        content_type: bytes | None = None
        for name, value in start.get("headers", ()):
            lowered = bytes(name).lower()
            if lowered == b"content-type":
                content_type = bytes(value)
            elif lowered not in _OWN_HEADERS:
                headers.append((lowered, bytes(value)))
        if content_type is not None and content_type.startswith(b"text/event-stream"):

            async def produce(body: BodyWriter) -> None:
                try:
                    async for message in receiver:
                        if message.get("type") != "http.response.body":
                            continue
                        chunk = message.get("body", b"")
                        if chunk:
                            body.write(bytes(chunk))
                            await body.drain()
                        if not message.get("more_body"):
                            return
                finally:
                    done.set()
                    receiver.close()

            return Response(status, content_type=content_type, headers=headers, producer=produce)
        chunks: list[bytes] = []
        size = 0
        try:
            async for message in receiver:
                if message.get("type") != "http.response.body":
                    continue
                chunk = bytes(message.get("body", b""))
                size += len(chunk)
                if size > self.max_body:
                    return error_response(502, f"response over {self.max_body} bytes")
                chunks.append(chunk)
                if not message.get("more_body"):
                    break
        finally:
            done.set()
            receiver.close()
        return Response(status, b"".join(chunks), content_type=content_type, headers=headers)


def _scope(request: Request) -> dict[str, Any]:
    host, _, port = request.client.rpartition(":")
    client = (host, int(port)) if port.isdigit() else None
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": unquote(request.path),
        "raw_path": request.path.encode(),
        "query_string": request.query_string.encode(),
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in request.raw_headers],
        "client": client,
        "server": None,
        "state": {},
    }
