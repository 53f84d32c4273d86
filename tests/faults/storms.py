"""Connection storms against a real hub: churn, and reconnect-with-resume under load.

- :func:`connect_storm`: ``total`` native WebSocket connections opened and closed,
  ``concurrency`` at a time; half of them subscribe before closing.
- :func:`resume_storm`: ``subscribers`` native clients keep checked replicas of the
  entities a publisher keeps changing, each dropping its connection every few tenths
  of a second and resuming from its cursor; at the end each resumes once more and
  must hold exactly the REST state. A delta whose base it does not hold is a gap.

Both read the hub's own figures before and after (``/metrics``: open connections by
kind) so that the tests can check it went back to its baseline, and ``/readyz``.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import websockets

from ..conftest import timeout
from ..native_client import Native, Replica, event, rest_state

__all__ = ["StormOutcome", "connect_storm", "open_connections", "resume_storm", "rss_kib"]

_GAUGE = re.compile(r'^flux_connections\{kind="(\w+)"\} ([0-9.e+]+)$', re.MULTILINE)


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid`` in KiB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


async def open_connections(base_url: str) -> dict[str, int]:
    """The hub's open connections by kind, as ``/metrics`` reports them."""
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout(10)) as http:
        text = (await http.get("/metrics")).text
    return {kind: int(float(value)) for kind, value in _GAUGE.findall(text)}


async def settled_connections(base_url: str, want: dict[str, int]) -> dict[str, int]:
    """``/metrics``' connections once they equal ``want`` (or after 10 s: the last)."""
    got = await open_connections(base_url)
    for _ in range(int(timeout(10) / 0.1)):
        if all(got.get(kind, 0) <= n for kind, n in want.items()):
            break
        await asyncio.sleep(0.1)
        got = await open_connections(base_url)
    return got


async def ready(base_url: str) -> int:
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout(10)) as http:
        return (await http.get("/readyz")).status_code


@dataclass
class StormOutcome:
    """What one storm measured."""

    scenario: str
    connections: int = 0
    seconds: float = 0.0
    acked: int = 0
    gaps: int = 0
    resumes: int = 0
    failures: int = 0
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    readyz: int = 0


async def connect_storm(base_url: str, total: int, concurrency: int) -> StormOutcome:
    """Open and close ``total`` native connections, ``concurrency`` at a time."""
    ws_url = base_url.replace("http://", "ws://") + "/api/ws"
    outcome = StormOutcome("connect storm", before=await open_connections(base_url))
    left = iter(range(total))

    async def worker() -> None:
        for n in left:
            try:
                native = await Native.connect(ws_url, open_timeout=timeout(10))
            except (OSError, websockets.InvalidHandshake, TimeoutError):
                outcome.failures += 1
                continue
            try:
                if n % 2:
                    reply = await native.request(
                        {"type": "subscribe", "sub": "s", "filter": {"prefixes": ["storm/"]}},
                        "subscribed",
                    )
                    if reply["type"] != "subscribed":
                        outcome.failures += 1
                outcome.connections += 1
            finally:
                await native.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    outcome.seconds = time.monotonic() - started
    outcome.after = await settled_connections(base_url, outcome.before)
    outcome.readyz = await ready(base_url)
    return outcome


async def resume_storm(
    base_url: str, subscribers: int, seconds: float, entities: int = 50, rate: int = 100
) -> StormOutcome:
    """``subscribers`` replicas resuming repeatedly while a publisher runs ``seconds``,
    publishing about ``rate`` events/s (in frames of 5) over ``entities`` entities."""
    ws_url = base_url.replace("http://", "ws://") + "/api/ws"
    outcome = StormOutcome("resume storm", before=await open_connections(base_url))
    publishing = asyncio.Event()
    publishing.set()
    rng = random.Random(1)

    async def publisher() -> None:
        native = await Native.connect(ws_url)
        try:
            n = 0
            while publishing.is_set():
                batch = [event(f"rs/e{(n + i) % entities}", n=n + i) for i in range(5)]
                results = await native.publish(*batch)
                outcome.acked += sum(1 for r in results if r.get("status") == "ok")
                n += 5
                await asyncio.sleep(5 / rate)
        finally:
            await native.close()

    async def session(replica: Replica, hold: float) -> bool:
        """One connection: subscribe (snapshot, or resume), read for ``hold`` s; whether
        it synced and ended without an error or a gap."""
        native = await Native.connect(ws_url, open_timeout=timeout(10))
        try:
            frame: dict[str, object] = {
                "type": "subscribe",
                "sub": "s",
                "filter": {"prefixes": ["rs/"]},
            }
            if replica.cursor:
                frame["from"] = replica.cursor_text()
                outcome.resumes += 1
            else:
                frame["snapshot"] = True
            await native.send(frame)
            deadline = time.monotonic() + hold
            synced = False
            while time.monotonic() < deadline or not synced:
                try:
                    got = await native.recv(max(0.05, deadline - time.monotonic()))
                except TimeoutError:
                    if synced:
                        break
                    continue
                synced = synced or got["type"] == "synced"
                if got["type"] == "error":
                    outcome.failures += 1
                    return False
                try:
                    replica.apply(got)
                except AssertionError:
                    outcome.gaps += 1
                    replica.entities.clear()
                    replica.cursor.clear()
                    return False
        finally:
            await native.close()
        return True

    async def subscriber(replica: Replica) -> None:
        while publishing.is_set():
            try:
                await session(replica, rng.uniform(0.1, 0.6))
            except (OSError, websockets.ConnectionClosed, websockets.InvalidHandshake):
                outcome.failures += 1
            outcome.connections += 1

    replicas = [Replica() for _ in range(subscribers)]
    started = time.monotonic()
    publishing_task = asyncio.create_task(publisher())
    listening = [asyncio.create_task(subscriber(r)) for r in replicas]
    await asyncio.sleep(seconds)
    publishing.clear()
    await publishing_task
    await asyncio.gather(*listening)
    outcome.seconds = time.monotonic() - started
    # One last resume each, until idle: every replica must equal the REST state.
    truth = await rest_state(base_url, "rs/")
    # (A replica whose last resume failed counts as a failure, not as a gap.)
    synced = await asyncio.gather(*(session(replica, 0.2) for replica in replicas))
    outcome.gaps += sum(
        1 for r, ok in zip(replicas, synced, strict=True) if ok and r.state() != truth
    )
    outcome.after = await settled_connections(base_url, outcome.before)
    outcome.readyz = await ready(base_url)
    return outcome
