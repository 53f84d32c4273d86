"""Fault scenarios against a real hub and a Redis the scenario owns, and their tally.

Each scenario runs publishers that retry with their ``eventId`` until acknowledged
(REST and native), and a native subscriber that keeps a checked :class:`Replica`
and resumes from its cursor whenever its connection or subscription ends. Meanwhile
the scenario breaks Redis (kills, stalls, fills it) and mends it. At the end it counts,
from Redis's own event log:

- ``lost``: events acknowledged but not in the log (or not in the entity state);
- ``doubled``: events in the log more than once (an ``eventId`` applied twice);
- ``gaps``: the subscriber's replica missed a version (a delta whose base it did not
  hold), or ended without an acknowledged entity;
- ``recovery``: seconds from the fault's end to the first acknowledged publish.

It also records every answer a publisher got while Redis was broken (``refusals``), and
the longest time any request took to be answered (``slowest``): a request hanging past
the bound, or a 500, fails the scenario's test.

The pytest tests (``test_*.py`` here) run these with small counts; ``bench/faults.py``
runs them longer and prints the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import websockets

from hub.app import Hub
from hub.store import EmbeddedRedis, Keys, Store

from ..conftest import make_settings, running_hub, timeout
from ..native_client import Native, Replica

__all__ = [
    "OwnedRedis",
    "Outcome",
    "Tally",
    "fault_run",
    "owned_hub",
]

#: The store's reply timeout the scenarios' hubs run with (the default is 30 s).
STORE_TIMEOUT = 1.0
#: The longest any request may take to be answered, even with Redis dead or stalled:
#: a publish may queue behind a call that waits out the timeout, then wait out its own
#: (two timeouts), plus scheduling slack.
ANSWER_BOUND = 2 * STORE_TIMEOUT + 1.0


class OwnedRedis:
    """A redis-server this scenario started (``appendfsync always``) and may break.

    It is an :class:`EmbeddedRedis` on a data directory of its own: restarting it reuses
    the directory (its AOF) and the unix socket, so the hub's URL stays valid.
    """

    def __init__(self, data_dir: Path, appendfsync: str = "always") -> None:
        self.server = EmbeddedRedis(data_dir, appendfsync=appendfsync)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def start(self) -> None:
        self.server.start()

    def kill(self, sig: signal.Signals) -> None:
        """Send ``sig`` (SIGTERM, SIGKILL) and wait for the server to exit."""
        process = self.server.process
        assert process is not None
        process.send_signal(sig)
        process.wait(timeout(30))
        self.server.stop()  # releases the directory's lock; the process is gone

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=timeout(10))

    def stop(self) -> None:
        if self.server.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.server.process.pid, signal.SIGCONT)
        self.server.stop()


@asynccontextmanager
async def owned_hub(
    data_dir: Path, key_prefix: str, appendfsync: str = "always"
) -> AsyncIterator[tuple[Hub, OwnedRedis]]:
    """A hub on port 0 over a Redis of its own, both stopped at the end."""
    owned = OwnedRedis(data_dir, appendfsync)
    owned.start()
    try:
        settings = make_settings(key_prefix)
        keys = Keys(key_prefix, settings.redis.partitions)
        async with (
            await Store.connect(
                owned.url, keys, settings.log, reply_timeout=STORE_TIMEOUT
            ) as store,
            running_hub(settings, store) as hub,
        ):
            yield hub, owned
    finally:
        owned.stop()


@dataclass
class Outcome:
    """What one scenario measured."""

    scenario: str
    acked: int = 0
    lost: int = 0
    doubled: int = 0
    gaps: int = 0
    #: Seconds from the fault's end to the first acknowledged publish.
    recovery: float | None = None
    #: Seconds from the fault's end to the subscriber's first delta.
    delivery: float | None = None
    #: Answers publishers got that were not acknowledgements, by kind ("503", "unavailable").
    refusals: Counter[str] = field(default_factory=Counter)
    #: The longest a request took to be answered (or to fail), in seconds.
    slowest: float = 0.0
    slowest_kind: str = ""
    #: Reads made while Redis was broken: what each got, and how long it took.
    probes: dict[str, tuple[int, float]] = field(default_factory=dict)

    def row(self) -> str:
        recovery = "-" if self.recovery is None else f"{self.recovery:.2f}"
        delivery = "-" if self.delivery is None else f"{self.delivery:.2f}"
        return (
            f"| {self.scenario} | {self.acked} | {self.lost} | {self.doubled} | "
            f"{self.gaps} | {recovery} | {delivery} | {self.slowest:.2f} |"
        )


@dataclass
class Tally:
    """Shared by the publishers and the subscriber of one run."""

    acked: set[str] = field(default_factory=set)
    refusals: Counter[str] = field(default_factory=Counter)
    slowest: float = 0.0
    slowest_kind: str = ""
    gaps: int = 0
    #: Set when the fault ends; the first ack after it gives the recovery time.
    mended_at: float | None = None
    recovered_at: float | None = None
    #: The subscriber's first delta after the fault's end.
    delivered_at: float | None = None

    def answered(self, started: float, kind: str = "") -> None:
        took = time.monotonic() - started
        if took > self.slowest:
            self.slowest, self.slowest_kind = took, kind

    def ack(self, event_id: str) -> None:
        self.acked.add(event_id)
        if self.mended_at is not None and self.recovered_at is None:
            self.recovered_at = time.monotonic()


def _event(event_id: str, entity: str, n: int) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "stream": "faults",
        "source": "faults",
        "payload": {"entity_id": entity, "properties": {"n": n}},
    }


async def rest_publisher(base_url: str, name: str, count: int, tally: Tally) -> None:
    """Publish ``count`` events one by one, each retried until acknowledged."""
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout(30)) as http:
        for n in range(count):
            event_id = f"{name}-{n}"
            body = _event(event_id, f"f/{name}-{n}", n)
            while True:
                started = time.monotonic()
                try:
                    reply = await http.post("/api/events", json=body)
                except httpx.HTTPError as exc:
                    tally.answered(started, "rest error")
                    tally.refusals[f"rest {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.05)
                    continue
                tally.answered(started, f"rest {reply.status_code}")
                if reply.status_code == 200:
                    tally.ack(event_id)
                    break
                kind = f"rest {reply.status_code}"
                if reply.status_code == 503:
                    assert reply.json()["code"] == "unavailable", reply.text
                    assert reply.headers.get("retry-after"), reply.headers
                else:
                    kind += f" {reply.text[:80]}"
                tally.refusals[kind] += 1
                await asyncio.sleep(0.05)


async def native_publisher(ws_url: str, name: str, count: int, tally: Tally) -> None:
    """Publish ``count`` events over the native protocol, retried until acknowledged,
    reconnecting when the hub closes the connection."""
    native: Native | None = None
    try:
        for n in range(count):
            event_id = f"{name}-{n}"
            body = _event(event_id, f"f/{name}-{n}", n)
            while True:
                started = time.monotonic()
                try:
                    if native is None:
                        native = await Native.connect(ws_url)
                    ack = await native.request({"type": "publish", "events": [body]}, "ack")
                except (OSError, websockets.ConnectionClosed, TimeoutError) as exc:
                    tally.answered(started, "native error")
                    tally.refusals[f"native {type(exc).__name__}"] += 1
                    if native is not None:
                        await native.close()
                    native = None
                    await asyncio.sleep(0.05)
                    continue
                tally.answered(started, "native ack")
                assert ack["type"] == "ack", ack
                result = ack["results"][0]
                if result.get("status") in ("ok", "duplicate"):
                    tally.ack(event_id)
                    break
                tally.refusals[f"native {result['error']['code']}"] += 1
                await asyncio.sleep(0.05)
    finally:
        if native is not None:
            await native.close()


async def subscriber(ws_url: str, replica: Replica, tally: Tally, stop: asyncio.Event) -> None:
    """Keep a replica of ``f/`` until ``stop``; resume from its cursor after any end.

    A delta that breaks the replica's checks counts as a gap; the replica then starts
    again from a snapshot (as a client would after a reset).
    """
    while not stop.is_set():
        try:
            native = await Native.connect(ws_url)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        try:
            frame: dict[str, Any] = {
                "type": "subscribe",
                "sub": "s",
                "filter": {"prefixes": ["f/"]},
            }
            if replica.cursor:
                frame["from"] = replica.cursor_text()
            else:
                frame["snapshot"] = True
            await native.send(frame)
            while not stop.is_set():
                try:
                    got = await native.recv(0.2)
                except TimeoutError:
                    continue
                if got["type"] == "error":
                    break  # the subscription ended (unavailable): resume
                try:
                    replica.apply(got)
                except AssertionError:
                    tally.gaps += 1
                    replica.entities.clear()
                    replica.cursor.clear()
                    break
                if got["type"] == "delta" and tally.mended_at and not tally.delivered_at:
                    tally.delivered_at = time.monotonic()
        except (websockets.ConnectionClosed, OSError):
            pass
        finally:
            await native.close()
        await asyncio.sleep(0.05)


#: Reads tried while Redis is broken; each must answer (200 or 503) within the bound.
PROBES = [
    "/healthz",
    "/readyz",
    "/api/state/entities/f%2Fr1-0",
    "/api/state/entities?prefix=f/&limit=10",
    "/api/events?entity=f/r1-0",
]


async def probe(base_url: str) -> dict[str, tuple[int, float]]:
    """GET each of :data:`PROBES` once: (status, seconds) per path; 0 if no answer."""
    found: dict[str, tuple[int, float]] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout(30)) as http:
        for path in PROBES:
            started = time.monotonic()
            try:
                status = (await http.get(path)).status_code
            except httpx.HTTPError:
                status = 0
            found[path] = (status, time.monotonic() - started)
    return found


def audit(owned: OwnedRedis, key_prefix: str, tally: Tally, replica: Replica) -> Outcome:
    """Count lost and doubled events from Redis's event log and entity state."""
    keys = Keys(key_prefix, 1)
    seen: Counter[str] = Counter()
    with owned.client() as client:
        for _, fields in client.xrange(keys.event_log(0)):
            stored = json.loads(fields[b"e"])
            seen[stored["eventId"]] += 1
        present = {
            event_id for event_id in tally.acked if client.exists(keys.entity(0, "f/" + event_id))
        }
    outcome = Outcome("", acked=len(tally.acked))
    outcome.lost = sum(1 for e in tally.acked if seen[e] == 0 or e not in present)
    outcome.doubled = sum(1 for n in seen.values() if n > 1)
    missing = sum(1 for e in tally.acked if "f/" + e not in replica.entities)
    outcome.gaps = tally.gaps + missing
    outcome.refusals = tally.refusals
    outcome.slowest = tally.slowest
    outcome.slowest_kind = tally.slowest_kind
    if tally.mended_at is not None and tally.recovered_at is not None:
        outcome.recovery = tally.recovered_at - tally.mended_at
    if tally.mended_at is not None and tally.delivered_at is not None:
        outcome.delivery = tally.delivered_at - tally.mended_at
    return outcome


