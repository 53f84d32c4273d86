"""One subscriber whose network stalls among many: conflated, closed 1013, resumed.

A hub (in this process, so that the stalled connection's queues can be read) serves
``others`` native subscribers, in processes of their own, that measure
publish-to-delivery latency on ten of 50 hot entities each (as
``tests/test_native_slow_consumer.py`` does, with its load clients), and one more
subscriber, in a process of its own, to the whole ``load/`` prefix. Two publishers
(processes too): one at ``rate`` events/s over the 50 hot entities, and one at half
of it over 1,000 entities (``load/0`` … ``load/999``), so that a stalled subscriber's
merged deltas grow past the bound instead of stopping at 50.

The run is ``rounds`` times: the stalled one reads normally, then stops reading its
socket (a stalled network: its receive buffer is 4 KiB, and the hub's side's kernel
send buffer is set to 16 KiB as it stalls, so the hub's own buffer fills within a
second or two), then reads again. While it is stalled the run samples, every 20 ms,
the hub's unsent bytes for it (the transport's write buffer) and its merged deltas;
the hub conflates it past ``FLUX_CONFLATE_AFTER_BYTES`` and closes it with 1013 past
``FLUX_MAX_PENDING_ENTITIES``. When it reads again it reads what was queued, the
close frame (its code and reason recorded), reconnects and subscribes ``from`` its
cursor. At the end its replica, every delta checked for gaps, must equal the REST
state.

The others' p99 is pooled over the rounds' windows of each kind, as the slow-consumer
test does (one window's p99 is set by whether the machine stalled in it): while the
stalled one reads, and while it is stalled. The 2 s after each stall, while it
catches up, count for neither. ``stall=False`` runs the same without the stall, for
the others' p99 in the same windows of a run without it (``bench/faults.py`` runs
both: on a 2-vCPU VM one window was consistently noisier than the others, with or
without a stall; docs/faults.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.context
import multiprocessing.process
import socket
import statistics
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import websockets

from hub.store import Keys, Store
from hub.transport.native_ws import NativeSession

from ..conftest import make_settings, running_hub, timeout
from ..load_clients import (
    Phase,
    discard,
    replica_state,
    run_publisher,
    run_subscribers,
    start_child,
    subscribe_with_snapshot,
)
from ..native_client import Replica, rest_state

__all__ = ["StallOutcome", "run_stalled_subscriber", "send_buffer", "stall_run"]

HOT = 50
WIDE = 1000
BATCH = 10
#: The stalled subscriber's socket receive buffer (the kernel doubles it).
RECEIVE_BUFFER = 4096
#: The kernel's send buffer of the hub's side of the stalled connection (doubled too).
SEND_BUFFER = 16 * 1024


@dataclass
class StallOutcome:
    """What one run measured."""

    scenario: str
    others: int
    rate: int
    #: Events published (both publishers; not counted as acknowledged one by one).
    published: int = 0
    #: The others' p99 latency (s), pooled: while the stalled one reads; while stalled.
    p99_without: float = 0.0
    p99_with: float = 0.0
    samples_without: int = 0
    samples_with: int = 0
    #: Each window's own p99 (s), to judge the noise: reading windows, stalled ones.
    windows_without: list[float] = field(default_factory=list)
    windows_with: list[float] = field(default_factory=list)
    #: The stalled connection's peak unsent bytes (hub side) and the bounds.
    peak_unsent: int = 0
    conflate_after: int = 0
    max_send_buffer: int = 0
    #: Its peak merged deltas, and the bound.
    peak_pending: int = 0
    max_pending: int = 0
    #: Deltas conflated by the hub for it, over all its connections.
    conflated: int = 0
    #: Each close the stalled one read: (code, reason); and seconds from stall to close.
    closes: list[tuple[int | None, str]] = field(default_factory=list)
    to_close: list[float] = field(default_factory=list)
    #: When the stalled one read each close ("recover0 +0.0 s": as it read again).
    close_phases: list[str] = field(default_factory=list)
    #: After the last resume: its replica equals the REST state; deltas applied; gaps;
    #: ``reset`` frames read (a hub that fell behind its delta log starts it over).
    equal: bool = False
    deltas: int = 0
    gaps: int = 0
    resets: int = 0

    def fair(self, ratio: float = 1.2, slack: float = 0.002) -> bool:
        return self.p99_with <= self.p99_without * ratio + slack

    def closed_1013(self) -> bool:
        return bool(self.closes) and all(code == 1013 for code, _ in self.closes)


async def stall_run(
    redis_url: str,
    key_prefix: str,
    *,
    others: int,
    processes: int,
    rate: int,
    rounds: int,
    reading: float,
    stalled: float,
    conflate_after: int = 64 * 1024,
    max_pending: int = 200,
    max_send_buffer: int = 1024 * 1024,
    stall: bool = True,
) -> StallOutcome:
    """One run on a fresh hub over ``redis_url``; see the module's docstring.

    With ``stall=False`` it is the same run, but the one that would stall reads all
    along: the run without the stall, for the others' latency in the same windows.
    """
    settings = make_settings(
        key_prefix,
        fanout={
            "conflate_after_bytes": conflate_after,
            "max_pending_entities": max_pending,
            "max_send_buffer_bytes": max_send_buffer,
        },
    )
    what = f"stalled {rounds} x {stalled:g} s" if stall else "reading (no stall)"
    outcome = StallOutcome(
        f"{others} subscribers, 1 {what}",
        others,
        rate,
        conflate_after=conflate_after,
        max_send_buffer=max_send_buffer,
        max_pending=max_pending,
    )
    phases = [Phase("warmup", 1.0)] + [
        phase
        for n in range(rounds)
        for phase in (
            Phase(f"reading{n}", reading),
            Phase(f"stalled{n}", stalled),
            Phase(f"recover{n}", 2),
        )
    ]
    total = sum(p.seconds for p in phases)
    async with (
        await Store.connect(redis_url, Keys(key_prefix), settings.log) as store,
        running_hub(settings, store) as hub,
    ):
        with contextlib.ExitStack() as stack:
            url = f"ws://127.0.0.1:{hub.port}/api/ws"
            base = f"http://127.0.0.1:{hub.port}"
            ctx = multiprocessing.get_context("spawn")
            pipes = []
            for p in range(processes):
                count = others // processes + (1 if p < others % processes else 0)
                ids = [f"load/{(10 * p + i) % HOT}" for i in range(10)]
                out, into = ctx.Pipe(duplex=False)
                start_child(stack, ctx, run_subscribers, (url, ids, count, total + 4, into))
                pipes.append(out)
            control, end = ctx.Pipe()
            start_child(stack, ctx, run_stalled_subscriber, (url, "load/", end))
            assert await asyncio.to_thread(control.poll, timeout(30)), "stalled one not ready"
            assert control.recv() == "ready"
            deadline = time.monotonic() + timeout(30)
            # Polling: the connections come from other processes; the hub has no event.
            while len(hub.gateway.native_sessions) < others + 1:
                assert time.monotonic() < deadline, "subscribers did not connect"
                await asyncio.sleep(0.05)

            pub_out, pub_in = ctx.Pipe(duplex=False)
            wide_out, wide_in = ctx.Pipe(duplex=False)
            publisher = start_child(
                stack, ctx, run_publisher, (url, rate, BATCH, phases, HOT, pub_in)
            )
            wide = max(1, rate // 2)
            start_child(stack, ctx, run_publisher, (url, wide, BATCH, phases, WIDE, wide_in))
            starts: dict[str, float] = {}
            phase = ""
            stalled_at = 0.0
            sessions: list[NativeSession] = []
            done = False
            while not done:
                await asyncio.sleep(0.02)
                session = _stalled_session(hub.gateway.native_sessions)
                if session is not None and session not in sessions:
                    sessions.append(session)
                if phase.startswith("stalled") and session is not None:
                    outcome.peak_pending = max(outcome.peak_pending, len(session.outbox.pending))
                    if session.ws.open:
                        buffered = session.ws.transport.get_write_buffer_size()
                        outcome.peak_unsent = max(outcome.peak_unsent, buffered)
                    elif len(outcome.to_close) <= int(phase.removeprefix("stalled")):
                        outcome.to_close.append(time.monotonic() - stalled_at)
                while pub_out.poll():
                    message = pub_out.recv()
                    if message[0] != "phase":
                        outcome.published += message[1]
                        done = True
                        continue
                    phase = message[1]
                    starts[phase] = message[2]
                    if not stall:
                        continue
                    if phase.startswith("stalled"):
                        control.send("stall")
                        if session is not None:
                            send_buffer(session, SEND_BUFFER)
                        stalled_at = time.monotonic()
                    elif phase.startswith("recover"):
                        control.send("resume")
            publisher.join(timeout(10))
            while await asyncio.to_thread(wide_out.poll, timeout(10)):
                message = wide_out.recv()
                if message[0] == "done":
                    outcome.published += message[1]
                    break
            samples = [s for out in pipes for s in await asyncio.to_thread(out.recv)]
            outcome.conflated = sum(s.statistics().conflated for s in sessions)

            state = await rest_state(base, "load/")
            expected = {i: [v, p] for i, (v, p) in state.items()}
            control.send(("finish", expected))
            assert await asyncio.to_thread(control.poll, timeout(40)), "stalled one hung"
            outcome.equal, outcome.deltas, outcome.gaps, outcome.resets, closes = control.recv()
            outcome.closes = [(code, reason) for code, reason, _ in closes]
            outcome.close_phases = [_phase_of(at, starts) for _, _, at in closes]

            normal = [(starts[f"reading{n}"], starts[f"stalled{n}"]) for n in range(rounds)]
            stalls = [(starts[f"stalled{n}"], starts[f"recover{n}"]) for n in range(rounds)]
            without = _pooled(samples, normal)
            with_stall = _pooled(samples, stalls)
            outcome.samples_without, outcome.samples_with = len(without), len(with_stall)
            outcome.p99_without = _p99(without)
            outcome.p99_with = _p99(with_stall)
            outcome.windows_without = [_p99(_pooled(samples, [w])) for w in normal]
            outcome.windows_with = [_p99(_pooled(samples, [w])) for w in stalls]
            return outcome


def send_buffer(session: NativeSession, size: int) -> int:
    """Set the kernel's send buffer of the hub's side of ``session``'s connection (the
    kernel doubles ``size``); the size it had, to restore with ``size // 2``.

    As a network stalls (the stalled one's receive buffer is empty then: it was
    reading), :data:`SEND_BUFFER`: over loopback (a 64 KiB MSS) the kernel sizes it at
    about a megabyte, and at the stalled one's 60-90 KB/s it would take most of a minute
    to fill before the hub saw any unsent byte of its own. A stalled network holds less
    in flight than that; the hub itself does not set the option, so this is the only
    change to its socket.
    """
    sock = session.ws.transport.get_extra_info("socket")
    if sock is None:
        return 0
    previous = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    return previous


def _phase_of(at: float, starts: dict[str, float]) -> str:
    """``"recover0 +0.1 s"``: the phase at time ``at``, and how far into it."""
    start, name = max((start, name) for name, start in starts.items() if start <= at)
    return f"{name} +{at - start:.1f} s"


def _stalled_session(sessions: Any) -> NativeSession | None:
    for session in list(sessions):
        if isinstance(session, NativeSession) and "stalled" in session.subscriptions.by_name:
            return session
    return None


def _pooled(
    samples: list[list[tuple[float, float]]], windows: list[tuple[float, float]]
) -> list[float]:
    return sorted(
        lat for mine in samples for t, lat in mine if any(a <= t <= b for a, b in windows)
    )


def _p99(latencies: list[float]) -> float:
    if len(latencies) < 2:
        return float("nan")
    return statistics.quantiles(latencies, n=100)[98]


# ---------------------------------------------------------------- the stalled one


def run_stalled_subscriber(
    url: str, prefix: str, control: Connection, receive_buffer: int = RECEIVE_BUFFER
) -> None:
    """A subscriber to ``prefix`` (snapshot, then live) whose network stalls when told.

    Commands on ``control``: ``"stall"`` (stop reading the socket), ``"resume"`` (read
    again: what was queued, then, if the hub closed the connection, reconnect and
    subscribe ``from`` its cursor), ``("finish", expected_state)`` (read until its
    replica equals it, then answer ``(equal, deltas, gaps, resets, closes)``, closes
    being the ``(code, reason, time.time())`` of each close it read). It answers
    ``"ready"`` once synced. Its socket receives into ``receive_buffer`` bytes.
    """
    asyncio.run(_stalled_subscriber(url, prefix, control, receive_buffer))


async def _connect(url: str, receive_buffer: int) -> Any:
    """A connection whose socket receives into ``receive_buffer`` bytes (4 KiB): a
    stalled reader's kernel buffers hold little, so the hub's side fills as it would
    over a stalled network."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    # max_queue=1: with one message waiting, the client stops reading its socket.
    return await websockets.connect(url, sock=sock, subprotocols=["flux.v1"], max_queue=1)  # type: ignore[list-item]


