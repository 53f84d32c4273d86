"""Headless Chromium (Debian's) for tests, driven over the Chrome DevTools Protocol.

No browser automation package: Chromium is started with ``--remote-debugging-port=0``
and writes the port it chose to ``DevToolsActivePort`` in its profile directory; a
test attaches to one page and uses ``Page.navigate`` and ``Runtime.evaluate``, over
the ``websockets`` library the hub already depends on. The ``devtools`` fixture
(tests/conftest.py) gives a test one open page, or skips it without Chromium.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from .conftest import timeout

__all__ = ["CHROMIUM", "DevTools", "open_chromium"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-port=0",
]


class DevTools:
    """A Chrome DevTools Protocol connection, attached to one page (flat sessions)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.session: str | None = None
        self._next_id = 0
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        #: Every event received, in order (``method``, ``params``).
        self.events: list[dict[str, Any]] = []

    async def read(self) -> None:
        """Dispatch replies and record events until the connection ends."""
        async for message in self.ws:
            data = json.loads(message)
            future = self._replies.pop(data.get("id", -1), None)
            if future is None:
                self.events.append(data)
            elif "error" in data:
                future.set_exception(RuntimeError(f"DevTools: {data['error']}"))
            else:
                future.set_result(data.get("result", {}))

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[self._next_id] = future
        await self.ws.send(json.dumps(message))
        return await asyncio.wait_for(future, timeout(20))

    async def open_page(self) -> None:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            await self.send(f"{domain}.enable")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        reply = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"in the page: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def urls(self) -> list[str]:
        """Every URL the page requested or opened a WebSocket to."""
        found = []
        for event in self.events:
            params = event.get("params", {})
            if event.get("method") == "Network.requestWillBeSent":
                found.append(params["request"]["url"])
            elif event.get("method") == "Network.webSocketCreated":
                found.append(params["url"])
        return found

    def page_errors(self) -> list[str]:
        """Uncaught exceptions and console errors of the page."""
        errors = []
        for event in self.events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.exceptionThrown":
                errors.append(json.dumps(params["exceptionDetails"])[:500])
            elif event.get("method") == "Runtime.consoleAPICalled" and params["type"] == "error":
                errors.append(json.dumps(params["args"])[:500])
        return errors


@contextlib.asynccontextmanager
async def open_chromium(tmp_path: Path) -> AsyncIterator[DevTools]:
    """Headless Chromium with one page open, until the block ends."""
    if CHROMIUM is None:
        pytest.skip(
            "no Chromium: install Debian's package (apt-get install chromium); .ci/run does"
        )
    profile = tmp_path / "chromium-profile"
    log = (tmp_path / "chromium.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    reader: asyncio.Task[None] | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout(30)
        while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
            if proc.returncode is not None or loop.time() > deadline:
                log.flush()
                output = (tmp_path / "chromium.log").read_text(errors="replace")
                pytest.fail(f"Chromium did not start its DevTools server:\n{output[-3000:]}")
            await asyncio.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        async with websockets.connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as ws:
            tools = DevTools(ws)
            reader = asyncio.create_task(tools.read())
            await tools.open_page()
            yield tools
            reader.cancel()
    finally:
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await reader
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout(10))
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()
