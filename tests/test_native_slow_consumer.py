"""A subscriber that stops reading must not cost memory or anyone else's latency.

One subscriber reads nothing for 3 s while 30,000 deltas (10,000 events/s over 50
entities) flow — three times, with 3 s of normal reading before each stall. Meanwhile
two other subscribers, in a process of their own, measure publish-to-delivery latency
on ten of the entities (so that they keep up, and what they measure is the hub); the
publisher runs in a third process. The stalled one is ``tests/faults/stall.py``'s: its
socket receives into 64 KiB, and as it stalls the hub side's kernel send buffer is set
to 16 KiB (restored when it reads again), so the hub's own buffer for it passes the
conflation threshold within a fraction of a second of the stall, whatever rate the
machine carries. (With the kernel's own sizes, megabytes over loopback, conflation
waited for them to fill: on a busy machine publishing slower, a stall never filled
them, and the test failed "never conflated" with nothing wrong in the hub.) The test
checks:

- memory: the slow connection's unsent bytes stay under the conflation threshold plus
  one dispatch batch, and it holds at most one merged delta per entity (50);
- conflation: it was conflated; or, if the hub fell behind its delta log (read more
  than ``FLUX_DELTA_LOG_MAXLEN`` deltas late: a machine too busy to carry 10,000
  events/s), it was told as docs/protocol.md says (``reset`` and a fresh snapshot, or
  closed with 1013 and resumed) instead;
- correctness: once it reads again, it ends exactly at the REST state, every delta
  checked for gaps by its replica (conflated deltas included);
- fairness: the others' p99 latency over the three stalls is within 20 % of their p99
  over the three stretches of normal reading (plus 2 ms, below which a 2-vCPU VM's
  scheduler noise dominates). The 1.5 s after each stall, while the slow one catches
  up, count for neither. A run in which the hub did not keep up while all read is not
  judged (it fell behind its log before the first stall, or the others' p99 was over
  ``KEPT_UP`` before it or over the reading windows): its latencies measure the
  machine's backlog, not the stalled client.

Why three stalls, pooled, and up to three runs: the p99 of a window of a few seconds
is set by whether the machine happened to stall for a few tens of ms in it. On 2
vCPUs the noise comes in episodes: whole minutes where every window's p99 is 10 ms,
others where it swings between 20 and 200 ms with no stalled client at all. Pooling
the three stretches of each kind compares like with like, in time; even so a run can
fail by chance in a noisy episode, so a fresh hub gets up to ``ATTEMPTS`` runs and
one within bounds passes. A hub that does make the others pay fails every judged run:
with 20-50 µs of blocking per conflated delta, the others' p99 went from 15-50 ms to
about 1 s (30 µs: 26 vs 427 ms and 59 vs 572 ms in two runs). If no run could be
judged, the test is skipped, saying why, after checking memory, conflation and the
end state in each: so would a hub that a stalled client slows so much that even the
reading windows back up, in every run (the 30 µs did, in one run of three). Redis's
automatic AOF rewrite is held off meanwhile (see :func:`_no_aof_rewrite`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import multiprocessing.context
import multiprocessing.process
import statistics
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio

from hub.app import Hub
from hub.core.cursor import Position
from hub.engine.heap import freeze_startup_heap
from hub.transport.native_ws import NativeSession

from .conftest import hub_on_own_store, make_settings, timeout
from .faults.stall import SEND_BUFFER, run_stalled_subscriber, send_buffer
from .load_clients import Phase, run_publisher, run_subscribers, start_child
from .native_client import rest_state

RATE = 10_000
BATCH = 100
ENTITIES = 50
CONFLATE_AFTER = 64 * 1024
#: The most one dispatch can add past the threshold: read_count deltas of ~200 bytes.
DISPATCH_BATCH_BYTES = 1000 * 256
#: The stalled one's socket receive buffer (the kernel doubles it): about the 850 deltas
#: a normal client's would hold, so that it reads like one between stalls.
RECEIVE_BUFFER = 64 * 1024
#: The others' p99 (s) while all read past which a run is not judged: the hub did not
#: keep up with the publisher (a quiet machine's is 15-50 ms). A backlog of half a
#: second is the machine's, and grows or shrinks with whatever else runs on it.
KEPT_UP = 0.5
ATTEMPTS = 3
STALLS = 3
PHASES = [Phase("warmup", 1)] + [
    phase
    for n in range(STALLS)
    for phase in (Phase(f"reading{n}", 3), Phase(f"stalled{n}", 3), Phase(f"recover{n}", 1.5))
]

#: p99 latency (s) of one measuring subscriber: while all read, and during the stalls.
Latencies = tuple[float, float]


@dataclass(frozen=True)
class Run:
    """One run on a fresh hub: whether it kept up before the first stall, and then the
    others' latencies (else none: they would tell the machine's backlog)."""

    #: Times the hub's fan-out found deltas trimmed before it read them (in all).
    fell_behind: int
    #: No trimmed delta before the first stall, the others' p99 within KEPT_UP before
    #: it and over the reading windows.
    judged: bool
    latencies: list[Latencies]


@pytest.mark.alone
@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_stalled_subscriber_is_conflated_within_bounds_and_ends_right(
    redis_url: str, key_prefix: str
) -> None:
    # As `flux serve` does once it is up. Here it matters more: the hub shares
    # pytest's heap, and a full collection walking it stalls the hub for 50 ms+.
    freeze_startup_heap()
    try:
        async with _no_aof_rewrite(redis_url):
            runs: list[Run] = []
            for attempt in range(ATTEMPTS):
                run = await _stall_once(redis_url, f"{key_prefix}a{attempt}")
                runs.append(run)
                if run.judged and all(_fair(*mine) for mine in run.latencies):
                    return
            if not any(run.judged for run in runs):
                pytest.skip(
                    f"the others' latency not judged: in each of {ATTEMPTS} runs the hub fell "
                    f"behind its delta log before the first stall or their p99 while all "
                    f"read was over {KEPT_UP} s (the machine did not carry {RATE} events/s; "
                    f"memory, conflation or reset, and the end state were checked): {runs}"
                )
            pytest.fail(f"the others' p99 (reading, stalled) in s, per run: {runs}")
    finally:
        gc.unfreeze()


@contextlib.asynccontextmanager
async def _no_aof_rewrite(redis_url: str) -> AsyncIterator[None]:
    """Hold off Redis's automatic AOF rewrite while measuring, then restore it.

    The suite's Redis grows by ~100 MB per run of this test, so a rewrite starts in
    the middle of it now and then: a child process writing the whole dataset, taking
    a CPU of two for seconds. That is a cost of the machine, not of the hub, and it
    lands in one window or the other at random.
    """
    client = redis.asyncio.from_url(redis_url)
    try:
        setting = await client.config_get("auto-aof-rewrite-percentage")
        before = setting["auto-aof-rewrite-percentage"] or "100"
        await client.config_set("auto-aof-rewrite-percentage", 0)
        try:
            yield
        finally:
            await client.config_set("auto-aof-rewrite-percentage", before)
    finally:
        await client.aclose()


def _fair(reading: float, stalled: float) -> bool:
    return stalled <= reading * 1.2 + 0.002


async def _stall_once(redis_url: str, key_prefix: str) -> Run:
    """One run on a fresh hub: asserts memory and correctness; returns latencies."""
    settings = make_settings(key_prefix, fanout={"conflate_after_bytes": CONFLATE_AFTER})
    async with hub_on_own_store(redis_url, settings) as hub:
        with contextlib.ExitStack() as stack:
            url = f"ws://127.0.0.1:{hub.port}/api/ws"
            base = f"http://127.0.0.1:{hub.port}"
            ctx = multiprocessing.get_context("spawn")
            total = sum(p.seconds for p in PHASES)
            sub_out, sub_in = ctx.Pipe(duplex=False)
            pub_out, pub_in = ctx.Pipe(duplex=False)
            # Ten entities each: a Python client decoding all 10,000 deltas/s would
            # measure its own backlog, not the hub.
            measured = [f"load/{i}" for i in range(10)]
            start_child(stack, ctx, run_subscribers, (url, measured, 2, total + 4, sub_in))
            # Polling: the connections come from another process; the hub has no event.
            while len(hub.gateway.native_sessions) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.05)

            # The slow one, in a process of its own: it subscribes like everyone and
            # reads, except during "stalled", when it stops reading its socket.
            slow_control, slow_end = ctx.Pipe()
            start_child(
                stack, ctx, run_stalled_subscriber, (url, "load/", slow_end, RECEIVE_BUFFER)
            )
            assert await asyncio.to_thread(slow_control.poll, timeout(15)), "slow one not ready"
            assert slow_control.recv() == "ready"
            sessions = [_stalled(hub.gateway.native_sessions)]
            assert sessions[0] is not None

            publisher = start_child(
                stack, ctx, run_publisher, (url, RATE, BATCH, PHASES, ENTITIES, pub_in)
            )
            starts: dict[str, float] = {}
            phase = ""
            kernel_buffer = 0
            behind_before_stall = 0
            max_pending = max_buffered = 0
            done = False
            while not done:
                await asyncio.sleep(0.02)
                # A new connection if the hub closed it (1013) and it resumed.
                session = _stalled(hub.gateway.native_sessions)
                if session is not None and session not in sessions:
                    sessions.append(session)
                if phase.startswith("stalled") and session is not None:
                    max_pending = max(max_pending, len(session.outbox.pending))
                    if session.ws.open:
                        buffered = session.ws.transport.get_write_buffer_size()
                        max_buffered = max(max_buffered, buffered)
                while pub_out.poll():
                    message = pub_out.recv()
                    if message[0] == "phase":
                        phase = message[1]
                        starts[phase] = message[2]
                        if phase == "stalled0":
                            behind_before_stall = hub.fanout.gaps
                        if phase.startswith("stalled"):
                            slow_control.send("stall")
                            if session is not None:
                                kernel_buffer = send_buffer(session, SEND_BUFFER)
                        elif phase.startswith("recover"):
                            slow_control.send("resume")
                            if session is not None and kernel_buffer:
                                send_buffer(session, kernel_buffer // 2)
                    else:
                        done = True
            publisher.join(timeout(10))
            samples = await asyncio.to_thread(sub_out.recv)
            # A hub that fell behind may still be reading its log: the end state is
            # compared once it has dispatched every delta (to the slow one too).
            await _caught_up(hub)
            fell_behind = hub.fanout.gaps

            # Memory stayed bounded while it was stalled.
            assert max_pending <= ENTITIES
            assert max_buffered <= CONFLATE_AFTER + DISPATCH_BATCH_BYTES

            # It reads again, and ends exactly at the state everyone else sees.
            state = await rest_state(base, "load/")
            expected = {i: [v, p] for i, (v, p) in state.items()}
            slow_control.send(("finish", expected))
            assert await asyncio.to_thread(slow_control.poll, timeout(40)), "slow one hung"
            equal, deltas, gaps, resets, closes = slow_control.recv()
            assert gaps == 0, f"the slow subscriber's replica found {gaps} gaps"
            assert equal, "the slow subscriber did not end at the REST state"
            assert deltas > 0

            # Conflated; or, where the hub fell behind its log, told so (docs/protocol.md).
            conflated = sum(s.statistics().conflated for s in sessions if s is not None)
            if fell_behind:
                assert resets or closes, "the hub fell behind its log and did not say so"
            else:
                assert conflated > 0, "the stalled subscriber was never conflated"

            first = (starts["reading0"], starts["stalled0"])
            if behind_before_stall or not all(_kept_up(mine, first) for mine in samples):
                return Run(fell_behind, False, [])
            reading = [(starts[f"reading{n}"], starts[f"stalled{n}"]) for n in range(STALLS)]
            stalled = [(starts[f"stalled{n}"], starts[f"recover{n}"]) for n in range(STALLS)]
            latencies = [(_p99(mine, reading), _p99(mine, stalled)) for mine in samples]
            return Run(fell_behind, all(r <= KEPT_UP for r, _ in latencies), latencies)


async def _caught_up(hub: Hub) -> None:
    """Return once the hub's fan-out has dispatched the newest delta of every partition."""
    partitions = range(hub.store.keys.partitions)
    heads = {p: Position.of(p, (await hub.store.delta_log_head(p)).position) for p in partitions}
    async with asyncio.timeout(timeout(60)):
        await hub.fanout.wait_past(heads)


def _stalled(sessions: set[NativeSession]) -> NativeSession | None:
    """The stalled one's connection (its subscription is named "stalled")."""
    return next((s for s in sessions if "stalled" in s.subscriptions.by_name), None)


def _latencies(
    samples: list[tuple[float, float]], windows: list[tuple[float, float]]
) -> list[float]:
    """The latencies of the samples received in any of ``windows`` (start, end)."""
    return [lat for t, lat in samples if any(a <= t <= b for a, b in windows)]


def _p99(samples: list[tuple[float, float]], windows: list[tuple[float, float]]) -> float:
    """The p99 latency of the samples received in any of ``windows``."""
    latencies = _latencies(samples, windows)
    assert len(latencies) > 1000, f"too few samples in {windows}: {len(latencies)}"
    return statistics.quantiles(latencies, n=100)[98]


def _kept_up(samples: list[tuple[float, float]], window: tuple[float, float]) -> bool:
    """Whether the hub delivered in ``window`` (over 1000 deltas, p99 within KEPT_UP)."""
    latencies = _latencies(samples, [window])
    return len(latencies) > 1000 and statistics.quantiles(latencies, n=100)[98] <= KEPT_UP