async def _stalled_subscriber(
    url: str, prefix: str, control: Connection, receive_buffer: int
) -> None:
    replica = Replica()
    closes: list[tuple[int | None, str, float]] = []
    gaps = 0
    ws = await _connect(url, receive_buffer)
    await subscribe_with_snapshot(ws, "stalled", prefix, replica)
    control.send("ready")

    async def read() -> None:
        nonlocal ws, gaps
        while True:
            try:
                frame = json.loads(await ws.recv())
            except websockets.ConnectionClosed as exc:
                code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")
                closes.append((code, reason, time.time()))
                ws = await _connect(url, receive_buffer)
                await ws.send(
                    json.dumps(
                        {
                            "type": "subscribe",
                            "sub": "stalled",
                            "filter": {"prefixes": [prefix]},
                            "from": replica.cursor_text(),
                        }
                    )
                )
                continue
            try:
                replica.apply(frame)
            except AssertionError:
                gaps += 1

    reader: asyncio.Task[None] | None = asyncio.create_task(read())
    try:
        while True:
            command = await asyncio.to_thread(control.recv)
            if command == "stall" and reader is not None:
                reader.cancel()
                reader = None
            elif command == "resume" and reader is None:
                reader = asyncio.create_task(read())
            elif isinstance(command, tuple) and command[0] == "finish":
                if reader is None:
                    reader = asyncio.create_task(read())
                expected = command[1]
                deadline = time.time() + 30
                # Polling: the reader task applies the frames; it has no event to wait on.
                while replica_state(replica, prefix) != expected and time.time() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                equal = replica_state(replica, prefix) == expected
                control.send((equal, replica.deltas, gaps, replica.resets, closes))
                return
    finally:
        if reader is not None:
            reader.cancel()
        drain = asyncio.create_task(discard(ws))
        await ws.close()
        drain.cancel()
