"""Load clients that run in processes of their own (multiprocessing, spawn).

A publisher at a fixed rate, and subscribers measuring publish-to-delivery latency
(each event carries the time it was sent; both sides read the same host clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing.context
import multiprocessing.process
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import msgpack
import websockets


@dataclass(frozen=True)
class Phase:
    """A stretch of publishing whose latencies are measured together."""

    name: str
    seconds: float


def run_publisher(
    url: str, rate: int, batch: int, phases: list[Phase], entities: int, pipe: Connection
) -> None:
    """Publish ``rate`` events/s in frames of ``batch``, phase after phase.

    Sends ``("phase", name, start)`` at each phase start and ``("done", count)``.
    """
    asyncio.run(_publish(url, rate, batch, phases, entities, pipe))


async def _publish(
    url: str, rate: int, batch: int, phases: list[Phase], entities: int, pipe: Connection
) -> None:
    async with websockets.connect(url, subprotocols=["flux.v1.msgpack"]) as ws:  # type: ignore[list-item]
        sent = 0
        acks = asyncio.create_task(_drain_acks(ws))
        for phase in phases:
            start = time.time()
            pipe.send(("phase", phase.name, start))
            frames = int(phase.seconds * rate / batch)
            for n in range(frames):
                due = start + n * batch / rate
                delay = due - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = time.time()
                events = [
                    {
                        "stream": "load",
                        "source": "publisher",
                        "payload": {
                            "entity_id": f"load/{(sent + i) % entities}",
                            "properties": {"t": now, "n": sent + i},
                        },
                    }
                    for i in range(batch)
                ]
                await ws.send(msgpack.packb({"type": "publish", "events": events}))
                sent += batch
        await asyncio.sleep(0.5)
        acks.cancel()
        pipe.send(("done", sent))


async def _drain_acks(ws: Any) -> None:
    async for _ in ws:
        pass


def run_subscribers(url: str, ids: list[str], count: int, seconds: float, pipe: Connection) -> None:
    """Run ``count`` subscribers to the entities ``ids`` for ``seconds``; send back, for
    each, a list of ``(receive time, latency)`` samples."""
    samples = asyncio.run(_subscribe_all(url, ids, count, seconds))
    pipe.send(samples)


async def _subscribe_all(
    url: str, ids: list[str], count: int, seconds: float
) -> list[list[tuple[float, float]]]:
    return list(await asyncio.gather(*(_subscribe(url, ids, seconds) for _ in range(count))))


async def _subscribe(url: str, ids: list[str], seconds: float) -> list[tuple[float, float]]:
    samples: list[tuple[float, float]] = []
    async with websockets.connect(url, subprotocols=["flux.v1"], max_queue=None) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps(
                {
                    "type": "subscribe",
                    "sub": "fast",
                    "filter": {"ids": ids},
                    "properties": ["t"],
                }
            )
        )
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                data = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            frame = json.loads(data)
            if frame.get("type") == "delta" and "t" in frame["set"]:
                now = time.time()
                samples.append((now, now - frame["set"]["t"]))
    return samples


async def subscribe_with_snapshot(ws: Any, sub: str, prefix: str, replica: Any) -> None:
    """Subscribe to ``prefix`` with a snapshot (JSON frames); ``replica`` applies every
    frame up to ``synced``."""
    frame = {"type": "subscribe", "sub": sub, "filter": {"prefixes": [prefix]}, "snapshot": True}
    await ws.send(json.dumps(frame))
    while True:
        reply = json.loads(await ws.recv())
        replica.apply(reply)
        if reply["type"] == "synced":
            return


async def discard(ws: Any) -> None:
    """Read and drop every frame until the connection closes."""
    with contextlib.suppress(websockets.ConnectionClosed):
        async for _ in ws:
            pass


def replica_state(replica: Any, prefix: str) -> dict[str, Any]:
    """A replica's entities under ``prefix``, shaped as the REST state is compared."""
    return {i: [v, p] for i, (v, p) in replica.state().items() if i.startswith(prefix)}


def start_child(
    stack: contextlib.ExitStack,
    ctx: multiprocessing.context.SpawnContext,
    target: Callable[..., None],
    args: tuple[Any, ...],
) -> multiprocessing.process.BaseProcess:
    """Start a load process that is killed when the run ends, however it ends (a
    failed assertion must not leave it running, or hang the interpreter's exit)."""
    process = ctx.Process(target=target, args=args, daemon=True)
    process.start()
    stack.callback(_stop, process)
    return process


def _stop(process: multiprocessing.process.BaseProcess) -> None:
    if process.is_alive():
        process.kill()
    process.join(5)
