"""A Server-Sent Events reader for tests: parses events as a browser does (WHATWG
HTML §9.2.6) and keeps the last event id the way ``EventSource`` keeps it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from .conftest import timeout


@dataclass(frozen=True)
class Event:
    event: str
    data: Any
    #: None: no ``id:`` line; "": an empty one (it clears the reader's).
    id: str | None


class SseReader:
    """The events of one streamed response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        #: As EventSource's "last event ID string".
        self.last_event_id = ""
        self.comments: list[str] = []
        self.retry: int | None = None

    async def next(self) -> Event:
        """The next event (comments and retry advice are recorded on the way)."""
        fields: dict[str, str] = {}
        data: list[str] = []
        async for line in self._lines:
            if not line:
                if data:
                    event_id = fields.get("id")
                    if event_id is not None:
                        self.last_event_id = event_id
                    text = "\n".join(data)
                    return Event(fields.get("event", "message"), json.loads(text), event_id)
                fields = {}
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "retry":
                self.retry = int(value)
            else:
                fields[name] = value
        raise EOFError("the stream ended")

    async def until(self, event: str) -> Event:
        while True:
            found = await self.next()
            if found.event == event:
                return found


@contextlib.asynccontextmanager
async def open_stream(
    http: httpx.AsyncClient, query: str, headers: dict[str, str] | None = None
) -> AsyncIterator[SseReader]:
    """``GET /api/stream?<query>``, asserting a 200 event stream."""
    request = http.build_request("GET", f"/api/stream?{query}", headers=headers)
    response = await http.send(request, stream=True)
    try:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"] == "text/event-stream"
        yield SseReader(response)
    finally:
        await response.aclose()


def client(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=timeout(10))
