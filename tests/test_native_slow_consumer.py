"""A subscriber that stops reading must not cost memory or anyone else's latency.

One subscriber reads nothing for 5 s while 50,000 deltas (10,000 events/s over 50
entities) flow — three times, with 4 s of normal reading before each stall. Meanwhile
two other subscribers, in a process of their own, measure publish-to-delivery latency
on ten of the entities (so that they keep up, and what they measure is the hub); the
publisher runs in a third process. The test checks:

- memory: the slow connection's unsent bytes stay under the conflation threshold plus
  one dispatch batch, and it holds at most one merged delta per entity (50);
- fairness: the others' p99 latency over the three stalls is within 20 % of their p99
  over the three stretches of normal reading (plus 2 ms, below which a 2-vCPU VM's
  scheduler noise dominates). The 2 s after each stall, while the slow one catches
  up, count for neither;
- correctness: once it reads again, it ends exactly at the REST state, every delta
  checked for gaps by its replica (conflated deltas included).

Why three stalls, pooled, and up to three runs: the p99 of one 4-5 s window is set by
whether the machine happened to stall for a few tens of ms in it. On 2 vCPUs the
noise comes in episodes: whole minutes where every window's p99 is 10 ms, others where
it swings between 20 and 200 ms with no stalled client at all. Pooling the three
stretches of each kind compares like with like, in time; even so about one run in five
fails by chance in a noisy episode, so a fresh hub gets up to ``ATTEMPTS`` runs and one
within bounds passes. A hub that does make the others pay fails every run: with 20-50
µs of blocking per conflated delta, the others' p99 went from 15-50 ms to about 1 s.
Redis's automatic AOF rewrite is held off meanwhile (see :func:`_no_aof_rewrite`).
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

import pytest
import redis.asyncio

from hub.engine.heap import freeze_startup_heap
from hub.transport.native_ws import NativeSession

from .conftest import hub_on_own_store, make_settings, timeout
from .load_clients import Phase, run_publisher, run_slow_consumer, run_subscribers, start_child
from .native_client import rest_state

RATE = 10_000
BATCH = 100
ENTITIES = 50
CONFLATE_AFTER = 64 * 1024
#: The most one dispatch can add past the threshold: read_count deltas of ~200 bytes.
DISPATCH_BATCH_BYTES = 1000 * 256
ATTEMPTS = 3
STALLS = 3
PHASES = [Phase("warmup", 1.5)] + [
    phase
    for n in range(STALLS)
    for phase in (Phase(f"reading{n}", 4), Phase(f"stalled{n}", 5), Phase(f"recover{n}", 2))
]

#: p99 latency (s) of one measuring subscriber: while all read, and during the stalls.
Latencies = tuple[float, float]


@pytest.mark.slow
async def test_stalled_subscriber_is_conflated_within_bounds_and_ends_right(
    redis_url: str, key_prefix: str
) -> None:
    # As `flux serve` does once it is up. Here it matters more: the hub shares
    # pytest's heap, and a full collection walking it stalls the hub for 50 ms+.
    freeze_startup_heap()
    try:
        async with _no_aof_rewrite(redis_url):
            runs: list[list[Latencies]] = []
            for attempt in range(ATTEMPTS):
                runs.append(await _stall_once(redis_url, f"{key_prefix}a{attempt}"))
                if all(_fair(*latencies) for latencies in runs[-1]):
                    return
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


async def _stall_once(redis_url: str, key_prefix: str) -> list[Latencies]:
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
            start_child(stack, ctx, run_slow_consumer, (url, "load/", slow_end))
            assert await asyncio.to_thread(slow_control.poll, timeout(15)), "slow one not ready"
            assert slow_control.recv() == "ready"
            session = next(
                s for s in hub.gateway.native_sessions if "slow" in s.subscriptions.by_name
            )
            assert isinstance(session, NativeSession)

            publisher = start_child(
                stack, ctx, run_publisher, (url, RATE, BATCH, PHASES, ENTITIES, pub_in)
            )
            starts: dict[str, float] = {}
            phase = ""
            max_pending = max_buffered = 0
            done = False
            while not done:
                await asyncio.sleep(0.02)
                if phase.startswith("stalled"):
                    max_pending = max(max_pending, len(session.outbox.pending))
                    if session.ws.open:
                        buffered = session.ws.transport.get_write_buffer_size()
                        max_buffered = max(max_buffered, buffered)
                while pub_out.poll():
                    message = pub_out.recv()
                    if message[0] == "phase":
                        phase = message[1]
                        starts[phase] = message[2]
                        if phase.startswith("stalled"):
                            slow_control.send("stall")
                        elif phase.startswith("recover"):
                            slow_control.send("resume")
                    else:
                        done = True
            publisher.join(timeout(10))
            samples = await asyncio.to_thread(sub_out.recv)

            # Memory stayed bounded while it was stalled.
            assert session.statistics().conflated > 0, "the stalled subscriber was never conflated"
            assert max_pending <= ENTITIES
            assert max_buffered <= CONFLATE_AFTER + DISPATCH_BATCH_BYTES

            # It reads again, and ends exactly at the state everyone else sees.
            state = await rest_state(base, "load/")
            expected = {i: [v, p] for i, (v, p) in state.items()}
            slow_control.send(("finish", expected))
            assert await asyncio.to_thread(slow_control.poll, timeout(40)), "slow one hung"
            equal, deltas = slow_control.recv()
            assert equal, "the slow subscriber did not end at the REST state"
            assert deltas > 0

            reading = [(starts[f"reading{n}"], starts[f"stalled{n}"]) for n in range(STALLS)]
            stalled = [(starts[f"stalled{n}"], starts[f"recover{n}"]) for n in range(STALLS)]
            return [(_p99(mine, reading), _p99(mine, stalled)) for mine in samples]


def _p99(samples: list[tuple[float, float]], windows: list[tuple[float, float]]) -> float:
    """The p99 latency of the samples received in any of ``windows`` (start, end)."""
    latencies = sorted(lat for t, lat in samples if any(a <= t <= b for a, b in windows))
    assert len(latencies) > 1000, f"too few samples in {windows}: {len(latencies)}"
    return statistics.quantiles(latencies, n=100)[98]