async def fault_run(
    name: str,
    hub: Hub,
    owned: OwnedRedis,
    key_prefix: str,
    *,
    events: int,
    break_it: Callable[[], Awaitable[None]],
    mend_it: Callable[[], Awaitable[None]],
    broken_for: float,
) -> Outcome:
    """Publish ``events`` per publisher (two REST, one native) with a subscriber; break
    Redis once a quarter of them are acknowledged, for ``broken_for`` s, then mend it."""
    base_url = f"http://127.0.0.1:{hub.port}"
    ws_url = f"ws://127.0.0.1:{hub.port}/api/ws"
    tally = Tally()
    replica = Replica()
    stop = asyncio.Event()
    listening = asyncio.create_task(subscriber(ws_url, replica, tally, stop))
    publishers = [
        asyncio.create_task(rest_publisher(base_url, "r1", events, tally)),
        asyncio.create_task(rest_publisher(base_url, "r2", events, tally)),
        asyncio.create_task(native_publisher(ws_url, "n1", events, tally)),
    ]
    try:
        deadline = time.monotonic() + timeout(60)
        while len(tally.acked) < (3 * events) // 4:
            assert time.monotonic() < deadline, "no progress before the fault"
            await asyncio.sleep(0.01)
        await break_it()
        broken = time.monotonic()
        probes = await probe(base_url)
        await asyncio.sleep(max(0.0, broken_for - (time.monotonic() - broken)))
        await mend_it()
        tally.mended_at = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*publishers), timeout(120))
        # Let the subscriber catch up with the last acknowledged event.
        for _ in range(int(timeout(30) / 0.05)):
            if all("f/" + e in replica.entities for e in tally.acked):
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        for task in publishers:
            task.cancel()
        await asyncio.gather(*publishers, return_exceptions=True)
        await listening
    outcome = audit(owned, key_prefix, tally, replica)
    outcome.scenario = name
    outcome.probes = probes
    return outcome
